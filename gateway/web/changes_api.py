"""The change feed: ``GET /v1/changes?since=<revision>`` and ``GET /v1/snapshot``, for
services that keep a replica or a cache of their own (``ringfence_client``'s local
replica follows it).

A follower starts from the snapshot (the engine's whole state at one revision), then asks
for the revisions after the one it holds: at once, by long poll (``timeout``: the answer
waits up to that many seconds for a revision to be committed), or as Server-Sent Events
(``Accept: text/event-stream``: one ``revision`` event per revision, its id the revision,
so that a reconnect with ``Last-Event-ID`` resumes where it stopped). Entries are the
change log's (:mod:`gateway.replication.changelog`), as stored. A ``since`` older than
the log keeps is a 410 (``changes-pruned``): start again from the snapshot.

Both need a service token with ``decisions:replicate`` (401 without or with a bad one,
403 without the scope: a ``decisions:check`` token may ask questions, not read every
grant). Waiting holds a server thread: ``timeout`` is bounded (30 s for a long poll,
300 s for a stream, after which the client reconnects).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from flask import Blueprint, Response, request
from sqlalchemy.exc import InterfaceError, OperationalError

from gateway.audit import refusals
from gateway.errors import BadRequest, InsufficientScope, RingfenceError, Unauthorized
from gateway.replication import feed
from gateway.services import Services
from gateway.services.oauth import REPLICATE_SCOPE
from gateway.web.freshness import DatabaseUnavailable
from gateway.web.http import bearer_token
from gateway.web.state import GatewayState, state

bp = Blueprint("changes", __name__)

T = TypeVar("T")

MAX_POLL_SECONDS = 30.0
MAX_STREAM_SECONDS = 300.0
DEFAULT_STREAM_SECONDS = 60.0
# A stream with nothing to say sends a comment this often (proxies close idle streams).
KEEPALIVE_SECONDS = 15.0
# While waiting, the database is read again at least this often (a revision committed
# by another replica reaches this process's engine within its revision check; the feed
# does not wait for that).
READ_EVERY_SECONDS = 1.0


class ChangesPruned(RingfenceError):
    status = 410
    type = "changes-pruned"
    title = "The change log no longer holds these revisions"


def _require_token(gateway: GatewayState) -> None:
    token = bearer_token(request.headers.get("Authorization", ""))
    if token is None:
        refusals.count("replication_token", "missing-token")
        raise Unauthorized(
            f"Send an access token with the scope '{REPLICATE_SCOPE}': "
            "Authorization: Bearer <token> (POST /oauth/token)"
        )

    def check() -> None:
        with gateway.session_factory() as session:
            Services(
                session, gateway.engine, gateway.notifier, gateway.settings, gateway.throttle
            ).tokens.require(token, REPLICATE_SCOPE)

    try:
        _bounded(gateway, check)
    except (Unauthorized, InsufficientScope) as exc:
        refusals.count("replication_token", refusals.reason_of(exc))
        raise


def _bounded(gateway: GatewayState, call: Callable[[], T]) -> T:
    """``call()`` on the database; 503 if it cannot be reached (the sessions' engines
    bound connecting and, on PostgreSQL, statements). Not through the decision path's
    bounded threads: a snapshot may take long, and must not take their places."""
    try:
        return call()
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseUnavailable(
            "The database cannot be reached to read the change log; retry shortly.",
            retry_after=2,
        ) from exc


def _number(name: str, default: float | None, low: float, high: float) -> float:
    raw = request.args.get(name)
    if raw is None:
        if default is None:
            raise BadRequest(f"Give {name}", errors={name: ["Missing data for required field."]})
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:  # also NaN
        raise BadRequest(
            f"{name} must be a number from {low:g} to {high:g}",
            errors={name: [f"Must be between {low:g} and {high:g}."]},
        )
    return value


def _since() -> int:
    last_event = request.headers.get("Last-Event-ID")
    if last_event is not None and "since" not in request.args:
        if not last_event.isdigit():
            raise BadRequest("Last-Event-ID must be a revision")
        return int(last_event)
    since = _number("since", None, 0, 2**62)
    if since != int(since):
        raise BadRequest("since must be a whole number", errors={"since": ["Not an integer."]})
    return int(since)


MAX_WORKSPACES = 100


def _workspaces() -> frozenset[str] | None:
    """``workspace=`` (repeated): the feed of those workspaces only; None: all."""
    named = request.args.getlist("workspace")
    if not named:
        return None
    if len(named) > MAX_WORKSPACES or any(not 1 <= len(w) <= 63 for w in named):
        raise BadRequest(
            f"Name 1 to {MAX_WORKSPACES} workspaces (slugs of 1 to 63 characters)",
            errors={"workspace": ["Not a list of workspace slugs."]},
        )
    return frozenset(named)


def _read(
    gateway: GatewayState, since: int, limit: int, workspaces: frozenset[str] | None
) -> feed.Changes:
    def read() -> feed.Changes:
        with gateway.session_factory() as session:
            try:
                return feed.changes_after(session, since, limit, workspaces)
            finally:
                session.rollback()

    changes = _bounded(gateway, read)
    if changes.pruned:
        raise ChangesPruned(
            f"Revision {since + 1} is no longer in the change log: load GET /v1/snapshot "
            "and follow from its revision",
            head=changes.head,
        )
    return changes


def _wait(gateway: GatewayState, since: int, seconds: float) -> None:
    """Up to ``seconds``, until this process's engine passes ``since`` (a change made
    here, or applied from elsewhere)."""
    deadline = time.monotonic() + seconds
    while gateway.engine.revision <= since:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(min(0.02, remaining))


def _next(
    gateway: GatewayState,
    since: int,
    limit: int,
    until: float,
    workspaces: frozenset[str] | None,
) -> feed.Changes:
    """The revisions after ``since``: at once if there are, else as soon as one is
    committed, or none at ``until``."""
    while True:
        changes = _read(gateway, since, limit, workspaces)
        remaining = until - time.monotonic()
        if changes.revisions or remaining <= 0:
            return changes
        _wait(gateway, since, min(READ_EVERY_SECONDS, remaining))


def _body(changes: feed.Changes) -> dict[str, Any]:
    return {
        "since": changes.since,
        "revision": changes.revision,
        "head": changes.head,
        "changes": [{"revision": r, "entries": entries} for r, entries in changes.revisions],
    }


@bp.get("/v1/changes")
def changes() -> Response:
    """The change log after ``since``: JSON (long poll with ``timeout``) or, with
    ``Accept: text/event-stream``, a stream of Server-Sent Events."""
    gateway = state()
    _require_token(gateway)
    since = _since()
    limit = int(_number("limit", feed.MAX_REVISIONS, 1, feed.MAX_REVISIONS))
    workspaces = _workspaces()
    if request.accept_mimetypes.best == "text/event-stream":
        seconds = _number("timeout", DEFAULT_STREAM_SECONDS, 0, MAX_STREAM_SECONDS)
        first = _read(gateway, since, limit, workspaces)  # refusals before the stream
        return Response(
            _stream(gateway, first, limit, time.monotonic() + seconds, workspaces),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
    seconds = _number("timeout", 0.0, 0, MAX_POLL_SECONDS)
    answer = _next(gateway, since, limit, time.monotonic() + seconds, workspaces)
    response = Response(json.dumps(_body(answer)), mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def _stream(
    gateway: GatewayState,
    first: feed.Changes,
    limit: int,
    until: float,
    workspaces: frozenset[str] | None,
) -> Iterator[str]:
    changes = first
    said = time.monotonic()
    yield f"retry: 1000\n: at revision {changes.since}, head {changes.head}\n\n"
    while True:
        for revision, entries in changes.revisions:
            data = json.dumps({"revision": revision, "entries": entries})
            yield f"id: {revision}\nevent: revision\ndata: {data}\n\n"
            said = time.monotonic()
        now = time.monotonic()
        if now >= until:
            return
        if now - said >= KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            said = now
        try:
            changes = _next(
                gateway, changes.revision, limit, min(until, said + KEEPALIVE_SECONDS), workspaces
            )
        except RingfenceError as exc:  # the database went away, or the log was pruned
            yield f"event: error\ndata: {json.dumps(exc.to_problem())}\n\n"
            return


@bp.get("/v1/snapshot")
def snapshot() -> Response:
    """Everything the engine knows, at one revision (see gateway.replication.feed)."""
    gateway = state()
    _require_token(gateway)
    workspaces = _workspaces()

    def read() -> dict[str, Any]:
        with gateway.session_factory() as session:
            try:
                return feed.snapshot(session, workspaces)
            finally:
                session.rollback()

    body = _bounded(gateway, read)
    response = Response(json.dumps(body, separators=(",", ":")), mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response
