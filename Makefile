# Everything a newcomer needs: `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export LITELLM_LOCAL_MODEL_COST_MAP := True
export GRADIO_ANALYTICS_ENABLED := False
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install test lint bench run clean browser lock docker-engine services sandboxes sandbox-image

# Every machine installs exactly the versions in requirements.lock, checked against their hashes;
# only `make lock` changes them, on purpose.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

install: $(STAMP)

# Re-resolve every dependency to the newest versions pyproject.toml allows, with their hashes.
# uv is only needed here (pinned); the install above uses pip alone. requirements.lock is the
# development set (everything); the images install the app's and the worker's subsets, which
# start from its versions, so all three agree.
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml - --generate-hashes --universal --python-version 3.11 \
	--custom-compile-command "make lock" --quiet
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet 'uv==0.13.9'
	printf 'setuptools>=68\n' | $(UV_COMPILE) --extra app --extra postgres --extra test -o requirements.lock
	cp requirements.lock requirements-app.lock && cp requirements.lock requirements-worker.lock
	printf 'setuptools>=68\n' | $(UV_COMPILE) --extra app --extra postgres -o requirements-app.lock
	printf 'setuptools>=68\n' | $(UV_COMPILE) --extra postgres -o requirements-worker.lock
	rm -f $(STAMP)

# The browser tests drive Debian's Chromium (Playwright cannot download browsers offline).
browser:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

# Where code nodes run without Docker: bubblewrap, and gVisor's runsc (both from Debian).
sandboxes:
	@command -v bwrap >/dev/null 2>&1 && command -v runsc >/dev/null 2>&1 && command -v pgrep >/dev/null 2>&1 \
		&& command -v prlimit >/dev/null 2>&1 || { $(SUDO) apt-get update -qq \
		&& $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bubblewrap runsc procps util-linux; }

# The Docker sandbox's image, built locally from the base image (docs/sandbox.md).
sandbox-image: $(STAMP) docker-engine
	$(BIN)/agentflow sandbox build

# A Docker engine, Compose 1.29 and the base image local/bookworm-slim, without a registry (tests/docker).
docker-engine:
	bash scripts/docker-engine.sh

# PostgreSQL on 127.0.0.1:5432 (the scale-out store and queue); started when it is down.
services:
	@pg_isready -q -h 127.0.0.1 -p 5432 || { $(SUDO) pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start \
		&& for i in $$(seq 1 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done; }
	@pg_isready -h 127.0.0.1 -p 5432

# Everything on the embedded SQLite store (plus the Postgres-only tests and the images), then the
# integration suite again with every AgentFlow process of a test on Postgres.
# Every sandbox backend must work here: their contract and escape tests fail rather than skip.
test: $(STAMP) browser services docker-engine sandboxes sandbox-image
	AGENTFLOW_TEST_REQUIRE_SANDBOXES=bwrap,gvisor,docker $(BIN)/python -m pytest -q
	AGENTFLOW_TEST_STORE=postgres $(BIN)/python -m pytest -q tests/integration \
		--ignore=tests/integration/test_workers.py

lint: $(STAMP)
	$(BIN)/ruff check agentflow tests benchmarks
	$(BIN)/ruff format --check agentflow tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m benchmarks

run: $(STAMP)
	$(BIN)/python app.py

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
