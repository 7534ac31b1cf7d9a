"""Keeping the in-memory engine in step with changes made by other processes.

Changes made through this process reach the engine right after they commit. Changes
made elsewhere (the CLI, another gunicorn worker) are found by a periodic revision
check: when the database's revision is ahead of the engine's, or a revision was skipped,
the engine reloads. (Change notices through Redis, applied incrementally, come on top of
this fallback.)
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.config import Settings
from gateway.engine import DecisionEngine
from gateway.models import PolicyState

log = logging.getLogger("ringfence.sync")


def committed_revision(session: Session) -> int:
    return int(session.scalar(select(PolicyState.revision).where(PolicyState.id == 1)) or 0)


def catch_up(
    engine: DecisionEngine, db: Engine, session_factory: sessionmaker[Session], settings: Settings
) -> bool:
    """Reload ``engine`` if it is behind the database; True if it reloaded."""
    from gateway.services import reload_engine

    with session_factory() as session:
        revision = committed_revision(session)
        if not engine.is_behind(revision):
            return False
        reload_engine(engine, db, session)
    log.info("engine reloaded at revision %s (changes made by another process)", engine.revision)
    return True


class RevisionPoller:
    """A daemon thread calling :func:`catch_up` every ``interval`` seconds."""

    def __init__(
        self,
        engine: DecisionEngine,
        db: Engine,
        session_factory: sessionmaker[Session],
        settings: Settings,
    ) -> None:
        self._args = (engine, db, session_factory, settings)
        self._interval = settings.revision_poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="ringfence-revision-poll", daemon=True
        )

    def start(self) -> RevisionPoller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval + 5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                catch_up(*self._args)
            except Exception:
                # The database may be away for a while; keep answering from memory and
                # try again at the next tick.
                log.exception("revision check failed")
