# Two commands on a fresh machine with Python 3.11 and make:
#   make demo   set up, seed the embedded warehouse, run the whole pipeline
#   make test   set up and run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The repository root is the Dagster instance home: dagster.yaml lives here and
# everything the instance writes goes under .dagster/ (git-ignored).
export DAGSTER_HOME := $(CURDIR)

.PHONY: setup spark browser policy mlflow-server demo test test-fast ui serve instance lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is required, found {sys.version.split()[0]}"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The Spark engine's tests (test_spark.py): the spark extra in the same virtualenv and Java 17 for a local driver.
# Neither is needed by `make demo` or the default engine.
SPARK_STAMP := $(VENV)/.spark-stamp
spark: $(SPARK_STAMP)
$(SPARK_STAMP): $(STAMP)
	@command -v java >/dev/null || { \
		echo "installing Java 17 (openjdk-17-jre-headless) for Spark's local driver"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless; }
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	touch $(SPARK_STAMP)

instance: setup
	@mkdir -p .dagster
	@$(BIN)/dagster instance concurrency set gpu 1 >/dev/null
	@$(BIN)/dagster instance concurrency set feast_online 1 >/dev/null

demo: instance
	$(BIN)/churn demo

# The Kubernetes policy scanner (test_policy.py) in a virtualenv of its own: checkov pins versions of
# packaging, urllib3 and networkx that this project's dependencies do not accept.
CHECKOV_STAMP := .venv-checkov/.installed-stamp
policy: $(CHECKOV_STAMP)
$(CHECKOV_STAMP):
	test -x .venv-checkov/bin/python || $(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install --quiet "checkov>=3.2.400,<4"
	touch $(CHECKOV_STAMP)

# A real MLflow tracking server for test_mlflow.py, in a virtualenv of its own: the server (full mlflow) pins pyarrow,
# cryptography and others below this project's versions; the project itself needs only the client (the mlflow extra).
MLFLOW_STAMP := .venv-mlflow/.installed-stamp
mlflow-server: $(MLFLOW_STAMP)
$(MLFLOW_STAMP):
	test -x .venv-mlflow/bin/python || $(PYTHON) -m venv .venv-mlflow
	.venv-mlflow/bin/python -m pip install --quiet "mlflow==3.17.2"
	touch $(MLFLOW_STAMP)

# The UI tests drive a real headless Chromium: Debian's chromium + chromium-driver, installed when missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		echo "installing chromium and chromium-driver for the UI tests"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

test: setup spark browser policy mlflow-server
	$(BIN)/python -m pytest -n 2 --dist loadgroup

test-fast: setup spark
	$(BIN)/python -m pytest -n 2 --dist loadgroup -m "not slow"

ui: instance
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# The online scoring service on 127.0.0.1:8000 (champion model + Feast online store; run `make demo` first).
serve: setup
	$(BIN)/uvicorn --factory ml_assets.service.app:create_app --host 127.0.0.1 --port 8000 --log-level info --no-access-log

bench: setup spark
	$(BIN)/python -m benchmarks.run_all

lint: setup
	$(BIN)/ruff check lib ml_assets ml_assets_tests resources sensors benchmarks feature_repo
	$(BIN)/ruff format --check lib ml_assets ml_assets_tests resources sensors benchmarks feature_repo
	$(BIN)/mypy

clean:
	rm -rf .data .dagster
