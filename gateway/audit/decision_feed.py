"""Sampled decision events for the event streams: the decisions of the check endpoints
that some stream asked for, kept in ``decision_events`` for delivery (issue 24).

The decision log's machinery (:class:`gateway.audit.decision_log.DecisionLog`: a lock-free
bounded deque on the decision path, a daemon thread that empties it, a restart in a
forked child), writing to the database instead of a file. On the decision path a
decision costs one dict lookup when no stream wants its workspace's decisions, and one
random draw and one append when one does: no database call, no lock, no wait. The
writer thread reads which streams want decisions, and at what rate, about once a
second, and inserts what was kept in batches. A full buffer drops decisions and counts
them (``ringfence_decision_events_dropped_total``), as a failed insert does: sampled
decisions are best effort up to the table; from the table on, delivery is the streams'
(at least once, in order per stream).

Each kept decision carries its random draw: the workspace's rate is the highest rate
of the streams that see it (its own and the installation-wide ones), and a stream at
rate r takes the kept events whose draw is below r, so each stream gets its own rate.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gateway.audit.decision_log import BUFFER_SIZE, WRITE_INTERVAL, DecisionLog
from gateway.db.models import DecisionEvent, DecisionEventHead, EventStream, Workspace
from gateway.metrics import DECISION_EVENTS_DROPPED

log = logging.getLogger("ringfence.decision_feed")
REFRESH_SECONDS = 1.0  # how often the writer reads which streams want decisions
BATCH = 1000  # decisions inserted per transaction at most
ALL = "*"


def next_ids(session: Session, count: int) -> int:
    """Reserve ``count`` decision event ids under the head's row lock (held until the
    transaction ends); the first of them."""
    for _ in range(3):
        head = session.execute(
            update(DecisionEventHead)
            .where(DecisionEventHead.id == 1)
            .values(head_id=DecisionEventHead.head_id + count)
            .returning(DecisionEventHead.head_id)
        ).scalar()
        if head is not None:
            return int(head) - count + 1
        try:  # the first decision event of this database
            with session.begin_nested():
                session.add(DecisionEventHead(id=1, head_id=0))
        except IntegrityError:
            pass  # another writer made it first
    raise RuntimeError("decision_event_head cannot be read")


def decision_head(session: Session) -> int:
    """The last decision event id given (0: none yet)."""
    return session.scalar(select(DecisionEventHead.head_id).where(DecisionEventHead.id == 1)) or 0


class DecisionFeed(DecisionLog):
    """Keeps the sampled decisions streams want, and writes them to ``decision_events``."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        request_id: Callable[[], str | None] = lambda: None,
        limit: int = BUFFER_SIZE,
        refresh_seconds: float = REFRESH_SECONDS,
        start_after_fork: bool = False,
    ) -> None:
        # A preloading server's parent (ringfence serve, gateway.replication.sync's
        # START_THREADS_AFTER_FORK): no thread of ours queries the database there, where
        # a fork could copy a lock it held (the engine's, the driver's) into a worker,
        # held for ever. Each forked worker starts its writer (DecisionLog._after_fork).
        self._writer_waits_for_fork = start_after_fork
        self.session_factory = session_factory
        self.limit = limit
        self.refresh_seconds = refresh_seconds
        # (rate per workspace slug, rate of any other workspace): swapped whole.
        self.wants: tuple[dict[str, float], float] = ({}, 0.0)
        self._refreshed_at = 0.0
        # Called after a batch is written (the app: the notifier's ``events_committed``,
        # which wakes stream delivery); the streams' sweep covers a lost wake-up.
        self.on_written: Callable[[], None] | None = None
        super().__init__("decision_events", 1.0, request_id)

    def _start_writer(self) -> None:
        if self._writer_waits_for_fork:
            self._writer_waits_for_fork = False  # the forked worker's call starts it
            self._thread = threading.Thread(target=lambda: None, name="decision-events-idle")
            self._thread.start()  # ended at once: close() and flush() find it so
            return
        super()._start_writer()

    # -- the hot path ---------------------------------------------------------------

    def record(
        self, subject: str, workspace: str, resource: str, action: str, decision: Any
    ) -> None:
        """Keep one decision if a stream wants it (sampled); never raises, never waits."""
        try:
            rates, other = self.wants
            rate = rates.get(workspace, other)
            if rate <= 0.0:
                return
            draw = random.random()  # noqa: S311 - sampling
            if draw >= rate:
                return
            if len(self._buffer) >= self.limit:
                self.dropped += 1  # the writer is behind: lose an event, not time
                DECISION_EVENTS_DROPPED.labels("queue_full").inc()
                return
            self._buffer.append(
                (
                    time.time(),
                    subject,
                    workspace,
                    resource,
                    action,
                    decision,
                    self.request_id(),
                    draw,
                )
            )
        except Exception:
            self.failures += 1

    # -- the writer thread ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(WRITE_INTERVAL)
            self._wake.clear()
            if time.monotonic() - self._refreshed_at >= self.refresh_seconds:
                self.refresh()
            self._drain()
            if self._stopping:
                self._drain()
                return

    def refresh(self) -> None:
        """Read which streams want decisions, at what rate (the writer does, every
        ``refresh_seconds``; tests too, not to wait for it)."""
        self._refreshed_at = time.monotonic()
        try:
            with self.session_factory() as session:
                # Outside a transaction: no BEGIN, and no ROLLBACK, after which psycopg
                # would forget the statements it prepared on the connection.
                session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
                rows = session.execute(
                    select(Workspace.slug, func.max(EventStream.decision_sample))
                    .select_from(EventStream)
                    .outerjoin(Workspace, EventStream.workspace_id == Workspace.id)
                    .where(EventStream.decision_sample > 0)
                    .group_by(Workspace.slug)
                ).all()
        except Exception as exc:  # the database is away: keep what we knew
            log.debug("decision events: streams not read: %s", exc)
            return
        other = max((float(rate) for slug, rate in rows if slug is None), default=0.0)
        rates = {str(slug): max(float(rate), other) for slug, rate in rows if slug is not None}
        self.wants = (rates, min(1.0, other))

    def _drain(self) -> None:
        buffer = self._buffer
        while buffer:
            self._busy = True
            batch: list[tuple[Any, ...]] = []
            while buffer and len(batch) < BATCH:
                batch.append(buffer.popleft())
            self._insert(batch)
        self._busy = False

    def _insert(self, batch: list[tuple[Any, ...]]) -> None:
        try:
            rows = [row(entry) for entry in batch]
            with self.session_factory() as session:
                first = next_ids(session, len(rows))
                for offset, values in enumerate(rows):
                    values["id"] = first + offset
                session.execute(insert(DecisionEvent), rows)
                session.commit()
            self.written += len(rows)
            if self.on_written is not None:
                with contextlib.suppress(Exception):
                    self.on_written()
        except Exception as exc:  # reported and counted; the next batch tries again
            self.failures += len(batch)
            DECISION_EVENTS_DROPPED.labels("write_failed").inc(len(batch))
            log.warning("decision events: %d not written: %s", len(batch), exc)

    def flush(self, timeout: float = 10.0) -> bool:
        """Read the streams' rates and write every kept decision now."""
        self.refresh()
        return super().flush(timeout)


def row(entry: tuple[Any, ...]) -> dict[str, Any]:
    at, subject, workspace, resource, action, decision, request_id, draw = entry
    revision = getattr(decision, "revision", None)
    reason = getattr(decision, "reason", None)
    return {
        "at": datetime.fromtimestamp(at, UTC),
        "subject": str(subject),
        "workspace": str(workspace),
        "resource": str(resource),
        "action": str(action),
        "allowed": getattr(decision, "allowed", False) is True,
        "reason": None if reason is None else str(reason),
        "revision": revision if isinstance(revision, int) else None,
        "request_id": request_id,
        "draw": draw,
    }


RETENTION = timedelta(days=7)


def prune(session: Session, now: datetime) -> int:
    """Delete the decision events no stream needs any more: those every stream that
    wants decisions is past, and those older than :data:`RETENTION` (a stream paused
    longer loses them, as retention archives the oldest audit events)."""
    wanting = select(func.min(EventStream.decision_cursor)).where(EventStream.decision_sample > 0)
    low = session.scalar(wanting)
    if low is None:
        low = decision_head(session)
    done = session.execute(
        delete(DecisionEvent).where(
            (DecisionEvent.id <= low) | (DecisionEvent.at < now - RETENTION)
        )
    )
    return int(done.rowcount or 0)  # type: ignore[attr-defined]


def from_settings(
    session_factory: sessionmaker[Session],
    request_id: Callable[[], str | None],
    start_after_fork: bool = False,
) -> DecisionFeed:
    return DecisionFeed(session_factory, request_id, start_after_fork=start_after_fork)
