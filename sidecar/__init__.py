"""pii-sidecar: a proxy that removes PII from LLM requests and restores it in responses."""

__version__ = "0.1.0"
