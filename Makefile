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

.PHONY: setup demo test test-fast lint eval bench clean prometheus-tools

setup: $(VENV)/.installed prometheus-tools

# prometheus + promtool (Debian package) for tests/test_prometheus.py and test_ops_config.py:
# installed with apt-get when missing and we are root; otherwise those tests skip.
prometheus-tools:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing prometheus (apt-get)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; } >/dev/null \
	    || echo "warning: apt-get could not install prometheus; its tests will skip"; \
	else \
	  echo "note: prometheus/promtool missing (needs root + apt-get); their tests will skip"; \
	fi

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11) on PATH"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip wheel
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip check
	touch $@

demo: setup
	$(VENV)/bin/facerec demo

test: setup lint
	$(VENV)/bin/pytest

test-fast: setup
	$(VENV)/bin/pytest -m "not flink and not integration"

# lint and type checks run before every test run (CI included)
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

eval: setup
	$(VENV)/bin/facerec eval $(FACEREC_FACES_DIR)/celebrity5 --lfw $(FACEREC_FACES_DIR)/lfw --out reports/eval

bench: setup
	$(PY) bench/face_engine.py --out reports/bench_face_engine.json

clean:
	rm -rf $(VENV) data reports .pytest_cache .mypy_cache .ruff_cache
