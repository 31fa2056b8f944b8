# llmcls: `make demo` sets up a virtual environment and runs the main job on the bundled sample;
# `make test` sets up the same way plus the dev tools and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUNS ?= runs/demo
# torch is pinned first so that pip takes the local CPU build (2.13.0) here; the package's own range admits it.
TORCH ?= torch==2.13.0

.PHONY: setup setup-dev demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

setup: $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e .

setup-dev: setup
	$(BIN)/pip install --quiet -e ".[dev]"

demo: setup
	$(BIN)/llmcls data list
	$(BIN)/llmcls data stats aapd-train --plot $(RUNS)/aapd-train-stats.png
	$(BIN)/llmcls train-linear --train aapd-train --validation aapd-validation --test aapd-test \
		--output_dir $(RUNS)/linear-svm
	$(BIN)/llmcls train-linear --train aapd-train --validation aapd-validation --test aapd-test \
		--classifier logreg --c 4.0,16.0,64.0 --output_dir $(RUNS)/linear-logreg
	$(BIN)/llmcls compare $(RUNS) --out $(RUNS)/comparison

test: setup-dev
	$(BIN)/ruff check llmcls tests benchmarks
	$(BIN)/python -m pytest -q -n 2

lint: setup-dev
	$(BIN)/ruff check llmcls tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
