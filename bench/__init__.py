"""The benchmark harness: a fake provider, the sidecar and a load generator on 127.0.0.1.

Run it from the repository root with `.venv/bin/python -m bench`; see docs/benchmarks.md.
"""
