#!/usr/bin/env bash
# A local two-replica Ringfence cluster on this machine, against the local PostgreSQL
# and Redis: two replicas (`ringfence serve`, granian) sharing one database, with
# change notices on Redis.
#
#   deploy/local-cluster.sh start    # init the database, start replicas on :8001 and :8002
#   deploy/local-cluster.sh status   # each replica's /readyz
#   deploy/local-cluster.sh stop
#
# Settings (environment, defaults in brackets):
#   RINGFENCE_DATABASE_URL   [postgresql+psycopg://postgres@127.0.0.1:5432/ringfence_local]
#                            (the database is created if missing)
#   RINGFENCE_WATCHER_URL    [redis://127.0.0.1:6379/1]; a private redis-server is started
#                            on port 6390 when nothing answers on the URL's port
#   RINGFENCE_SECRET_KEY     [generated once into $CLUSTER_DIR/secret_key]
#   CLUSTER_DIR              [instance/cluster]: logs, pid files
#   PORTS                    ["8001 8002"]: one replica per port
# Every other RINGFENCE_* variable is passed to the replicas as it is.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-.venv/bin/python}"
CLUSTER_DIR="${CLUSTER_DIR:-instance/cluster}"
PORTS="${PORTS:-8001 8002}"
export RINGFENCE_DATABASE_URL="${RINGFENCE_DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/ringfence_local}"
export RINGFENCE_WATCHER_URL="${RINGFENCE_WATCHER_URL:-redis://127.0.0.1:6379/1}"
export RINGFENCE_INSTANCE_DIR="${RINGFENCE_INSTANCE_DIR:-$CLUSTER_DIR/instance}"
mkdir -p "$CLUSTER_DIR"
CLUSTER_DIR="$(cd "$CLUSTER_DIR" && pwd)"

redis_answers() {
  "$PYTHON" - "$1" <<'PY'
import sys, redis
try:
    sys.exit(0 if redis.Redis.from_url(sys.argv[1], socket_timeout=1).ping() else 1)
except redis.RedisError:
    sys.exit(1)
PY
}

ensure_database() {
  "$PYTHON" - <<'PY'
import os
from sqlalchemy import create_engine, make_url, text
url = make_url(os.environ["RINGFENCE_DATABASE_URL"])
server = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
with server.connect() as c:
    if not c.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": url.database}):
        c.execute(text(f'CREATE DATABASE "{url.database}"'))
        print(f"created database {url.database}")
server.dispose()
PY
}

start() {
  if [ -z "${RINGFENCE_SECRET_KEY:-}" ]; then
    [ -f "$CLUSTER_DIR/secret_key" ] || "$PYTHON" -c "import secrets; print(secrets.token_urlsafe(48))" > "$CLUSTER_DIR/secret_key"
    RINGFENCE_SECRET_KEY="$(cat "$CLUSTER_DIR/secret_key")"
    export RINGFENCE_SECRET_KEY
  fi
  if ! redis_answers "$RINGFENCE_WATCHER_URL"; then
    command -v redis-server >/dev/null || { echo "no Redis at $RINGFENCE_WATCHER_URL and no redis-server" >&2; exit 1; }
    redis-server --port 6390 --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
      --pidfile "$CLUSTER_DIR/redis.pid" --logfile "$CLUSTER_DIR/redis.log"
    export RINGFENCE_WATCHER_URL="redis://127.0.0.1:6390/1"
    echo "started a private redis-server on :6390"
  fi
  ensure_database
  "$PYTHON" -m gateway.cli init
  for port in $PORTS; do
    RINGFENCE_HOST=127.0.0.1 RINGFENCE_PORT="$port" \
      "$PYTHON" -m gateway.cli serve >>"$CLUSTER_DIR/replica-$port.log" 2>&1 &
    echo $! > "$CLUSTER_DIR/replica-$port.pid"
  done
  for port in $PORTS; do
    for _ in $(seq 120); do
      if "$PYTHON" -c "import httpx,sys; sys.exit(httpx.get('http://127.0.0.1:$port/readyz', timeout=2).status_code != 200)" 2>/dev/null; then
        echo "replica ready: http://127.0.0.1:$port  (docs: /docs, metrics: /metrics)"
        continue 2
      fi
      sleep 0.5
    done
    echo "replica on :$port did not become ready; see $CLUSTER_DIR/replica-$port.log" >&2
    exit 1
  done
}

stop() {
  for pidfile in "$CLUSTER_DIR"/replica-*.pid "$CLUSTER_DIR"/redis.pid; do
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    kill -TERM "$pid" 2>/dev/null && echo "stopped $(basename "$pidfile" .pid) ($pid)"
    rm -f "$pidfile"
  done
}

status() {
  for port in $PORTS; do
    printf ':%s ' "$port"
    "$PYTHON" -c "import httpx; r = httpx.get('http://127.0.0.1:$port/readyz', timeout=2); print(r.status_code, r.text.strip())" 2>/dev/null || echo "down"
  done
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
