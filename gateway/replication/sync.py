"""Keeping the in-memory engine in step with changes committed anywhere.

Changes made through this process reach the engine right after they commit
(:func:`apply_committed`). Changes made elsewhere (another replica, another worker, the
CLI) are announced on Redis by the change watcher (:mod:`gateway.replication.watcher`)
and found by a periodic revision check; either way :func:`catch_up` reads the missed
revisions from the change log (``policy_changes``) and applies them in order. Only a gap
the log cannot fill (pruned) or a change the engine could not apply makes it reload
everything.

Every apply and reload of one engine goes through one lock (:class:`SyncState`), so
revisions are applied exactly once and in order even when the request thread, the
poller and a ``min_revision`` wait race each other.

A revision that ended service tokens (a deleted client, a revoked token, a retired key)
makes the process forget the decision tokens it remembers (``SyncState.forget_tokens``,
gateway.identity.token_cache) when it commits or applies that revision, and on every full reload
(the gap it skips may have held one).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.config import Settings
from gateway.db.models import PolicyState
from gateway.db.session import is_silence
from gateway.engine.engine import Change, DecisionEngine
from gateway.engine.expiry import schedule_for
from gateway.replication import changelog
from gateway.replication.loading import reload_engine

log = logging.getLogger("ringfence.sync")

# Set by a server that builds the app before forking workers (``ringfence serve``, see
# gateway/cli/server.py): background threads then start in each worker only, since a
# lock held by a thread of the parent at fork time would stay locked in the child.
START_THREADS_AFTER_FORK = False


@dataclass
class SyncState:
    """What this process knows about its engine's freshness."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    # Set by the app for engines that serve decisions: only those fill gaps from the log
    # (a throw-away engine, e.g. the mail ledger's, just records what it is told).
    tracked: bool = False
    # monotonic time taken *before* the last database read that found the engine at or
    # past the committed revision: every change committed before it is in memory.
    confirmed_at: float = field(default_factory=time.monotonic)
    database_ok: bool = True
    database_error: str = ""
    # The last failure was a timeout (a stalled link, a frozen server), not a refusal.
    database_silent: bool = False
    database_revision: int = 0
    watcher_connected: bool = False
    incremental_applies: int = 0
    full_reloads: int = 0
    # Set to ask the poller for an immediate check (a notice arrived, a caller waits).
    wake: threading.Event = field(default_factory=threading.Event)
    # Called with each revision this process committed (the watcher publishes it).
    publish: Callable[[int], None] | None = None
    # Called when a revision ended service tokens (the decision token cache forgets).
    forget_tokens: Callable[[], None] | None = None
    # With a revision check running: unconfirmed for longer than this means the database
    # is not answering (a stalled link raises nothing, it just waits), so stale too.
    stale_after: float = 0.0

    @property
    def staleness(self) -> float:
        """Seconds since the engine was last known to hold every committed change."""
        return max(0.0, time.monotonic() - self.confirmed_at)

    @property
    def stale(self) -> bool:
        """True while the database cannot be reached, or has not answered the revision
        check for ``stale_after`` seconds: answers come from memory."""
        return not self.database_ok or 0 < self.stale_after < self.staleness


_STATES: weakref.WeakKeyDictionary[DecisionEngine, SyncState] = weakref.WeakKeyDictionary()
_STATES_LOCK = threading.Lock()


def state_of(engine: DecisionEngine) -> SyncState:
    with _STATES_LOCK:
        state = _STATES.get(engine)
        if state is None:
            state = _STATES[engine] = SyncState()
        return state


def committed_revision(session: Session) -> int:
    return int(session.scalar(select(PolicyState.revision).where(PolicyState.id == 1)) or 0)


def _reload(engine: DecisionEngine, session: Session, state: SyncState) -> None:
    reload_engine(engine, session.get_bind(), session)  # type: ignore[arg-type]
    state.full_reloads += 1
    _tokens_ended(state)


def _tokens_ended(state: SyncState) -> None:
    if state.forget_tokens is not None:
        try:
            state.forget_tokens()
        except Exception:
            log.exception("could not forget the remembered decision tokens")


def _fill_from_log(engine: DecisionEngine, session: Session, upto: int, state: SyncState) -> bool:
    """Apply revisions ``engine.revision+1 .. upto`` from the log; False if it cannot."""
    revisions = changelog.read_after(session, engine.revision, upto)
    if revisions is None:
        log.info("change log has no revisions %s..%s; reloading", engine.revision + 1, upto)
        return False
    return _apply_in_order(engine, revisions, state)


def _apply_in_order(
    engine: DecisionEngine, revisions: Sequence[changelog.Logged], state: SyncState
) -> bool:
    """Apply logged revisions one by one; False at the first the engine cannot apply."""
    for logged in revisions:
        if not _apply_logged(engine, logged, state):
            return False
        state.incremental_applies += 1
    return True


def _fill_after_commit(
    engine: DecisionEngine,
    session: Session,
    upto: int,
    state: SyncState,
    before: Sequence[changelog.Logged] | None = None,
) -> bool:
    """:func:`_fill_from_log` for a change just committed through ``session``, from
    ``before`` (the revisions its own statement read: gateway.replication.changelog
    .record_next) when they are all there, else from the log. That read goes outside a
    transaction (autocommit), on a connection of the same engine, so that the session
    starts no transaction only to end it with a ROLLBACK when it closes (two round
    trips, and psycopg forgets every statement it prepared on a connection rolled back:
    with two workers, each commit of one follows the other's)."""
    wanted = [logged for logged in before or () if logged.revision > engine.revision]
    if before is not None and [logged.revision for logged in wanted] == list(
        range(engine.revision + 1, upto + 1)
    ):
        return _apply_in_order(engine, wanted, state)
    bind = session.get_bind()
    if not isinstance(bind, Engine):  # a session on a connection: read through it
        return _fill_from_log(engine, session, upto, state)
    with Session(bind) as reading:
        reading.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        return _fill_from_log(engine, reading, upto, state)


def _apply_logged(engine: DecisionEngine, logged: changelog.Logged, state: SyncState) -> bool:
    """Apply one logged revision, and give its grants' end times to the engine's expiry
    schedule, as the unit of work does in the process that committed it."""
    if not engine.apply(logged.changes, logged.revision):
        return False
    schedule_for(engine).committed(logged.changes, logged.expiries)
    if logged.tokens_ended:
        _tokens_ended(state)
    return True


def apply_committed(
    engine: DecisionEngine,
    session: Session,
    changes: Sequence[Change],
    revision: int,
    tokens_ended: bool = False,
    before: Sequence[changelog.Logged] | None = None,
) -> None:
    """Bring ``engine`` to ``revision``, just committed through ``session`` with
    ``changes`` (and ending service tokens, if ``tokens_ended``), applying others'
    revisions in between first (``before``, if the change's statement read them all);
    then announce it to the other replicas."""
    state = state_of(engine)
    if tokens_ended:
        _tokens_ended(state)  # before anything that may wait: the next call is refused
    with state.lock:
        if not state.tracked:
            if not engine.apply(changes, revision):
                _reload(engine, session, state)
        elif revision > engine.revision:
            try:
                # Revisions committed by others in between are applied first, in order.
                in_order = revision == engine.revision + 1 or _fill_after_commit(
                    engine, session, revision - 1, state, before
                )
                if not (in_order and engine.apply(changes, revision)):
                    _reload(engine, session, state)
            except Exception:
                # The change is committed: the caller must hear so. The database went
                # away just after; the revision check applies it when it is back.
                log.exception("could not bring the engine to revision %s yet", revision)
                state.wake.set()
        # else: the poller applied it from the log already (it saw the commit first).
    if state.publish is not None:
        state.publish(revision)


def apply_notice(
    engine: DecisionEngine,
    db: Engine,
    session_factory: sessionmaker[Session],
    settings: Settings,
    notified: int,
) -> bool:
    """A notice said revision ``notified`` was committed: apply every logged revision
    after the engine's in one read (the fast path of :func:`catch_up`, to which it falls
    back when the log cannot bring the engine to ``notified``); True if anything changed."""
    state = state_of(engine)
    with state.lock:
        if engine.revision >= notified and not engine.is_behind(notified):
            return False
        started = time.monotonic()
        try:
            with session_factory() as session:
                revisions = changelog.read_after(session, engine.revision)
                applied = revisions is not None and all(
                    _apply_logged(engine, logged, state) for logged in revisions
                )
                session.rollback()
        except Exception as exc:
            _database_failed(state, exc)
            raise
        if applied and revisions and engine.revision >= notified:
            state.incremental_applies += len(revisions)
            # Everything committed when the read began is in the log it returned.
            _database_reached(state, engine.revision, started)
            return True
    return catch_up(engine, db, session_factory, settings)


def _database_failed(state: SyncState, exc: Exception) -> None:
    if state.database_ok:
        log.warning("database unreachable, answering from memory: %s", exc)
    state.database_ok = False
    state.database_error = type(exc).__name__
    state.database_silent = is_silence(exc)


def _database_reached(state: SyncState, revision: int, started: float) -> None:
    if not state.database_ok:
        log.warning("database reachable again at revision %s", revision)
    state.database_ok = True
    state.database_error = ""
    state.database_silent = False
    state.database_revision = max(state.database_revision, revision)
    state.confirmed_at = max(state.confirmed_at, started)


def catch_up(
    engine: DecisionEngine, db: Engine, session_factory: sessionmaker[Session], settings: Settings
) -> bool:
    """Bring ``engine`` to the committed revision, from the log where it can; True if it
    changed anything. Raises if the database cannot be reached (and records that)."""
    state = state_of(engine)
    with state.lock:
        started = time.monotonic()
        before = (engine.revision, state.full_reloads)
        try:
            with session_factory() as session:
                revision = committed_revision(session)
                if engine.is_behind(revision):
                    filled = _fill_from_log(engine, session, revision, state)
                    if not filled or engine.is_behind(revision):
                        _reload(engine, session, state)
                        log.info("engine reloaded at revision %s", engine.revision)
                session.rollback()
        except Exception as exc:
            _database_failed(state, exc)
            raise
        _database_reached(state, revision, started)
        state.database_revision = revision
        return (engine.revision, state.full_reloads) != before


class RevisionPoller:
    """A daemon thread calling :func:`catch_up` every ``interval`` seconds, and at once
    when woken (a change notice arrived, or a caller waits for a revision)."""

    def __init__(
        self,
        engine: DecisionEngine,
        db: Engine,
        session_factory: sessionmaker[Session],
        settings: Settings,
    ) -> None:
        self._args = (engine, db, session_factory, settings)
        self.state = state_of(engine)
        self.state.tracked = True
        self._interval = settings.revision_poll_seconds if settings.revision_poll_seconds > 0 else 2
        # Three checks missed (each may take up to the database call bound as well).
        self.state.stale_after = 3 * self._interval + settings.database_call_timeout_seconds
        self._stop = threading.Event()
        self._thread = self._new_thread()

    def _new_thread(self) -> threading.Thread:
        return threading.Thread(target=self._run, name="ringfence-revision-poll", daemon=True)

    def start(self) -> RevisionPoller:
        self._thread.start()
        return self

    def restart_after_fork(self) -> None:
        """Threads do not survive ``fork`` (a preloading server): start a new one."""
        self._stop = threading.Event()
        self._thread = self._new_thread()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.state.wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._interval + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.state.wake.wait(self._interval)
            self.state.wake.clear()
            if self._stop.is_set():
                return
            try:
                catch_up(*self._args)
            except Exception:
                # The database may be away for a while: keep answering from memory (in
                # stale mode) and try again at the next tick. catch_up logged it.
                log.debug("revision check failed", exc_info=True)


def wait_for_revision(engine: DecisionEngine, revision: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``engine`` to reach ``revision``, asking the
    poller to check at once; True if it did."""
    if engine.revision >= revision:
        return True
    state = state_of(engine)
    state.wake.set()
    deadline = time.monotonic() + timeout
    while engine.revision < revision:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(0.002, remaining))
    return True
