"""Email that neither stops nor doubles (issue 25): exactly-once over SMTP is impossible,
so duplicates are kept to the truly ambiguous moment (the server took DATA and the
worker died before writing that down; such a copy keeps its Message-ID:
tests/unit/test_mailer.py). Real SMTP (aiosmtpd on loopback), the gateway's own delivery
ledger on SQLite and PostgreSQL, the real ``deliver_message`` task."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from sqlalchemy.orm import Session as DbSession

from gateway.config import Settings
from gateway.db.models import DeliveryStatus, OutboxMessage
from gateway.db.session import make_engine
from mailer.delivery import current_ledger
from mailer.tasks import deliver_message
from tests.helpers import LiveServer, create_workspaces, invite
from tests.smtp_support import SlowMailbox, running_smtp


@pytest.fixture
def mailbox() -> SlowMailbox:
    return SlowMailbox()


@pytest.fixture
def settings(settings: Settings, mailbox: SlowMailbox, celery_conf: None) -> Iterator[Settings]:
    with running_smtp(mailbox) as port:
        yield replace(
            settings,
            smtp_host="127.0.0.1",
            smtp_port=port,
            smtp_security="none",
            smtp_timeout=10.0,
            # Renewed every third of it: on two cores shared by the suite's workers a
            # renewal can come late (a 0.4 s lease lapsed once in CI, then a 1 s one
            # under load 7, its renewal over 0.67 s late).
            mail_claim_lease_seconds=2.0,
            # No broker answers: each invitation's email waits in the outbox, and the
            # test runs the delivery task itself, as a worker would.
            broker_url="redis://127.0.0.1:1/0",
        )


def outbox_status(server: LiveServer, message_id: int) -> DeliveryStatus:
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with DbSession(db) as session:
            message = session.get(OutboxMessage, message_id)
            assert message is not None
            return message.status
    finally:
        db.dispose()


def newest_message_id(server: LiveServer) -> int:
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with DbSession(db) as session:
            return max(m.id for m in session.query(OutboxMessage).all())
    finally:
        db.dispose()


def test_a_send_is_recorded_before_quit(server: LiveServer, mailbox: SlowMailbox) -> None:
    """A worker that dies while the server takes its time over QUIT (or before it wrote
    its outcome) has recorded the send already: nothing takes the message over again."""
    admin = server.admin()
    create_workspaces(admin, "acme")
    invite(admin, "ann@example.com", [("acme", "viewer")])
    message_id = newest_message_id(server)
    mailbox.quit_gate.clear()

    worker = threading.Thread(target=deliver_message.apply, args=((message_id,),))
    worker.start()
    try:
        assert mailbox.quitting.wait(10), "the worker never reached QUIT"
        # The worker is stuck in QUIT (or would die here): the outcome is on record.
        assert outbox_status(server, message_id) == DeliveryStatus.SENT
        assert current_ledger().unsent(older_than_seconds=0) == []
        assert current_ledger().claim(message_id) is None
    finally:
        mailbox.quit_gate.set()
        worker.join(timeout=30)
    assert len(mailbox.messages()) == 1


def test_a_slow_send_keeps_its_claim(server: LiveServer, mailbox: SlowMailbox) -> None:
    """A live worker renews its claim while a slow server takes DATA: the sweep does not
    take the message over (and send it twice) however long the lease has run out."""
    admin = server.admin()
    create_workspaces(admin, "acme")
    invite(admin, "bo@example.com", [("acme", "viewer")])
    message_id = newest_message_id(server)
    mailbox.data_delay = 3.2  # more than one and a half leases: unrenewed, a claim lapses

    worker = threading.Thread(target=deliver_message.apply, args=((message_id,),))
    worker.start()
    deadline = time.monotonic() + 10
    while outbox_status(server, message_id) != DeliveryStatus.SENDING:
        assert time.monotonic() < deadline, "never claimed"
        time.sleep(0.02)
    deadline = time.monotonic() + 3.0  # past the first lease's end, and renewals' checks
    while time.monotonic() < deadline:
        assert current_ledger().unsent(older_than_seconds=0) == [], "taken over while sending"
        assert current_ledger().claim(message_id) is None
        time.sleep(0.1)
    worker.join(timeout=30)
    assert outbox_status(server, message_id) == DeliveryStatus.SENT
    assert len(mailbox.messages()) == 1
