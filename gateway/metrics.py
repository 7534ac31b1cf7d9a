"""Prometheus metrics of one gateway process (served at ``/metrics``).

Metrics are per process: run one gunicorn worker per replica (threads for
concurrency, as ``deploy/gunicorn.conf.py`` does) and scrape every replica, or each
worker's numbers are only its own. Gauges are filled in at scrape time from the
state they describe, so they are never out of date.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

DECISIONS = Counter(
    "ringfence_decisions_total",
    "Decisions answered, by result (allow, deny; error: the request was refused)",
    ["result"],
)
DECISION_SECONDS = Histogram(
    "ringfence_decision_seconds",
    "Time to answer a decision request, from the first byte of the request to the answer",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
MIN_REVISION_REFUSALS = Counter(
    "ringfence_min_revision_refusals_total",
    "Decisions refused because the replica had not reached the caller's min revision",
    ["status"],
)
REVISION = Gauge("ringfence_policy_revision", "Policy revision the in-memory engine holds")
DATABASE_REVISION = Gauge(
    "ringfence_database_revision", "Committed policy revision last read from the database"
)
REVISION_LAG = Gauge(
    "ringfence_revision_lag", "Committed revisions not yet in memory (last database read)"
)
STALE = Gauge(
    "ringfence_stale", "1 while the database is unreachable and decisions come from memory"
)
STALENESS = Gauge(
    "ringfence_staleness_seconds",
    "Seconds since the engine was last confirmed to hold every committed change",
)
WATCHER_CONNECTED = Gauge(
    "ringfence_watcher_connected", "1 while subscribed to change notices on Redis"
)
INCREMENTAL_APPLIES = Gauge(
    "ringfence_incremental_applies", "Revisions applied from the change log (since start)"
)
FULL_RELOADS = Gauge("ringfence_full_reloads", "Full engine reloads (since start)")
LOGIN_FAILURES = Counter(
    "ringfence_login_failures_total",
    "Password sign-ins refused, by reason (invalid_credentials, throttled)",
    ["reason"],
)
# Counted by the process that delivers: the gateway itself when Celery runs eager, else
# the worker (the outbox keeps every failure too: GET /invitations?status=failed).
MAIL_DELIVERY_FAILURES = Counter(
    "ringfence_mail_delivery_failures_total",
    "Email deliveries that failed, by outcome (retry: another attempt is due; failed: final)",
    ["outcome"],
)
MAIL_QUEUE_DEPTH = Gauge(
    "ringfence_mail_queue_depth",
    "Outbox messages not sent yet, by status (queued, sending, retry); read at scrape time",
    ["status"],
)

__all__ = [
    "CONTENT_TYPE_LATEST",
    "DATABASE_REVISION",
    "DECISIONS",
    "DECISION_SECONDS",
    "FULL_RELOADS",
    "INCREMENTAL_APPLIES",
    "LOGIN_FAILURES",
    "MAIL_DELIVERY_FAILURES",
    "MAIL_QUEUE_DEPTH",
    "MIN_REVISION_REFUSALS",
    "REVISION",
    "REVISION_LAG",
    "STALE",
    "STALENESS",
    "WATCHER_CONNECTED",
    "generate_latest",
]
