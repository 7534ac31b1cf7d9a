"""Last seen per person and workspace: which (user, workspace) pairs the check endpoints
answered about, written to ``workspace_activity`` in batches, off the hot path.

A decision only adds its (user id, workspace) pair to a set (a repeat within the
window costs a lookup, nothing more). A daemon thread swaps the set out every minute
(or every flush interval, if shorter), stamps its pairs with that time, and every
``RINGFENCE_ACTIVITY_FLUSH_SECONDS`` writes what it has in one batched upsert in which
a later time wins. The set is capped: beyond :data:`MAX_PAIRS` distinct pairs in a
window, new pairs are dropped and counted rather than growing memory. A failed write is
logged and retried at the next flush; it never reaches a decision. Pairs naming a user
or workspace that no longer exists when written are skipped.

The app factory makes one :class:`ActivityRecorder` per app (kept in its
``gateway.web.state.GatewayState``) and hands it to the decision service, which calls
:meth:`ActivityRecorder.note`; :meth:`ActivityRecorder.flush` writes now (tests), and
every live recorder writes what it holds at exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Table, case, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gateway.db.models import User, Workspace, WorkspaceActivity, utcnow
from gateway.engine.engine import UNKNOWN_WORKSPACE

log = logging.getLogger("ringfence.activity")
MAX_PAIRS = 100_000  # distinct (user, workspace) pairs kept per window, and pending
WINDOW_SECONDS = 60.0  # pairs are stamped at least this often: "last seen" to the minute
CHUNK = 500  # rows (or ids) per statement: below every database's parameter limit

Pair = tuple[int, str]


class ActivityRecorder:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        flush_seconds: float,
        max_pairs: int = MAX_PAIRS,
    ) -> None:
        self.session_factory = session_factory
        self.flush_seconds = flush_seconds
        self.max_pairs = max_pairs
        self.dropped = 0  # pairs not kept: the window or the pending batch was full
        self.failures = 0  # writes that failed (their pairs are retried)
        self.written = 0  # rows written (pairs of removed people or workspaces are not)
        # The current window's pairs: added to by decisions, swapped out by _rotate.
        self.pairs: set[Pair] = set()
        self._start()
        _live.add(self)

    def note(self, user_id: int | None, workspace: str, decision: Any) -> None:
        """Note that a check about ``user_id`` in ``workspace`` was answered (allowed or
        denied); nothing for an unknown subject or workspace."""
        # The hot path: ~0.1 µs for a pair seen this minute.
        if user_id is None or decision.reason == UNKNOWN_WORKSPACE:
            return
        pair = (user_id, workspace)
        pairs = self.pairs  # swapped by the writer thread: read it once
        if pair not in pairs:
            if len(pairs) < self.max_pairs:
                pairs.add(pair)
            else:
                self.dropped += 1  # the window is full: lose a pair, not time

    def _start(self) -> None:
        # Pairs of past windows not yet written, with the time they were last seen.
        self._pending: dict[Pair, datetime] = {}
        self._lock = threading.Lock()  # one rotation or write at a time
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="activity", daemon=True)
        self._thread.start()

    # -- the writer thread ------------------------------------------------------------

    def _run(self) -> None:
        tick = min(self.flush_seconds, WINDOW_SECONDS)
        next_write = time.monotonic() + self.flush_seconds
        while not self._stop.wait(tick):
            try:
                with self._lock:
                    self._rotate()
                    if time.monotonic() >= next_write:
                        next_write = time.monotonic() + self.flush_seconds
                        self._write()
            except Exception:  # the thread must outlive any surprise
                log.exception("activity: recording failed")

    def _rotate(self) -> None:
        """Close the window: its pairs join the pending ones, stamped now."""
        window, self.pairs = self.pairs, set()
        # A decision that read the old set just before the swap adds to it a moment
        # later: let it (the GIL switches within milliseconds) before reading the set.
        time.sleep(0.005)
        now = utcnow().replace(microsecond=0)
        pending = self._pending
        for pair in list(window):
            if pair in pending or len(pending) < self.max_pairs:
                pending[pair] = now  # windows close in order: the later time wins
            else:
                self.dropped += 1

    def _write(self) -> None:
        if not self._pending:
            return
        batch = self._pending
        try:
            with self.session_factory() as session:
                self.written += upsert(session, batch.items())
            self._pending = {}
        except Exception as exc:  # kept for the next flush; decisions never see it
            self.failures += 1
            log.warning("activity: cannot record last seen (%d pairs kept): %s", len(batch), exc)

    def flush(self) -> None:
        """Write everything noted so far, now (on the caller's thread)."""
        with self._lock:
            self._rotate()
            self._write()

    def close(self) -> None:
        _live.discard(self)  # closed: no longer restarted at fork nor flushed at exit
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.flush()

    def restart_after_fork(self) -> None:
        """In a forked child: the parent's thread and lock stayed behind, and its pairs
        are the parent's to write."""
        self.pairs = set()
        self._start()


def upsert(session: Session, seen: Iterable[tuple[Pair, datetime]]) -> int:
    """Record each ((user id, workspace slug), time) as last seen, unless a later time
    is stored already; pairs whose user or workspace does not exist are skipped. Commits;
    the number of rows written."""
    entries = list(seen)
    slugs = sorted({slug for (_, slug), _ in entries})
    user_ids = sorted({user_id for (user_id, _), _ in entries})
    workspace_ids: dict[str, int] = {}
    for chunk in _chunks(slugs):
        workspace_ids.update(
            session.execute(
                select(Workspace.slug, Workspace.id).where(Workspace.slug.in_(chunk))
            ).all()
        )
    users: set[int] = set()
    for ids in _chunks(user_ids):
        users.update(session.scalars(select(User.id).where(User.id.in_(ids))))
    rows = [
        {"user_id": user_id, "workspace_id": workspace_ids[slug], "last_seen_at": at}
        for (user_id, slug), at in entries
        if user_id in users and slug in workspace_ids
    ]
    # In primary-key order: replicas flushing overlapping pairs at once then take their
    # row locks in the same order, so none waits on another's (deadlocks otherwise).
    rows.sort(key=lambda row: (row["user_id"], row["workspace_id"]))
    return write_rows(session, rows)


def write_rows(session: Session, rows: list[dict[str, Any]]) -> int:
    """Upsert ``rows`` (user_id, workspace_id, last_seen_at), a later time winning, and
    commit; a row whose user or workspace is gone (removed since it was looked up) is
    skipped, the others written. The number of rows written."""
    if not rows:
        return 0
    statement = _upsert_statement(session)
    try:
        for chunk in _chunks(rows):
            session.execute(statement, chunk)
        session.commit()
        return len(rows)
    except IntegrityError:
        # Row by row, each in a savepoint, so that one removal costs only its row.
        session.rollback()
    written = 0
    for row in rows:
        try:
            with session.begin_nested():
                session.execute(statement, [row])
            written += 1
        except IntegrityError:
            continue
    session.commit()
    return written


def _upsert_statement(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = WorkspaceActivity.__table__
    assert isinstance(table, Table)
    statement = insert(table)
    later = statement.excluded.last_seen_at > table.c.last_seen_at
    return statement.on_conflict_do_update(
        index_elements=[table.c.user_id, table.c.workspace_id],
        set_={
            "last_seen_at": case(
                (later, statement.excluded.last_seen_at), else_=table.c.last_seen_at
            )
        },
    )


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


# -- every recorder of this process -----------------------------------------------------
# Process-wide on purpose: fork and interpreter exit are events of the process, not of
# an app, so the hooks below need every live recorder (and nothing else reads this set).

_live: weakref.WeakSet[ActivityRecorder] = weakref.WeakSet()


def close_all() -> None:
    """Stop every recorder of this process, after writing what each holds: for whoever
    ends a database before the process ends (tests drop theirs)."""
    for recorder in list(_live):
        recorder.close()


def from_settings(
    session_factory: sessionmaker[Session], flush_seconds: float
) -> ActivityRecorder | None:
    """The recorder ``RINGFENCE_ACTIVITY_FLUSH_SECONDS`` asks for: None when 0 (off)."""
    return ActivityRecorder(session_factory, flush_seconds) if flush_seconds > 0 else None


def _flush_at_exit() -> None:
    for recorder in list(_live):
        try:
            recorder.flush()
        except Exception:
            log.exception("activity: last flush failed")


def _after_fork_in_child() -> None:
    # `ringfence serve` builds the app, then forks: each worker needs its own writer thread.
    for recorder in list(_live):
        recorder.restart_after_fork()


atexit.register(_flush_at_exit)
os.register_at_fork(after_in_child=_after_fork_in_child)
