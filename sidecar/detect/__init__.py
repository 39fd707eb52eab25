"""PII detection: Presidio analysis of request texts into `Finding` spans."""
