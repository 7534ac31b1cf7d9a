"""How fresh this replica's answers are, and the HTTP that says so.

- ``X-Min-Revision: N`` on any decision request: a replica that has not reached
  revision N waits up to ``min_revision_wait_ms`` for it, then refuses (409, or 503
  while the database is unreachable) instead of answering from an older revision.
- Decision responses carry ``X-Ringfence-Stale`` (true while the database cannot be
  reached and answers come from memory) and ``X-Ringfence-Staleness`` (seconds since
  the engine was last confirmed to hold every committed change: a change committed
  longer ago than that is in the answer).
- Every response to a request that committed a change carries the revision it
  committed in ``X-Ringfence-Revision``: send it back as ``X-Min-Revision``.
- ``/healthz`` (the process is alive), ``/readyz`` (policy loaded at the latest
  revision, or the database is away and answers come from memory), ``/metrics``.
- Database connection errors become 503 problems (nothing was changed).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from flask import Flask, Response, current_app, g, request
from sqlalchemy import func, select
from sqlalchemy.exc import InterfaceError, OperationalError

from gateway import metrics
from gateway.db.models import DeliveryStatus, MailWorker, OutboxMessage, utcnow
from gateway.errors import BadRequest, Conflict, ServiceUnavailable
from gateway.replication.sync import SyncState, catch_up, state_of, wait_for_revision
from gateway.web.bounded import DatabaseStalled
from gateway.web.http import (
    is_decision_request,
    problem_response,
    require_metrics_token,
    unexpected_error,
)
from gateway.web.state import gateway_state

log = logging.getLogger("ringfence.freshness")

MIN_REVISION_HEADER = "X-Min-Revision"
REVISION_HEADER = "X-Ringfence-Revision"
STALE_HEADER = "X-Ringfence-Stale"
STALENESS_HEADER = "X-Ringfence-Staleness"


class RevisionNotReached(Conflict):
    type = "revision-not-reached"
    title = "This replica has not reached the requested policy revision"


class ReplicaStale(ServiceUnavailable):
    type = "replica-stale"
    title = "This replica cannot reach the database to catch up"


class DatabaseUnavailable(ServiceUnavailable):
    type = "database-unavailable"
    title = "The database is unreachable"


def requested_min_revision() -> int | None:
    raw = request.headers.get(MIN_REVISION_HEADER)
    if raw is None or raw.strip() == "":
        return None
    text = raw.strip()
    if not text.isdecimal() or len(text) > 18:
        raise BadRequest(
            f"{MIN_REVISION_HEADER} must be a non-negative integer (a revision returned "
            f"in {REVISION_HEADER})",
            errors={MIN_REVISION_HEADER: ["not a non-negative integer"]},
        )
    return int(text)


def require_min_revision(min_revision: int) -> None:
    """Return once the engine holds ``min_revision``; raise a 409/503 problem if it does
    not within the configured wait."""
    gateway = gateway_state(current_app)
    engine = gateway.engine
    wait_ms = gateway.settings.min_revision_wait_ms
    started = time.monotonic()
    if wait_for_revision(engine, min_revision, wait_ms / 1000):
        return
    state = state_of(engine)
    waited = round((time.monotonic() - started) * 1000)
    details: dict[str, Any] = {
        "min_revision": min_revision,
        "revision": engine.revision,
        "waited_ms": waited,
    }
    if state.stale:
        metrics.MIN_REVISION_REFUSALS.labels("503").inc()
        raise ReplicaStale(
            f"This replica is at revision {engine.revision} and cannot reach the database "
            f"to catch up to revision {min_revision}; retry, or ask another replica",
            retry_after=1,
            **details,
        )
    metrics.MIN_REVISION_REFUSALS.labels("409").inc()
    raise RevisionNotReached(
        f"This replica is at revision {engine.revision}; revision {min_revision} did not "
        f"arrive within {wait_ms} ms (it may not be committed yet). Retry shortly.",
        **details,
    )


_DECISION_COUNTERS: dict[str, Any] = {}


def _decisions_counter(result: str) -> Any:
    """The decision counter of ``result``, looked up once (``labels`` takes a lock)."""
    counter = _DECISION_COUNTERS.get(result)
    if counter is None:
        counter = _DECISION_COUNTERS[result] = metrics.DECISIONS.labels(result)
    return counter


def observe_decision(started: float, results: dict[str, int]) -> None:
    """Count a decision response's answers by result, and its time since ``started``."""
    metrics.DECISION_SECONDS.observe(time.perf_counter() - started)
    for result, count in results.items():
        if count:
            _decisions_counter(result).inc(count)


def decision_headers(state: SyncState, confirmed_at: float) -> tuple[tuple[str, str], ...]:
    """Whether the answer is stale, and how old the newest change it may miss can be:
    the engine was confirmed to hold every change committed before ``confirmed_at``."""
    staleness = max(0.0, time.monotonic() - confirmed_at)
    return (
        (STALE_HEADER, "true" if state.stale else "false"),
        (STALENESS_HEADER, f"{staleness:.3f}"),
    )


def _decision_results(response: Response) -> dict[str, int]:
    """How many answers of each result (allow, deny, error) the response carries."""
    if response.status_code >= 400:
        return {"error": 1}
    # The counts or the answer as the handler gave them (gateway.web.http.answered_json,
    # answered), else parsed back: a batch's JSON is not parsed a second time to be counted.
    results: dict[str, int] | None = g.get("decision_results")
    if results is not None:
        return results
    body = g.get("decision_answer")
    if body is None:
        body = response.get_json(silent=True)
    if not isinstance(body, dict):
        return {"error": 1}
    if "allowed" in body:
        return {"allow" if body["allowed"] else "deny": 1}
    if "decision" in body:
        return {"allow" if body["decision"] else "deny": 1}
    evaluations = body.get("evaluations")
    if isinstance(evaluations, list):
        allowed = sum(1 for e in evaluations if isinstance(e, dict) and e.get("decision"))
        return {"allow": allowed, "deny": len(evaluations) - allowed}
    return {}  # searches: not a yes/no decision


def database_condition(state: SyncState) -> str:
    """ok; silent (not answering in time: a stalled link or a frozen server, whether on
    connect or mid-query); or unreachable (refused: down, or credentials wrong)."""
    if not state.stale:
        return "ok"
    return "silent" if state.database_ok or state.database_silent else "unreachable"


def readiness(app: Flask) -> tuple[dict[str, Any], int]:
    """Ready when the engine holds the committed revision, or the database is away and
    the engine answers from memory (stale mode)."""
    gateway = gateway_state(app)
    engine = gateway.engine
    state = state_of(engine)
    try:
        # Bounded: a stalled database must not hang the probe (nor its caller's check).
        gateway.db_calls.run(
            lambda: catch_up(engine, gateway.db, gateway.session_factory, gateway.settings)
        )
    except DatabaseStalled:
        log.debug("readiness: the database does not answer", exc_info=True)
    except Exception:
        log.debug("readiness: database unreachable", exc_info=True)
    lag = max(0, state.database_revision - engine.revision)
    watcher = _watcher_status(app)
    behind = engine.is_behind(state.database_revision)
    ready = state.stale or not behind
    body = {
        "status": "ready" if ready else "catching-up",
        "policy_loaded": True,
        "revision": engine.revision,
        "database": database_condition(state),
        "database_revision": state.database_revision,
        "revision_lag": lag,
        "stale": state.stale,
        "staleness_seconds": round(state.staleness, 3),
        "watcher": watcher,
        # How changes of other replicas reach this one: their notices, or (no watcher, or
        # Redis away or frozen) the revision check every revision_poll_seconds.
        "propagation": "notices" if watcher == "connected" else "polling",
        # Mail workers consuming; null without a broker (email is sent in-process).
        "mail_workers_consuming": None if state.stale else consuming_mail_workers(app),
    }
    return body, 200 if ready else 503


def consuming_mail_workers(app: Flask) -> int | None:
    """How many mail workers stamped their row within three heartbeats (None without a
    broker, or when the database cannot say): 0 means nobody is sending email."""
    gateway = gateway_state(app)
    settings = gateway.settings
    if not settings.broker_url:
        return None
    since = utcnow() - timedelta(seconds=3 * settings.mail_worker_heartbeat_seconds)

    def count() -> int:
        with gateway.session_factory() as session:
            return int(session.scalar(select(func.count()).where(MailWorker.seen_at >= since)) or 0)

    try:
        return gateway.db_calls.run(count)
    except Exception:
        log.debug("mail workers not read", exc_info=True)
        return None


def _watcher_status(app: Flask) -> str:
    watcher = gateway_state(app).watcher
    if watcher is None:
        return "off"
    return "connected" if watcher.connected else "disconnected"


def _scrape(app: Flask) -> bytes:
    gateway = gateway_state(app)
    engine = gateway.engine
    state: SyncState = state_of(engine)
    metrics.REVISION.set(engine.revision)
    metrics.DATABASE_REVISION.set(state.database_revision)
    metrics.REVISION_LAG.set(max(0, state.database_revision - engine.revision))
    metrics.STALE.set(1 if state.stale else 0)
    metrics.STALENESS.set(state.staleness)
    watcher = gateway.watcher
    metrics.WATCHER_CONNECTED.set(1 if watcher is not None and watcher.connected else 0)
    metrics.ENGINE_COUNTS.read = lambda: (state.incremental_applies, state.full_reloads)
    if not state.stale:  # with the database away, the last figures stand
        _scrape_mail_queue(app)
        if (workers := consuming_mail_workers(app)) is not None:
            metrics.MAIL_WORKERS_CONSUMING.set(workers)
    return metrics.generate_latest()


_UNSENT = (DeliveryStatus.QUEUED, DeliveryStatus.SENDING, DeliveryStatus.RETRY)


def _scrape_mail_queue(app: Flask) -> None:
    """One indexed COUNT per scrape (ix_outbox_messages_status), never on a request."""
    query = (
        select(OutboxMessage.status, func.count())
        .where(OutboxMessage.status.in_(_UNSENT))
        .group_by(OutboxMessage.status)
    )

    gateway = gateway_state(app)

    def read() -> dict[DeliveryStatus, int]:
        with gateway.session_factory() as session:
            return {status: count for status, count in session.execute(query).all()}

    try:
        counts = gateway.db_calls.run(read)
    except Exception:
        log.debug("metrics: mail queue not read", exc_info=True)
        return
    for status in _UNSENT:
        metrics.MAIL_QUEUE_DEPTH.labels(status.value).set(counts.get(status, 0))


# What an unreachable or overloaded database says (psycopg and SQLite), as opposed to a
# broken schema or query ("no such table", "column ... does not exist"), which is a bug.
_UNREACHABLE_MARKERS = (
    "connection",
    "could not connect",
    "server closed",
    "terminating",
    "timeout",
    "timed out",
    "too many clients",
    "database is locked",
    "the database system is",
)


def is_unreachable(error: Exception) -> bool:
    if isinstance(error, InterfaceError) or getattr(error, "connection_invalidated", False):
        return True
    message = str(getattr(error, "orig", error)).lower()
    return any(marker in message for marker in _UNREACHABLE_MARKERS)


def committed_but_unread(revision: int) -> Response:
    """The answer to a change that committed at ``revision`` when reading its result back
    failed: a success (201 for a POST), with the revision and what to do next."""
    body = {
        "committed": True,
        "revision": revision,
        "detail": (
            f"The change was committed (revision {revision}), but its result could not be "
            "read back: the database stopped answering. Read the resource again to see it."
        ),
    }
    response = Response(
        current_app.json.dumps(body),
        status=201 if request.method == "POST" else 200,
        mimetype="application/json",
    )
    response.headers[REVISION_HEADER] = str(revision)
    response.headers["Cache-Control"] = "no-store"
    return response


def install(app: Flask) -> None:
    """Register the freshness hooks, the probes and the metrics endpoint on ``app``."""
    gateway = gateway_state(app)

    @app.before_request
    def freshness_before() -> None:
        gateway.restart_after_fork()
        if not is_decision_request():
            return
        context = g._get_current_object()  # one proxy lookup, not one per attribute
        context.decision_started = time.perf_counter()
        context.sync_state = state = state_of(gateway.engine)
        # Taken before answering: everything committed before this instant is in the
        # answer, whatever the revision check does while the request runs.
        context.confirmed_at = state.confirmed_at
        min_revision = requested_min_revision()
        if min_revision is not None:
            require_min_revision(min_revision)

    @app.after_request
    def freshness_after(response: Response) -> Response:
        context = g._get_current_object()
        started = context.get("decision_started")
        if started is not None:
            observe_decision(started, _decision_results(response))
            headers = response.headers
            for name, value in decision_headers(context.sync_state, context.confirmed_at):
                headers[name] = value
        services = context.get("services")
        if services is not None and services.uow.revision:
            response.headers[REVISION_HEADER] = str(services.uow.revision)
        return response

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    def database_unavailable(error: Exception) -> Response:
        if not is_unreachable(error):
            return unexpected_error(error)  # a broken schema or query is a bug: 500
        log.warning("database error on %s %s: %s", request.method, request.path, error)
        state_of(gateway.engine).wake.set()  # let the check notice
        services = g.get("services")
        if services is not None and services.uow.revision:
            # The change was committed; only reading its result back failed. Saying
            # "nothing was changed" would make the caller believe a change that stands
            # failed (and retry it): answer that it was made, and at which revision.
            return committed_but_unread(services.uow.revision)
        problem = DatabaseUnavailable(
            "The database cannot be reached right now, so nothing was changed. Decisions "
            "keep working from memory; retry the change shortly.",
            retry_after=2,
        ).to_problem()
        return problem_response(problem, {"Retry-After": "2"})

    @app.get("/readyz")
    def readyz() -> Any:
        body, status = readiness(app)
        return body, status

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        require_metrics_token(gateway.settings.metrics_token)
        # content_type, not mimetype: Flask would add a second charset to a mimetype.
        return Response(_scrape(app), content_type=metrics.CONTENT_TYPE)
