# The two set-up commands of the README. Both create .venv from the hash-locked
# requirements through scripts/install.sh, the same script the Dockerfile runs.
VENV ?= .venv
ARGS ?=
PYTEST_ARGS ?=

.PHONY: serve test lint

serve:
	scripts/install.sh $(VENV)
	$(VENV)/bin/pii-sidecar serve $(ARGS)

test:
	scripts/install.sh --test $(VENV)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint:
	$(VENV)/bin/ruff check sidecar tests bench
	$(VENV)/bin/ruff format --check sidecar
	$(VENV)/bin/mypy
