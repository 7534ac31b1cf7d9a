"""Scheduled upkeep on the database (:class:`gateway.notifier.Housekeeping`): ended
time-limited grants, review campaigns past their deadline, the periodic review, verified
email domains' TXT records looked up again, remembered browsers that ended.

Each run uses the services with the system as the actor, on an engine that is caught up
with the database first (the worker's engine only learns of changes by polling)."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gateway.config import Settings
from gateway.db.session import make_engine, make_session_factory
from gateway.engine.engine import DecisionEngine
from gateway.replication.loading import load_engine
from gateway.replication.sync import catch_up
from gateway.services.base import SYSTEM
from gateway.services.delivery import _Silent


class DatabaseHousekeeping:
    def __init__(
        self,
        db: Engine,
        session_factory: sessionmaker[Session],
        engine: DecisionEngine,
        settings: Settings,
    ) -> None:
        self.db = db
        self.session_factory = session_factory
        self.engine = engine
        self.settings = settings

    def _services(self, session: Session) -> Any:
        from gateway.services import Services

        catch_up(self.engine, self.db, self.session_factory, self.settings)
        return Services(session, self.engine, _Silent(), self.settings)

    def expire_grants(self) -> int:
        with self.session_factory() as session:
            return int(self._services(session).grants.expire_ended(SYSTEM))

    def close_due_reviews(self) -> int:
        with self.session_factory() as session:
            return int(self._services(session).reviews.close_due(SYSTEM))

    def start_due_review(self) -> int | None:
        with self.session_factory() as session:
            view = self._services(session).reviews.start_due(
                SYSTEM,
                self.settings.review_every_days,
                self.settings.review_deadline_days,
                self.settings.review_on_deadline,
            )
            return None if view is None else int(view.campaign.id)

    def recheck_domains(self) -> int:
        with self.session_factory() as session:
            return int(self._services(session).sso_domains.recheck_due())

    def forget_ended_devices(self) -> int:
        with self.session_factory() as session:
            return int(self._services(session).remembered_devices.forget_ended())


class WorkerHousekeeping:
    """For a Celery worker: connects lazily, once per process (prefork children must not
    share the parent's connections), with an engine loaded from the database."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pid = 0
        self._current: DatabaseHousekeeping | None = None

    def _get(self) -> DatabaseHousekeeping:
        if self._current is None or self._pid != os.getpid():
            db = make_engine(self.settings.sqlalchemy_url)
            factory = make_session_factory(db)
            with factory() as session:
                engine = load_engine(db, session, self.settings)
            self._current = DatabaseHousekeeping(db, factory, engine, self.settings)
            self._pid = os.getpid()
        return self._current

    def expire_grants(self) -> int:
        return self._get().expire_grants()

    def close_due_reviews(self) -> int:
        return self._get().close_due_reviews()

    def start_due_review(self) -> int | None:
        return self._get().start_due_review()

    def recheck_domains(self) -> int:
        return self._get().recheck_domains()

    def forget_ended_devices(self) -> int:
        return self._get().forget_ended_devices()


def housekeeping_for_settings(settings: Settings) -> WorkerHousekeeping:
    """Entry point ``ringfence.housekeeping`` (for ``celery -A mailer.worker``)."""
    return WorkerHousekeeping(settings)
