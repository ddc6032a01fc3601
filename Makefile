# Two entry points: `make demo` (the main job) and `make test` (the suite CI runs). Both set themselves up.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
TEST_WORKERS ?= auto

.PHONY: setup demo test lint bench clean

$(BIN)/divdistill: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# A pinned torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e ".[test]"
	touch $(BIN)/divdistill

setup: $(BIN)/divdistill

demo: setup
	$(BIN)/divdistill demo --out demo-output

test: setup
	$(BIN)/ruff check src tests benchmarks
	# one torch thread per worker, one worker per core (pytest-xdist): the suite's tests are small and single-threaded
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) tests

bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/cpu_overhead.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
