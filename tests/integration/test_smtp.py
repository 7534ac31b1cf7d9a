"""SMTP delivery against a real SMTP server (aiosmtpd on loopback); no mocks."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import Envelope

import mailer.delivery
from gateway.config import Settings
from gateway.notifier import InvitationNotice
from gateway.notifier import TestOutcome as SendTestOutcome
from mailer.celery_app import mail_config
from mailer.configure import configure_celery
from mailer.messages import render_invitation
from mailer.notifier import CeleryNotifier
from mailer.smtp_check import NO_SMTP_SERVER
from mailer.tasks import MAX_ATTEMPTS, deliver_message
from mailer.transport import PermanentDeliveryError, SmtpTransport, TransientDeliveryError
from tests.ledger_fake import MemoryLedger
from tests.smtp_support import DATA_REPLY, REFUSAL, Mailbox, running_smtp

MAIL_FROM = "Ringfence <no-reply@ringfence.test>"
ACCEPT_URL = "https://ringfence.test/invitations/accept?token=tok-123"


class Server:
    def __init__(self, handler: Mailbox, port: int) -> None:
        self.handler = handler
        self.port = port

    def transport(self, **overrides: Any) -> SmtpTransport:
        options: dict[str, Any] = {"security": "none", "timeout": 5.0, **overrides}
        return SmtpTransport("127.0.0.1", self.port, **options)

    def settings(self, tmp_path: Path) -> Settings:
        return Settings(
            instance_dir=tmp_path,
            smtp_host="127.0.0.1",
            smtp_port=self.port,
            smtp_security="none",
            smtp_timeout=5.0,
            mail_from=MAIL_FROM,
        )


@pytest.fixture
def serve() -> Iterator[Callable[[Mailbox], Server]]:
    """Start an aiosmtpd server with a given handler; stopped after the test."""
    with ExitStack() as started:

        def start(handler: Mailbox) -> Server:
            return Server(handler, started.enter_context(running_smtp(handler)))

        yield start


@pytest.fixture
def eager(tmp_path: Path, celery_conf: None) -> None:
    """Celery without a broker: tasks run in the caller's thread."""
    configure_celery(Settings(instance_dir=tmp_path))


def install(monkeypatch: pytest.MonkeyPatch, transport: dict[str, Any]) -> MemoryLedger:
    """A fresh in-memory ledger for the tasks, sending through ``transport``."""
    ledger = MemoryLedger(transport)
    monkeypatch.setattr(mailer.delivery, "_ledgers", [ledger])
    return ledger


def closed_port() -> socket.socket:
    """A socket bound but not listening: connections to its port are refused, and nobody
    else can take the port while it is open."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def make_notice(**overrides: Any) -> InvitationNotice:
    values: dict[str, Any] = {
        "invitation_id": 42,
        "to_address": "sam@example.org",
        "to_name": "Sam Rivera",
        "inviter_name": "Alex Chen",
        "grants": (("Acme", "editor"),),
        "accept_url": ACCEPT_URL,
        "expires_at": "2026-12-04T20:57:00Z",
    }
    values.update(overrides)
    return InvitationNotice(**values)


def received(envelope: Envelope) -> EmailMessage:
    assert isinstance(envelope.content, bytes)
    message = message_from_bytes(envelope.content, policy=default_policy)
    assert isinstance(message, EmailMessage)
    return message


def body(message: EmailMessage, kind: str) -> str:
    part = message.get_body((kind,))
    assert isinstance(part, EmailMessage)
    return str(part.get_content())


# -- SmtpTransport ---------------------------------------------------------------------


def test_smtp_transport_delivers(serve: Callable[[Mailbox], Server]) -> None:
    server = serve(Mailbox())

    outcome = server.transport().send(render_invitation(make_notice(), MAIL_FROM))

    assert (
        outcome == f"SMTP 127.0.0.1:{server.port} accepted the message: 250 2.0.0 Queued as TEST1"
    )
    (envelope,) = server.handler.envelopes
    assert envelope.mail_from == "no-reply@ringfence.test"
    assert envelope.rcpt_tos == ["sam@example.org"]
    message = received(envelope)
    assert message["Subject"] == "Alex Chen invited you to Ringfence"
    assert message["X-Ringfence-Invitation"] == "42"
    assert ACCEPT_URL in body(message, "plain")
    assert ACCEPT_URL in body(message, "html")
    assert "4 December 2026 at 20:57 UTC" in body(message, "plain")


def test_rejected_recipient_is_permanent_with_reply_text(
    serve: Callable[[Mailbox], Server],
) -> None:
    server = serve(Mailbox(rcpt_refusal=REFUSAL))

    with pytest.raises(PermanentDeliveryError) as caught:
        server.transport().send(render_invitation(make_notice(), MAIL_FROM))

    assert caught.value.code == 550
    assert "550 5.1.1 mailbox unavailable" in caught.value.reply
    assert "550 5.1.1 mailbox unavailable" in str(caught.value)
    assert server.handler.envelopes == []


def test_rejected_data_5xx_is_permanent(serve: Callable[[Mailbox], Server]) -> None:
    server = serve(Mailbox(data_reply="550 5.1.1 mailbox unavailable"))

    with pytest.raises(PermanentDeliveryError) as caught:
        server.transport().send(render_invitation(make_notice(), MAIL_FROM))

    assert caught.value.code == 550
    assert caught.value.reply == "550 5.1.1 mailbox unavailable"


def test_rejected_data_4xx_is_transient(serve: Callable[[Mailbox], Server]) -> None:
    server = serve(Mailbox(data_reply="451 4.3.0 try again later"))

    with pytest.raises(TransientDeliveryError) as caught:
        server.transport().send(render_invitation(make_notice(), MAIL_FROM))

    assert caught.value.code == 451
    assert caught.value.reply == "451 4.3.0 try again later"


def test_closed_port_is_transient() -> None:
    # Bound but not listening: connections are refused, and nobody else can take the
    # port while the test runs.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        transport = SmtpTransport("127.0.0.1", port, security="none", timeout=2.0)

        with pytest.raises(TransientDeliveryError, match="unreachable"):
            transport.send(render_invitation(make_notice(), MAIL_FROM))


def test_silent_server_times_out_as_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()  # accepts the connection, never sends a greeting
        port = sock.getsockname()[1]
        transport = SmtpTransport("127.0.0.1", port, security="none", timeout=0.5)

        with pytest.raises(TransientDeliveryError):
            transport.send(render_invitation(make_notice(), MAIL_FROM))


def test_starttls_not_offered_is_permanent(serve: Callable[[Mailbox], Server]) -> None:
    server = serve(Mailbox())  # no TLS context, so no STARTTLS in EHLO

    with pytest.raises(PermanentDeliveryError, match="STARTTLS"):
        server.transport(security="starttls").send(render_invitation(make_notice(), MAIL_FROM))


# -- deliver_message through Celery --------------------------------------------------


def test_eager_delivery_over_smtp(
    serve: Callable[[Mailbox], Server],
    tmp_path: Path,
    eager: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = serve(Mailbox())
    ledger = install(monkeypatch, mail_config(server.settings(tmp_path)))
    message_id = ledger.add(make_notice())
    caplog.set_level(logging.INFO, logger="ringfence.mailer")

    result = deliver_message.delay(message_id).get()

    detail = f"SMTP 127.0.0.1:{server.port} accepted the message: 250 2.0.0 Queued as TEST1"
    assert result == {"status": "sent", "detail": detail}
    assert ledger.sent == {message_id: detail}
    (envelope,) = server.handler.envelopes
    assert envelope.rcpt_tos == ["sam@example.org"]
    assert ACCEPT_URL in body(received(envelope), "plain")
    assert not (tmp_path / "outbox").exists()
    # Over SMTP the accept link is a credential in someone's inbox, not in our logs.
    assert ACCEPT_URL not in caplog.text
    # A redelivered task does not send it again.
    assert deliver_message.delay(message_id).get() == {"status": "skipped"}
    assert len(server.handler.envelopes) == 1


def test_reminder_over_smtp(
    serve: Callable[[Mailbox], Server],
    tmp_path: Path,
    eager: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = serve(Mailbox())
    ledger = install(monkeypatch, mail_config(server.settings(tmp_path)))

    deliver_message.delay(ledger.add(make_notice(), kind="reminder")).get()

    (envelope,) = server.handler.envelopes
    message = received(envelope)
    assert message["Subject"] == "Reminder: Alex Chen invited you to Ringfence"
    assert ACCEPT_URL in body(message, "plain")


def test_notifier_delivers_over_smtp(
    serve: Callable[[Mailbox], Server],
    tmp_path: Path,
    eager: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = serve(Mailbox())
    ledger = install(monkeypatch, mail_config(server.settings(tmp_path)))
    message_id = ledger.add(make_notice(invitation_id=9, to_address="kim@example.org"))

    CeleryNotifier().message_queued(message_id)

    (envelope,) = server.handler.envelopes
    assert envelope.rcpt_tos == ["kim@example.org"]
    assert received(envelope)["X-Ringfence-Invitation"] == "9"
    assert message_id in ledger.sent


def test_rejected_recipient_is_a_final_failure_at_once(
    serve: Callable[[Mailbox], Server],
    tmp_path: Path,
    eager: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = serve(Mailbox(rcpt_refusal=REFUSAL))
    ledger = install(monkeypatch, mail_config(server.settings(tmp_path)))
    message_id = ledger.add(make_notice())

    result = deliver_message.delay(message_id).get()

    assert result["status"] == "failed"
    ((failed_id, reason, final),) = ledger.failures
    assert (failed_id, final) == (message_id, True)
    assert "550 5.1.1 mailbox unavailable" in reason
    errors = [r for r in caplog.records if r.name == "ringfence.mailer"]
    assert [r.levelno for r in errors] == [logging.ERROR]
    assert "550 5.1.1 mailbox unavailable" in errors[0].getMessage()


def test_rejected_recipient_is_final_outside_eager_too(
    serve: Callable[[Mailbox], Server],
    tmp_path: Path,
    celery_conf: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = serve(Mailbox(rcpt_refusal=REFUSAL))
    ledger = install(monkeypatch, mail_config(server.settings(tmp_path)))
    message_id = ledger.add(make_notice())

    result = deliver_message(message_id)  # as in a worker: no retry for a 5xx

    assert result["status"] == "failed"
    assert [(i, final) for i, _, final in ledger.failures] == [(message_id, True)]


def test_closed_port_when_eager_is_a_final_failure_with_the_reason(
    tmp_path: Path, eager: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with closed_port() as sock:
        port = sock.getsockname()[1]
        transport = {
            **mail_config(Settings(instance_dir=tmp_path)),
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_security": "none",
            "smtp_timeout": 2.0,
        }
        ledger = install(monkeypatch, transport)
        message_id = ledger.add(make_notice())

        result = deliver_message.delay(message_id).get()  # must not raise

    assert result["status"] == "failed"
    ((failed_id, reason, final),) = ledger.failures
    assert (failed_id, final) == (message_id, True)
    assert reason.startswith(f"SMTP 127.0.0.1:{port} unreachable")
    assert result["reason"] == reason
    assert ledger.sent == {}


def test_eager_does_not_retry_a_transient_failure_in_place(
    serve: Callable[[Mailbox], Server],
    tmp_path: Path,
    eager: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = serve(Mailbox(data_reply="451 4.3.0 try again later"))
    ledger = install(monkeypatch, mail_config(server.settings(tmp_path)))
    message_id = ledger.add(make_notice())

    result = deliver_message.delay(message_id).get()

    assert result["status"] == "failed"
    assert "451 4.3.0" in result["reason"]
    assert [(i, final) for i, _, final in ledger.failures] == [(message_id, True)]
    assert server.handler.data_attempts == 1  # eager "retries" would have no back-off


def test_transient_failure_outside_eager_is_recorded_and_retried(
    serve: Callable[[Mailbox], Server],
    tmp_path: Path,
    celery_conf: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = serve(Mailbox(data_reply="451 4.3.0 try again later"))
    ledger = install(monkeypatch, mail_config(server.settings(tmp_path)))
    message_id = ledger.add(make_notice())

    # Called directly, the task runs as in a worker (not eager); Celery's retry()
    # re-raises the original error when there is no worker to schedule the retry on.
    with pytest.raises(TransientDeliveryError):
        deliver_message(message_id)

    ((failed_id, reason, final),) = ledger.failures
    assert (failed_id, final) == (message_id, False)
    assert "451 4.3.0 try again later" in reason
    assert ledger.status[message_id] == "retry"
    assert any(f"delivery deferred (attempt 1 of {MAX_ATTEMPTS}" in m for m in caplog.messages)

    # The retry claims it again and, the server having recovered, sends it.
    server.handler.data_reply = DATA_REPLY
    assert deliver_message(message_id)["status"] == "sent"
    assert len(server.handler.envelopes) == 1


# -- send_test -------------------------------------------------------------------------


def test_send_test_over_smtp(serve: Callable[[Mailbox], Server], tmp_path: Path) -> None:
    server = serve(Mailbox())

    outcome = CeleryNotifier().send_test("ops@example.org", mail_config(server.settings(tmp_path)))

    assert outcome.ok is True
    assert outcome.detail == "250 2.0.0 Queued as TEST1"  # the reply to DATA only
    (envelope,) = server.handler.envelopes
    assert envelope.mail_from == "no-reply@ringfence.test"
    assert envelope.rcpt_tos == ["ops@example.org"]
    message = received(envelope)
    assert message["Subject"] == "Ringfence test email"
    assert message["From"] == MAIL_FROM
    assert "test email from Ringfence" in message.get_content()


def test_send_test_reports_a_rejection(serve: Callable[[Mailbox], Server], tmp_path: Path) -> None:
    server = serve(Mailbox(rcpt_refusal=REFUSAL))

    outcome = CeleryNotifier().send_test(
        "nobody@example.org", mail_config(server.settings(tmp_path))
    )

    assert outcome.ok is False
    assert "550 5.1.1 mailbox unavailable" in outcome.detail


def test_send_test_to_a_closed_port_says_no_smtp_server(tmp_path: Path) -> None:
    with closed_port() as sock:
        port = sock.getsockname()[1]
        transport = {
            **mail_config(Settings(instance_dir=tmp_path)),
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_security": "none",
            "smtp_timeout": 2.0,
            "smtp_test_connect_seconds": 0.5,  # every such outcome waits this long
        }

        outcome = CeleryNotifier().send_test("ops@example.org", transport)  # must not raise

    # Fixed words, the same as for any peer that is not an SMTP server (mailer.smtp_check).
    assert outcome == SendTestOutcome(ok=False, detail=NO_SMTP_SERVER)
