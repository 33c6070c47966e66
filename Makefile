# facerec: two commands on a fresh machine.
#   make demo   sets everything up and runs the recognition job on its embedded default
#   make test   sets everything up and runs the test suite (what CI runs)
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED ?= $(abspath ../shared)
export FACEREC_FACES_DIR ?= $(SHARED)/faces
export FACEREC_VIDEOS_DIR ?= $(SHARED)/videos
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup demo test test-fast lint eval bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11) on PATH"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip wheel
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip check
	touch $@

demo: setup
	$(VENV)/bin/facerec demo

test: setup
	$(VENV)/bin/pytest

test-fast: setup
	$(VENV)/bin/pytest -m "not flink and not integration"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy udfs facerec index_builder api jobs

eval: setup
	$(VENV)/bin/facerec eval $(FACEREC_FACES_DIR)/celebrity5 --lfw $(FACEREC_FACES_DIR)/lfw --out reports/eval

bench: setup
	$(PY) bench/face_engine.py --out reports/bench_face_engine.json

clean:
	rm -rf $(VENV) data reports .pytest_cache .mypy_cache .ruff_cache
