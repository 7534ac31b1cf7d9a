"""The delivery ledger: the outbox table as the mail tasks see it
(:class:`gateway.notifier.DeliveryLedger`).

Each claim is a conditional update, so a message is sent at most once per attempt
however often its task is delivered; each outcome is recorded on the message and on its
invitation, and audited.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from gateway import metrics
from gateway.config import Settings
from gateway.db.models import DeliveryStatus, Invitation, MailWorker, OutboxMessage, utcnow
from gateway.db.session import make_engine, make_session_factory
from gateway.engine.engine import DecisionEngine
from gateway.identity.security import unseal
from gateway.notifier import AUDIT, Notifier, Outgoing, StreamBatch, TestOutcome
from gateway.services.base import SYSTEM, UnitOfWork
from gateway.services.invitations import audit_each_workspace
from gateway.services.streams import StreamDesk

# Longer than the largest retry back-off: a retry still waiting this long was lost.
RETRY_LOST_AFTER = timedelta(minutes=15)


class _Silent:
    """The ledger's own services publish nothing: the task that asked delivers."""

    def message_queued(self, message_id: int) -> None:
        return None

    def send_test(self, to_address: str, transport: dict[str, Any]) -> TestOutcome:
        raise NotImplementedError


class DatabaseLedger:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        engine: DecisionEngine,
        settings: Settings,
    ) -> None:
        self.session_factory = session_factory
        self.engine = engine
        self.settings = settings
        self.streams = StreamDesk(session_factory, settings)

    # The event streams' ledger (gateway.notifier.StreamLedger), on the same database.

    def streams_due(self) -> list[int]:
        return self.streams.streams_due()

    def streams_wait(self) -> float | None:
        return self.streams.streams_wait()

    def claim_stream(self, stream_id: int) -> StreamBatch | None:
        return self.streams.claim_stream(stream_id)

    def record_stream(
        self,
        stream_id: int,
        token: str,
        cursor: int,
        count: int,
        error: str | None,
        lane: str = AUDIT,
    ) -> None:
        self.streams.record_stream(stream_id, token, cursor, count, error, lane)

    def _services(self, session: Session) -> Any:
        from gateway.services import Services

        notifier: Notifier = _Silent()
        return Services(session, self.engine, notifier, self.settings)

    def claim(self, message_id: int) -> Outgoing | None:
        """The message to send now, or None if sent, failed or being sent already."""
        now = utcnow()
        with self.session_factory() as session:
            claimed = session.execute(
                update(OutboxMessage)
                .where(
                    OutboxMessage.id == message_id,
                    or_(
                        OutboxMessage.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.RETRY]),
                        (OutboxMessage.status == DeliveryStatus.SENDING)
                        & (OutboxMessage.claimed_at < now - self._lease()),
                    ),
                )
                .values(
                    status=DeliveryStatus.SENDING,
                    attempts=OutboxMessage.attempts + 1,
                    claimed_at=now,
                )
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return None
            message = session.get(OutboxMessage, message_id)
            assert message is not None and message.sealed_payload is not None
            payload = unseal(self.settings.secret_key, message.sealed_payload)
            transport = self._services(session).settings.transport_config()
            session.commit()
            return Outgoing(message.id, message.kind, payload, transport, message.attempts)

    def worker_seen(self, name: str) -> None:
        with self.session_factory() as session:
            session.merge(MailWorker(name=name[:255], seen_at=utcnow()))
            session.commit()

    def worker_gone(self, name: str) -> None:
        with self.session_factory() as session:
            session.execute(delete(MailWorker).where(MailWorker.name == name[:255]))
            session.commit()

    def renew(self, message_id: int) -> None:
        with self.session_factory() as session:
            session.execute(
                update(OutboxMessage)
                .where(
                    OutboxMessage.id == message_id,
                    OutboxMessage.status == DeliveryStatus.SENDING,
                )
                .values(claimed_at=utcnow())
            )
            session.commit()

    def _lease(self) -> timedelta:
        # A claim older than this belongs to a worker that died mid-send (a live one
        # renews it while sending).
        return timedelta(seconds=self.settings.mail_claim_lease_seconds)

    def record_sent(self, message_id: int, detail: str) -> None:
        self._record(message_id, DeliveryStatus.SENT, detail)

    def record_failure(self, message_id: int, reason: str, *, final: bool) -> None:
        metrics.MAIL_DELIVERY_FAILURES.labels("failed" if final else "retry").inc()
        self._record(message_id, DeliveryStatus.FAILED if final else DeliveryStatus.RETRY, reason)

    def _record(self, message_id: int, status: DeliveryStatus, detail: str) -> None:
        with self.session_factory() as session:
            message = session.get(OutboxMessage, message_id)
            if message is None:
                return
            uow = UnitOfWork(session, self.engine)
            with uow.change(SYSTEM) as changes:
                message.status = status
                message.detail = detail[:2000]
                if status == DeliveryStatus.SENT:
                    message.sent_at = utcnow()
                if status in (DeliveryStatus.SENT, DeliveryStatus.FAILED):
                    message.sealed_payload = None  # the link is not kept once it is out
                invitation = (
                    session.get(Invitation, message.invitation_id)
                    if message.invitation_id
                    else None
                )
                if invitation is None:
                    return
                # Only the latest message speaks for the invitation (a resend replaces it).
                latest = session.scalar(
                    select(OutboxMessage.id)
                    .where(OutboxMessage.invitation_id == invitation.id)
                    .order_by(OutboxMessage.id.desc())
                    .limit(1)
                )
                if latest != message.id:
                    return
                invitation.delivery_status = status
                invitation.delivery_detail = message.detail
                invitation.delivery_attempts = message.attempts
                if status == DeliveryStatus.SENT:
                    invitation.sent_at = message.sent_at
                if status in (DeliveryStatus.SENT, DeliveryStatus.FAILED):
                    audit_each_workspace(
                        changes,
                        invitation,
                        f"invitation.{status}",
                        after={
                            "kind": message.kind,
                            "detail": message.detail,
                            "attempts": message.attempts,
                        },
                    )

    def unsent(self, older_than_seconds: float) -> list[int]:
        """Messages whose task was lost: queued too long, or claimed or retrying by a
        worker that is gone."""
        now = utcnow()
        with self.session_factory() as session:
            return list(
                session.scalars(
                    select(OutboxMessage.id)
                    .where(
                        or_(
                            (OutboxMessage.status == DeliveryStatus.QUEUED)
                            & (
                                OutboxMessage.created_at
                                < now - timedelta(seconds=older_than_seconds)
                            ),
                            (OutboxMessage.status == DeliveryStatus.SENDING)
                            & (OutboxMessage.claimed_at < now - self._lease()),
                            (OutboxMessage.status == DeliveryStatus.RETRY)
                            & (OutboxMessage.claimed_at < now - self._retry_lost_after()),
                        )
                    )
                    .order_by(OutboxMessage.id)
                    .limit(1000)
                )
            )

    def _retry_lost_after(self) -> timedelta:
        # A retry may rightly wait up to the longest back-off; only past twice that is it lost.
        return max(
            RETRY_LOST_AFTER, timedelta(seconds=2 * self.settings.mail_retry_backoff_max_seconds)
        )

    def queue_reminders(self) -> list[int]:
        with self.session_factory() as session:
            return list(
                self._services(session).invitations.queue_reminders(
                    self.settings.reminder_after_days
                )
            )

    def housekeeping(self) -> dict[str, Any]:
        """Periodic upkeep (the ``ringfence.housekeeping`` task): audit the invitations
        that expired, forget the logout tokens of single sign-on connections whose
        replay is refused for their age anyway, and archive audit events past the
        retention period, if set."""
        done: dict[str, Any] = {}
        with self.session_factory() as session:
            done["invitations_expired"] = self._services(session).invitations.audit_expired()
        with self.session_factory() as session:
            done["sso_logout_tokens_pruned"] = self._services(session).sso_logout.prune()
        with self.session_factory() as session:
            archived = self._services(session).audit.archive(
                self.settings.audit_retention_days, self.settings.audit_archive_path
            )
            done["audit_archived"] = archived.count if archived else 0
            done["audit_archive"] = str(archived.path) if archived else None
        return done


class WorkerLedger:
    """The ledger for a Celery worker: connects lazily, once per process, because prefork
    workers must not share the parent's database connections."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pid = 0
        self._ledger: DatabaseLedger | None = None

    def _current(self) -> DatabaseLedger:
        if self._ledger is None or self._pid != os.getpid():
            db = make_engine(self.settings.sqlalchemy_url)
            # Deliveries change no rules; an empty engine is enough for the unit of work.
            engine = DecisionEngine(self.settings.model_path)
            self._ledger = DatabaseLedger(make_session_factory(db), engine, self.settings)
            self._pid = os.getpid()
        return self._ledger

    def claim(self, message_id: int) -> Outgoing | None:
        return self._current().claim(message_id)

    def worker_seen(self, name: str) -> None:
        self._current().worker_seen(name)

    def worker_gone(self, name: str) -> None:
        self._current().worker_gone(name)

    def renew(self, message_id: int) -> None:
        self._current().renew(message_id)

    def record_sent(self, message_id: int, detail: str) -> None:
        self._current().record_sent(message_id, detail)

    def record_failure(self, message_id: int, reason: str, *, final: bool) -> None:
        self._current().record_failure(message_id, reason, final=final)

    def unsent(self, older_than_seconds: float) -> list[int]:
        return self._current().unsent(older_than_seconds)

    def queue_reminders(self) -> list[int]:
        return self._current().queue_reminders()

    def housekeeping(self) -> dict[str, Any]:
        return self._current().housekeeping()

    def streams_due(self) -> list[int]:
        return self._current().streams_due()

    def streams_wait(self) -> float | None:
        return self._current().streams_wait()

    def claim_stream(self, stream_id: int) -> StreamBatch | None:
        return self._current().claim_stream(stream_id)

    def record_stream(
        self,
        stream_id: int,
        token: str,
        cursor: int,
        count: int,
        error: str | None,
        lane: str = AUDIT,
    ) -> None:
        self._current().record_stream(stream_id, token, cursor, count, error, lane)


def ledger_for_settings(settings: Settings) -> WorkerLedger:
    """Entry point ``ringfence.delivery_ledger`` (for ``celery -A mailer.worker``)."""
    return WorkerLedger(settings)
