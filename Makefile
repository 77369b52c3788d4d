# ModelDeck: `make run` starts everything locally, `make test` runs every test.
# Both install what they need (virtualenv, npm packages, Debian packages).

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
NODE_STAMP := node_modules/.installed-$(shell cat package-lock.json | sha256sum | cut -c1-12)

.PHONY: run test lint bench setup system-deps browser-deps bench-deps clean fmt load smoke-aws

setup: $(STAMP) $(NODE_STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch==2.13.0 is pinned: that CPU build installs offline in seconds here.
	$(PY) -m pip install --quiet -e '.[dashboard,inference,devstack,dev]'
	@rm -f $(VENV)/.installed-* && touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@rm -f node_modules/.installed-* && touch $@

# Redis is only needed when none answers at REDIS_URL; install it if missing.
# bubblewrap isolates model files during validation (docs/security.md);
# libseccomp2 compiles its seccomp filters; util-linux gives setpriv and prlimit.
system-deps:
	@command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	@command -v bwrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; }
	@{ ldconfig -p | grep -q libseccomp.so.2 && command -v setpriv >/dev/null && command -v prlimit >/dev/null; } || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libseccomp2 util-linux >/dev/null; }

# Debian's chromium: Playwright's own browser download does not work here.
browser-deps:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

run: setup system-deps
	$(PY) -m devstack up

# Traffic for a running `make run` (another terminal): the charts move within seconds.
load: setup
	$(PY) -m devstack.load $(LOAD_ARGS)

test: setup system-deps browser-deps
	@eval "$$($(PY) -m tests.services)" && $(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy dashboard inference devstack tools
	$(VENV)/bin/cfn-lint infra/*.yaml
	$(VENV)/bin/hadolint Dockerfile.dashboard Dockerfile.inference
	$(VENV)/bin/actionlint

# Checks a deployed account with the caller's AWS credentials (read-only unless
# SMOKE_ARGS asks otherwise); see docs/deploy-aws.md. E.g.
#   make smoke-aws SMOKE_ARGS="--stack modeldeck --environment-stack modeldeck-iris-staging"
smoke-aws: setup
	$(PY) -m tools.smoke_aws $(SMOKE_ARGS)

fmt: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# wrk is the load generator the inference benchmark prefers (it falls back to its own).
bench-deps:
	@command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; } || true

bench: setup system-deps browser-deps bench-deps
	$(PY) -m bench

clean:
	rm -rf $(VENV) node_modules .devstack .pytest_cache .mypy_cache .ruff_cache
