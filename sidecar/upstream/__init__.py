"""The HTTP client to LLM providers: retries, failover, circuit breakers and credentials."""
