# Ringfence: the two commands a newcomer needs are `make run` and `make test`.
# Benchmarks (not tests): `make bench` (the engine), `make bench-propagation` (two
# replicas), `make bench-http` (decisions over HTTP, gunicorn and granian, driven by wrk);
# `make chaos` (faults under load, judged by the revision oracle; not in `make test`).
PYTHON ?= python3
# Python writes its bytecode caches, whatever the environment says: with
# PYTHONDONTWRITEBYTECODE set (as on this machine), every process the tests start (the
# gateway's replicas, Celery workers) compiled the gateway from source again, and pytest
# re-did its assertion rewriting in each worker.
unexport PYTHONDONTWRITEBYTECODE
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet -e "./clients/python[flask,fastapi,django]"
	touch $@

# axe-core for the browser tests' accessibility checks, from the npm registry's package
# at install (tests/browser/package-lock.json), never from a CDN at run time.
AXE := tests/browser/node_modules/axe-core/axe.min.js
$(AXE): tests/browser/package.json tests/browser/package-lock.json
	npm ci --prefix tests/browser --no-audit --no-fund --silent
	touch $@

## Set up and run the gateway on its embedded default (SQLite, eager Celery, mail to
## instance/outbox): migrate, apply policies/, create the first super admin, serve.
run: $(VENV)/.installed
	$(BIN)/ringfence init
	$(BIN)/ringfence serve

## Set up and run every check: lint, types, and the whole test suite, spread over
## TEST_WORKERS processes (pytest-xdist); prints the wall time it took. One test:
## `.venv/bin/pytest tests/unit/test_engine.py -k name` (see CONTRIBUTING.md).
## The type check (mypy, ~12 s on a fresh clone) runs beside the tests, its report
## printed after theirs; either failing fails the target. Lint runs first: it is quick.
TEST_WORKERS ?= 4
PYTEST_ARGS ?=
# The tests' temporary folders (each SQLite test's database among them) in memory where
# the machine has a tmpfs at /dev/shm: SQLite fsyncs every commit, 4 ms on this disk,
# and the SQLite half of the suite commits tens of thousands of times. pytest's own
# numbering and clean-up apply there (PYTEST_DEBUG_TEMPROOT); only failed tests' folders
# are kept (tmp_path_retention_policy).
TEST_TEMPROOT ?= $(shell [ -d /dev/shm ] && [ -w /dev/shm ] && echo /dev/shm)
test: $(VENV)/.installed $(AXE)
	@start=$$(date +%s); status=0; types=$$(mktemp); \
	$(MAKE) --no-print-directory lint || status=$$?; \
	if [ $$status -eq 0 ]; then \
	  $(BIN)/mypy > $$types 2>&1 & types_pid=$$!; \
	  PYTEST_DEBUG_TEMPROOT=$(TEST_TEMPROOT) \
	    $(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS) || status=$$?; \
	  wait $$types_pid || status=1; \
	  echo "$(BIN)/mypy (beside the tests):"; cat $$types; \
	fi; \
	rm -f $$types; \
	echo "make test: $$(( $$(date +%s) - start )) s wall time (lint, types and every test)"; \
	exit $$status

## The suite with the property tests searching ten times harder (hypothesis profile
## "thorough"); not part of make test.
.PHONY: test-thorough
test-thorough: $(VENV)/.installed
	RINGFENCE_HYPOTHESIS_PROFILE=thorough PYTEST_DEBUG_TEMPROOT=$(TEST_TEMPROOT) $(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(VENV)/.installed
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(PEERS_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

## Propagation across two replicas (PostgreSQL + Redis): commit on A -> changed answer on B.
.PHONY: bench-propagation
bench-propagation: $(VENV)/.installed
	$(BIN)/python bench/propagation.py
## Benchmark the decision engine (not a test): data at 10k/100k/1M users copied into
## PostgreSQL (RINGFENCE_BENCH_DATABASE_URL), latency beside a dict lookup and pycasbin,
## load time, memory, changes, concurrency, and (first) `make bench-http`, whose table it
## includes; writes bench/results.md. Quick: SIZES=10k
## Start-up again on kept data: BENCH_ARGS="--reuse --keep --startup-only --repeat 5"
## Peers on the same decisions: pycasbin FastEnforcer and cedarpy (extra `bench`) in the
## project's virtualenv; oso in one of its own, $(PEERS_VENV) (oso pins cffi~=1.15, the
## project's cryptography needs cffi 2). A peer that does not install is reported "not run".
SIZES ?= 10k,100k,1M
BENCH_ARGS ?=
PEERS_VENV ?= .venv-peers
$(VENV)/.bench-installed: pyproject.toml | $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	touch $@
$(PEERS_VENV)/.installed:
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install --quiet "oso>=0.27,<0.28" || echo "oso did not install: the benchmark reports it not run"
	touch $@
.PHONY: bench
bench: $(VENV)/.installed $(VENV)/.bench-installed $(PEERS_VENV)/.installed bench-http bench-sdk bench-scim bench-streams
	$(BIN)/python -m bench.run --sizes $(SIZES) $(BENCH_ARGS)
## The SDK (issue 21, not a test): a local replica's checks beside a dict lookup and the
## gateway's engine (100k and 1M users), its memory, the SDK against a raw httpx client
## over loopback (one check, batches of 100), an admin change reaching a local replica;
## writes bench/sdk_results.md (make bench adds it to bench/results.md).
## Quick: SDK_BENCH_ARGS="--sizes 10k --checks 300 --changes 10"
SDK_BENCH_ARGS ?=
.PHONY: bench-sdk
bench-sdk: $(VENV)/.installed
	$(BIN)/python -m bench.sdk $(SDK_BENCH_ARGS)
## Event streams (issue 24, not a test): events a second delivered to one HTTPS webhook
## receiver, and what 10 active streams add to an admin change (p50, p99); writes
## bench/streams_results.md. On PostgreSQL: STREAMS_BENCH_ARGS="--url postgresql://..."
STREAMS_BENCH_ARGS ?=
.PHONY: bench-streams
bench-streams: $(VENV)/.installed
	$(BIN)/python -m bench.streams $(STREAMS_BENCH_ARGS)
## Decisions over HTTP (not a test): 10k users in PostgreSQL, gunicorn with
## deploy/gunicorn.conf.py and granian (WSGI) on loopback, each beside a raw-WSGI floor;
## wrk against /healthz, /v1/check and batches of 100 AuthZEN evaluations; writes
## bench/http_results.md and .json. Needs wrk (Debian's).
HTTP_BENCH_ARGS ?=
.PHONY: bench-http
bench-http: $(VENV)/.installed $(VENV)/.bench-installed
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench.http $(HTTP_BENCH_ARGS)
## SCIM provisioning (issue 18, not a test): a directory pushes 1,000 users and 20 groups
## over HTTP, then deactivates 100 people; users/s, and the time from each deactivation's
## answer to the first deny on /v1/check (the pushes from 4 clients: the median of 3
## rounds). The gateway in process, then as deployed
## (ringfence serve --workers 2; --workers 0 skips it). PostgreSQL at
## RINGFENCE_BENCH_DATABASE_URL (else SQLite); writes bench/scim_results.md.
## Quick: SCIM_BENCH_ARGS="--users 200"
SCIM_BENCH_ARGS ?=
.PHONY: bench-scim
bench-scim: $(VENV)/.installed
	$(BIN)/python -m bench.scim $(if $(RINGFENCE_BENCH_DATABASE_URL),--url $(RINGFENCE_BENCH_DATABASE_URL)) $(SCIM_BENCH_ARGS)
## Faults under load (not a test, not in `make test`): two replicas on PostgreSQL through
## pausable proxies, Redis, a mail worker and an SMTP sink; database paused and cut, Redis
## frozen and killed, the worker killed mid-send, the broker frozen during invitations,
## 30 s each, with checks, role changes and invitations all along. Prints a table per
## fault and issue 25's goals (met or not); writes bench/chaos_results.md.
## Quick, for development: CHAOS_ARGS="--fault-seconds 5" CHAOS_OUT=/tmp/chaos.md (so that
## the kept full-length table stays).
CHAOS_ARGS ?=
CHAOS_OUT ?= bench/chaos_results.md
.PHONY: chaos
chaos: $(VENV)/.installed
	@command -v redis-server >/dev/null || (echo "make chaos needs redis-server" && exit 1)
	$(BIN)/python -m bench.chaos --out $(CHAOS_OUT) $(CHAOS_ARGS)
