# Quickstart: `make demo` trains and runs the whole cascade on the built-in data; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export PYTHONWARNINGS := ignore::FutureWarning

.PHONY: demo smoke test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python -m flows.demo --preset demo

smoke: $(VENV)/.installed
	$(BIN)/python -m flows.demo --preset smoke

test: $(VENV)/.installed
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .

clean:
	rm -rf runs outputs mlruns .prefect
