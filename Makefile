# Quickstart: `make demo` trains and runs the whole cascade on the built-in emoji data; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export PYTHONWARNINGS := ignore::FutureWarning

.PHONY: demo demo-shapes smoke test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python -m flows.demo --preset demo

# The controlled benchmark, with its own models, registry and outputs beside the emoji demo's.
demo-shapes: $(VENV)/.installed
	UNCLIP_MLFLOW_DIR=mlruns-shapes $(BIN)/python -m flows.demo --preset demo --data shapes --workdir runs-shapes \
		--out outputs-shapes

smoke: $(VENV)/.installed
	$(BIN)/python -m flows.demo --preset smoke

test: $(VENV)/.installed
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .

clean:
	rm -rf runs outputs mlruns runs-shapes outputs-shapes mlruns-shapes .prefect
