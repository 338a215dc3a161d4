# The two commands: `make up` runs the system on embedded defaults; `make test` runs the test suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: up test lint bench setup setup-test clean-data

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

setup: $(BIN)/python
	scripts/install-system-packages run
	$(BIN)/pip install -q -e .

setup-test: $(BIN)/python
	scripts/install-system-packages test
	$(BIN)/pip install -q -e '.[test]'

up: setup
	$(BIN)/rongmei up

test: setup-test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: setup-test
	$(BIN)/ruff check .

bench: setup-test
	$(BIN)/python bench/ingest.py

clean-data:
	rm -rf var
