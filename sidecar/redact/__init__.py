"""Redaction: policy decisions over findings, the placeholder vault, and restoration."""
