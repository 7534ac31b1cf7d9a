# Ringfence: the two commands a newcomer needs are `make run` and `make test`.
# Benchmarks (not tests): `make bench` (the engine), `make bench-propagation` (two
# replicas), `make bench-http` (decisions over HTTP through gunicorn, driven by wrk).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

## Set up and run the gateway on its embedded default (SQLite, eager Celery, mail to
## instance/outbox): migrate, apply policies/, create the first super admin, serve.
run: $(VENV)/.installed
	$(BIN)/ringfence init
	$(BIN)/ringfence serve

## Set up and run every check: lint, types, and the whole test suite.
test: $(VENV)/.installed lint typecheck
	$(BIN)/pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

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
bench: $(VENV)/.installed $(VENV)/.bench-installed $(PEERS_VENV)/.installed bench-http
	$(BIN)/python -m bench.run --sizes $(SIZES) $(BENCH_ARGS)
## Decisions over HTTP (not a test): 10k users in PostgreSQL, gunicorn with
## deploy/gunicorn.conf.py on loopback, wrk against /healthz, /v1/check and batches of
## 100 AuthZEN evaluations; writes bench/http_results.md and .json. Needs wrk (Debian's).
HTTP_BENCH_ARGS ?=
.PHONY: bench-http
bench-http: $(VENV)/.installed
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench.http $(HTTP_BENCH_ARGS)
