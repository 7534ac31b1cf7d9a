"""Prometheus metrics of one gateway process (served at ``/metrics``).

Metrics are per process: run one worker per replica (threads for concurrency, as
``ringfence serve`` does by default) and scrape every replica, or each
worker's numbers are only its own. Gauges are filled in at scrape time from the
state they describe, so they are never out of date. Whatever is counted since start is
a counter, exposed with ``_total`` (prometheus_client adds it to a Counter's name).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

# The classic text format, which is what generate_latest writes; exactly one charset
# (handing it to Flask as a mimetype would add a second one).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# A decision request's token is checked before the freshness hooks start the clock, so a
# refused token never reaches this counter: it is counted in AUTH_REFUSALS instead.
DECISIONS = Counter(
    "ringfence_decisions_total",
    "Decision requests past the service token check, by result: allow and deny count "
    "each decision given (each evaluation of a batch; an evaluation that failed is a "
    "deny); error counts requests answered with an error status instead (invalid input, "
    "revision not reached, a failure; searches included). Refused tokens are not counted "
    'here but in ringfence_auth_refusals_total{kind="decision_token"}',
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


class EngineCounts(Collector):
    """The engine's counts since start (kept in its sync state, gateway.replication.sync),
    exposed as counters when scraped: ``read`` is set by the app that serves ``/metrics``."""

    def __init__(self) -> None:
        self.read: Callable[[], tuple[int, int]] | None = None

    def collect(self) -> Iterator[CounterMetricFamily]:
        applies, reloads = self.read() if self.read is not None else (0, 0)
        yield CounterMetricFamily(
            "ringfence_incremental_applies",
            "Revisions applied from the change log since start",
            value=applies,
        )
        yield CounterMetricFamily(
            "ringfence_full_reloads", "Full engine reloads since start", value=reloads
        )


ENGINE_COUNTS = EngineCounts()
REGISTRY.register(ENGINE_COUNTS)
DECISION_EVENTS_DROPPED = Counter(
    "ringfence_decision_events_dropped_total",
    "Sampled decision events for event streams not kept, by reason (queue_full: the "
    "writer was behind; write_failed: the database refused the batch)",
    ["reason"],
)
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
# Refusals of callers who are not signed in; the audit trail gets at most one event per
# source and window of them (gateway.audit.refusals). Both labels are from fixed sets in the
# code, never the caller's words.
AUTH_REFUSALS = Counter(
    "ringfence_auth_refusals_total",
    "Requests refused for want of valid credentials, by kind (access_token, "
    "decision_token, sso_code, sso_callback, metrics_token) and reason "
    "(e.g. missing-token, malformed, expired, unknown-code)",
    ["kind", "reason"],
)
AUTH_REFUSALS_UNTRACKED = Counter(
    "ringfence_auth_refusals_untracked_total",
    "Refusals from sources beyond the sampler's table of sources, audited together",
    ["kind"],
)
MAIL_WORKERS_CONSUMING = Gauge(
    "ringfence_mail_workers_consuming",
    "Mail workers connected to the broker and consuming (stamped within three heartbeats);"
    " read at scrape time, with a broker configured",
)
MAIL_QUEUE_DEPTH = Gauge(
    "ringfence_mail_queue_depth",
    "Outbox messages not sent yet, by status (queued, sending, retry); read at scrape time",
    ["status"],
)

__all__ = [
    "AUTH_REFUSALS",
    "AUTH_REFUSALS_UNTRACKED",
    "CONTENT_TYPE",
    "DATABASE_REVISION",
    "DECISIONS",
    "DECISION_SECONDS",
    "ENGINE_COUNTS",
    "LOGIN_FAILURES",
    "MAIL_DELIVERY_FAILURES",
    "MAIL_QUEUE_DEPTH",
    "MAIL_WORKERS_CONSUMING",
    "MIN_REVISION_REFUSALS",
    "REVISION",
    "REVISION_LAG",
    "STALE",
    "STALENESS",
    "WATCHER_CONNECTED",
    "generate_latest",
]
