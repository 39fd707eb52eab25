"""Test doubles shipped with the package: fake LLM providers speaking their wire formats."""
