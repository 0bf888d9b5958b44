# The two commands: `make run` (the whole app locally) and `make test` (the test suite).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test install install-test browser

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e ".[prod]"

install-test: $(BIN)/python
	$(BIN)/pip install -q -e ".[test]"

# Debian's chromium for the browser tests (Playwright drives it through executable_path; no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: browser tests will be skipped"; }

run: install
	$(BIN)/python -m shopify_app.runner

test: install-test browser
	$(BIN)/python -m pytest -q -p no:cacheprovider
