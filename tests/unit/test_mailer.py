"""Unit tests for mailer: rendering, the outbox transport, payloads, the eager tasks
against an in-memory delivery ledger, the notifier and the worker wiring."""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest

import mailer.delivery
import mailer.worker
from gateway.config import Settings
from gateway.notifier import InvitationNotice, invitation_payload, notice_from_payload
from gateway.notifier import TestOutcome as SendTestOutcome
from mailer.celery_app import (
    REMINDER_SCHEDULE,
    SWEEP_SCHEDULE,
    celery_app,
    mail_config,
)
from mailer.configure import configure_celery
from mailer.delivery import DeliveryLedger, current_ledger, install_ledger, uninstall_ledger
from mailer.messages import render_invitation, render_notice, render_reminder
from mailer.notifier import CeleryNotifier
from mailer.tasks import (
    MAX_ATTEMPTS,
    RETRY_BACKOFF,
    RETRY_BACKOFF_MAX,
    SWEEP_AGE,
    backoff,
    deliver_message,
    send_reminders,
    sweep_unsent,
)
from mailer.transport import (
    OutboxTransport,
    SmtpTransport,
    TransientDeliveryError,
    in_words,
    transport_from_config,
)
from mailer.worker import prepare_worker, worker_argv
from tests.ledger_fake import MemoryLedger
from tests.smtp_support import Mailbox, running_smtp

MAIL_FROM = "Ringfence <no-reply@ringfence.test>"
ACCEPT_URL = "https://ringfence.test/invitations/accept?token=tok-123&x=1"


@pytest.fixture
def eager(tmp_path: Path, celery_conf: None) -> None:
    """Celery as in the embedded default: no broker, tasks run in the caller's thread."""
    configure_celery(Settings(instance_dir=tmp_path, mail_from=MAIL_FROM))


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MemoryLedger:
    """A fresh in-memory ledger for the tasks, delivering to the outbox tmp_path/outbox."""
    fake = MemoryLedger(mail_config(Settings(instance_dir=tmp_path, mail_from=MAIL_FROM)))
    monkeypatch.setattr(mailer.delivery, "_ledgers", [fake])
    return fake


def make_notice(**overrides: Any) -> InvitationNotice:
    values: dict[str, Any] = {
        "invitation_id": 42,
        "to_address": "sam@example.org",
        "to_name": "Sam Rivera",
        "inviter_name": "Alex Chen",
        "grants": (("Acme", "editor"), ("Globex", "viewer")),
        "accept_url": ACCEPT_URL,
        "expires_at": "2026-12-04T20:57:00+00:00",
    }
    values.update(overrides)
    return InvitationNotice(**values)


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert isinstance(text, EmailMessage) and isinstance(html, EmailMessage)
    return text.get_content(), html.get_content()


def read_eml(path: Path | str) -> EmailMessage:
    message = message_from_bytes(Path(path).read_bytes(), policy=default_policy)
    assert isinstance(message, EmailMessage)
    return message


# -- rendering -------------------------------------------------------------------------


def test_invitation_is_multipart_alternative_with_text_and_html() -> None:
    message = render_invitation(make_notice(), MAIL_FROM)

    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["Subject"] == "Alex Chen invited you to Ringfence"
    assert message["From"] == MAIL_FROM
    assert message["To"] == "Sam Rivera <sam@example.org>"
    assert message["X-Ringfence-Invitation"] == "42"
    assert re.fullmatch(r"<[^@>]+@ringfence\.test>", message["Message-ID"])


def test_invitation_names_people_workspaces_roles_link_and_expiry() -> None:
    text, html = parts(render_invitation(make_notice(), MAIL_FROM))

    assert "Sam Rivera" in text and "Alex Chen" in text
    assert "Acme: editor" in text and "Globex: viewer" in text
    assert ACCEPT_URL in text
    assert "4 December 2026 at 20:57 UTC" in text

    assert "Alex Chen" in html
    assert "<td" in html and "Acme" in html and "editor" in html and "Globex" in html
    # In HTML the & of the query string is an entity, in text it is not.
    assert 'href="https://ringfence.test/invitations/accept?token=tok-123&amp;x=1"' in html
    assert '<time datetime="2026-12-04T20:57:00+00:00">4 December 2026 at 20:57 UTC</time>' in html
    assert '<html lang="en">' in html


def test_html_part_escapes_names_text_part_keeps_them() -> None:
    notice = make_notice(
        inviter_name="<script>alert(1)</script>",
        to_name='Zoë "O\'Brien"',
        grants=(("R&D <main>", "admin"),),
    )
    message = render_invitation(notice, MAIL_FROM)
    text, html = parts(message)

    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "R&amp;D &lt;main&gt;" in html
    assert "Zoë" in html
    assert "<script>alert(1)</script> invited you" in text
    assert "R&D <main>: admin" in text
    assert message["Subject"] == "<script>alert(1)</script> invited you to Ringfence"


def test_newlines_in_names_cannot_inject_headers() -> None:
    message = render_invitation(
        make_notice(inviter_name="Eve\r\nBcc: victim@example.org"), MAIL_FROM
    )

    assert message["Bcc"] is None
    assert message["Subject"] == "Eve Bcc: victim@example.org invited you to Ringfence"


def test_invitation_without_inviter_or_grants_still_reads_well() -> None:
    message = render_invitation(make_notice(inviter_name="", to_name="", grants=()), MAIL_FROM)
    text, html = parts(message)

    assert message["Subject"] == "You are invited to Ringfence"
    assert message["To"] == "sam@example.org"
    assert "You have been invited to Ringfence." in text
    assert "<table" not in html


@pytest.mark.parametrize("url", ["javascript:alert(1)", "data:text/html,hi", "/relative"])
def test_render_refuses_non_http_links(url: str) -> None:
    with pytest.raises(ValueError, match="http"):
        render_invitation(make_notice(accept_url=url), MAIL_FROM)


# -- transports ------------------------------------------------------------------------


def test_outbox_writes_a_parseable_eml_file(tmp_path: Path) -> None:
    outbox = tmp_path / "instance" / "outbox"  # does not exist yet
    sent = render_invitation(make_notice(), MAIL_FROM)

    path = Path(OutboxTransport(outbox).send(sent))

    assert path.parent == outbox
    assert re.fullmatch(r"\d{8}T\d{6}\.\d{6}Z-invitation-42\.eml", path.name)
    assert [p.name for p in outbox.iterdir()] == [path.name]  # no temp file left over
    received = message_from_bytes(path.read_bytes(), policy=default_policy)
    assert isinstance(received, EmailMessage)
    assert received["Subject"] == sent["Subject"]
    assert received["X-Ringfence-Invitation"] == "42"
    text, html = parts(received)
    assert ACCEPT_URL in text
    assert "Acme" in html


def test_outbox_never_overwrites(tmp_path: Path) -> None:
    transport = OutboxTransport(tmp_path)
    message = render_invitation(make_notice(), MAIL_FROM)

    paths = {transport.send(message) for _ in range(5)}

    assert len(paths) == 5
    assert len(list(tmp_path.glob("*.eml"))) == 5


def test_transport_from_config_picks_smtp_only_with_a_host(tmp_path: Path) -> None:
    outbox = transport_from_config({"smtp_host": "", "outbox_dir": str(tmp_path)})
    smtp = transport_from_config(
        {
            "smtp_host": "mail.example.org",
            "smtp_port": 465,
            "smtp_security": "tls",
            "smtp_username": "u",
            "smtp_password": "secret-pw",
            "smtp_timeout": 3.0,
            "outbox_dir": str(tmp_path),
        }
    )

    assert outbox == OutboxTransport(tmp_path)
    assert isinstance(smtp, SmtpTransport)
    assert (smtp.host, smtp.port, smtp.security, smtp.timeout) == (
        "mail.example.org",
        465,
        "tls",
        3,
    )
    assert "secret-pw" not in repr(smtp)


def test_smtp_transport_rejects_unknown_security() -> None:
    with pytest.raises(ValueError, match="smtp_security"):
        SmtpTransport("mail.example.org", 25, security="ssl")


def test_reminder_says_so_in_subject_and_body() -> None:
    message = render_reminder(make_notice(), MAIL_FROM)
    text, html = parts(message)

    assert message["Subject"] == "Reminder: Alex Chen invited you to Ringfence"
    assert message["X-Ringfence-Invitation"] == "42"
    assert "A reminder: your invitation to Ringfence is still waiting for you." in text
    assert ACCEPT_URL in text
    assert "<title>Reminder: Alex Chen invited you to Ringfence</title>" in html
    assert "A reminder" in html
    # The invitation itself does not say it.
    assert "reminder" not in parts(render_invitation(make_notice(), MAIL_FROM))[0].lower()


def test_render_notice_picks_the_kind() -> None:
    invitation = render_notice("invitation", make_notice(), MAIL_FROM)
    reminder = render_notice("reminder", make_notice(inviter_name=""), MAIL_FROM)

    assert invitation["Subject"] == "Alex Chen invited you to Ringfence"
    assert reminder["Subject"] == "Reminder: You are invited to Ringfence"
    with pytest.raises(ValueError, match="newsletter"):
        render_notice("newsletter", make_notice(), MAIL_FROM)


# -- payloads and Celery ---------------------------------------------------------------


def test_payload_survives_json_round_trip() -> None:
    notice = make_notice()

    payload = json.loads(json.dumps(invitation_payload(notice)))

    assert payload["grants"] == [["Acme", "editor"], ["Globex", "viewer"]]
    assert notice_from_payload(payload) == notice
    # A newer producer may add fields; older workers ignore them.
    assert notice_from_payload({**payload, "locale": "fr"}) == notice


def test_configure_celery_is_eager_without_broker(tmp_path: Path, celery_conf: None) -> None:
    app = configure_celery(Settings(instance_dir=tmp_path, smtp_password="pw", mail_from=MAIL_FROM))

    assert app is celery_app
    assert app.conf.task_always_eager is True
    assert app.conf.task_eager_propagates is True
    assert app.conf.task_serializer == "json"
    assert app.conf.accept_content == ["json"]
    assert {
        "ringfence.deliver_message",
        "ringfence.sweep_unsent",
        "ringfence.send_reminders",
    } <= set(app.tasks)
    assert "ringfence.send_invitation_email" not in app.tasks


def test_configure_celery_uses_broker_when_set(tmp_path: Path, celery_conf: None) -> None:
    app = configure_celery(Settings(instance_dir=tmp_path, broker_url="redis://localhost:6379/0"))

    assert app.conf.broker_url == "redis://localhost:6379/0"
    assert app.conf.task_always_eager is False


def test_mail_config_is_the_transport_shape(tmp_path: Path) -> None:
    settings = Settings(instance_dir=tmp_path, smtp_password="pw", mail_from=MAIL_FROM)

    assert mail_config(settings) == {
        "smtp_host": "",
        "smtp_port": 587,
        "smtp_security": "starttls",
        "smtp_username": "",
        "smtp_password": "pw",
        "smtp_timeout": 10.0,
        "mail_from": MAIL_FROM,
        "outbox_dir": str(tmp_path / "outbox"),
    }


def test_redelivery_and_beat_configuration() -> None:
    conf = celery_app.conf

    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.broker_connection_retry_on_startup is True
    schedule = conf.beat_schedule
    assert schedule[SWEEP_SCHEDULE]["task"] == "ringfence.sweep_unsent"
    assert schedule[SWEEP_SCHEDULE]["schedule"] == 60
    assert schedule[REMINDER_SCHEDULE]["task"] == "ringfence.send_reminders"
    assert schedule[REMINDER_SCHEDULE]["schedule"] == 3600
    assert SWEEP_AGE == 60


def test_backoff_is_exponential_capped_and_jittered() -> None:
    assert (RETRY_BACKOFF, RETRY_BACKOFF_MAX, MAX_ATTEMPTS) == (30, 600, 6)
    for retries, ceiling in enumerate([30, 60, 120, 240, 480, 600, 600]):
        delays = {backoff(retries) for _ in range(50)}
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays), (retries, delays)
        assert len(delays) > 1  # jittered


# -- deliver_message (eager, outbox transport) -----------------------------------------


def test_deliver_writes_outbox_records_sent_and_logs_link(
    tmp_path: Path, eager: None, ledger: MemoryLedger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ringfence.mailer")
    message_id = ledger.add(make_notice())

    result = deliver_message.delay(message_id).get()

    assert result["status"] == "sent"
    (path,) = (tmp_path / "outbox").glob("*-invitation-42.eml")
    assert result["detail"] == str(path)
    assert ledger.sent == {message_id: str(path)}
    assert ledger.failures == []
    assert read_eml(path)["Subject"] == "Alex Chen invited you to Ringfence"
    assert (
        f"Invitation 42 for sam@example.org (message {message_id}): accept link {ACCEPT_URL}"
        in caplog.messages
    )


def test_second_delivery_of_the_same_message_is_skipped(
    tmp_path: Path, eager: None, ledger: MemoryLedger
) -> None:
    message_id = ledger.add(make_notice())

    first = deliver_message.delay(message_id).get()
    again = deliver_message.delay(message_id).get()

    assert first["status"] == "sent"
    assert again == {"status": "skipped"}
    assert ledger.claims == [message_id, message_id]
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1


def test_reminder_kind_is_sent_as_a_reminder(
    tmp_path: Path, eager: None, ledger: MemoryLedger
) -> None:
    message_id = ledger.add(make_notice(), kind="reminder")

    assert deliver_message.delay(message_id).get()["status"] == "sent"

    (path,) = (tmp_path / "outbox").glob("*.eml")
    reminder = read_eml(path)
    assert reminder["Subject"] == "Reminder: Alex Chen invited you to Ringfence"
    assert "A reminder" in parts(reminder)[0]


def test_outbox_write_failure_is_final_when_eager(
    tmp_path: Path, eager: None, ledger: MemoryLedger
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    ledger.transport["outbox_dir"] = str(blocker / "outbox")
    message_id = ledger.add(make_notice())

    result = deliver_message.delay(message_id).get()  # must not raise

    assert result["status"] == "failed"
    ((failed_id, reason, final),) = ledger.failures
    assert (failed_id, final) == (message_id, True)
    assert "cannot write the message" in reason
    assert result["reason"] == reason


def test_transient_failure_outside_eager_records_a_retry(
    tmp_path: Path, eager: None, ledger: MemoryLedger
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    ledger.transport["outbox_dir"] = str(blocker / "outbox")
    message_id = ledger.add(make_notice())

    # Called directly, the task runs as in a worker (not eager); Celery's retry()
    # re-raises the error when there is no worker to schedule the retry on.
    with pytest.raises(TransientDeliveryError):
        deliver_message(message_id)

    assert [(i, final) for i, _, final in ledger.failures] == [(message_id, False)]
    assert ledger.status[message_id] == "retry"


def test_transient_failure_on_the_last_attempt_is_final(
    tmp_path: Path, eager: None, ledger: MemoryLedger
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    ledger.transport["outbox_dir"] = str(blocker / "outbox")
    message_id = ledger.add(make_notice())
    ledger.attempts[message_id] = MAX_ATTEMPTS - 1  # earlier attempts, e.g. via the sweep

    result = deliver_message(message_id)  # not eager, yet no retry

    assert result["status"] == "failed"
    assert [(i, final) for i, _, final in ledger.failures] == [(message_id, True)]


def test_unexpected_error_is_recorded_and_raised(eager: None, ledger: MemoryLedger) -> None:
    message_id = ledger.add(make_notice())
    ledger.messages[message_id] = ("newsletter", ledger.messages[message_id][1])

    with pytest.raises(ValueError, match="newsletter"):
        deliver_message.delay(message_id)

    ((failed_id, reason, final),) = ledger.failures
    assert (failed_id, final) == (message_id, False)
    assert reason.startswith("unexpected error: ValueError")


def test_sweep_redelivers_exactly_the_unsent_messages(
    tmp_path: Path, eager: None, ledger: MemoryLedger
) -> None:
    lost = ledger.add(make_notice(invitation_id=1))
    sent = ledger.add(make_notice(invitation_id=2))
    in_flight = ledger.add(make_notice(invitation_id=3))
    also_lost = ledger.add(make_notice(invitation_id=4))
    deliver_message.delay(sent).get()
    assert ledger.claim(in_flight) is not None  # another worker is sending it
    ledger.claims.clear()

    assert sweep_unsent.delay().get() == 2

    assert ledger.sweeps == [SWEEP_AGE]
    assert ledger.claims == [lost, also_lost]
    assert set(ledger.sent) == {lost, sent, also_lost}
    names = sorted(p.name.rsplit("-", 1)[-1] for p in (tmp_path / "outbox").glob("*.eml"))
    assert names == ["1.eml", "2.eml", "4.eml"]
    assert sweep_unsent.delay().get() == 0  # nothing left to sweep


def test_send_reminders_delivers_the_queued_reminders(
    tmp_path: Path, eager: None, ledger: MemoryLedger
) -> None:
    ledger.to_remind = [make_notice(invitation_id=5), make_notice(invitation_id=6)]

    assert send_reminders.delay().get() == 2

    assert sorted(kind for kind, _ in ledger.messages.values()) == ["reminder", "reminder"]
    assert len(ledger.sent) == 2
    subjects = {read_eml(p)["Subject"] for p in (tmp_path / "outbox").glob("*.eml")}
    assert subjects == {"Reminder: Alex Chen invited you to Ringfence"}
    assert send_reminders.delay().get() == 0


# -- CeleryNotifier --------------------------------------------------------------------


def test_notifier_delivers_through_eager_task(
    tmp_path: Path, eager: None, ledger: MemoryLedger
) -> None:
    message_id = ledger.add(make_notice(invitation_id=7))

    CeleryNotifier().message_queued(message_id)

    (path,) = (tmp_path / "outbox").glob("*.eml")
    assert read_eml(path)["X-Ringfence-Invitation"] == "7"
    assert message_id in ledger.sent


def test_notifier_logs_instead_of_raising(
    eager: None, ledger: MemoryLedger, caplog: pytest.LogCaptureFixture
) -> None:
    message_id = ledger.add(make_notice())
    ledger.messages[message_id] = ("newsletter", ledger.messages[message_id][1])

    CeleryNotifier().message_queued(message_id)  # must not raise

    errors = [r for r in caplog.records if r.name == "ringfence.mailer"]
    assert [r.levelno for r in errors] == [logging.ERROR]
    assert errors[0].getMessage() == f"Message {message_id}: could not deliver or queue it"
    assert errors[0].exc_info is not None


def test_notifier_survives_an_unreachable_broker(
    tmp_path: Path,
    celery_conf: None,
    ledger: MemoryLedger,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Port 1 on loopback: nothing listens, so the connection is refused at once.
    configure_celery(Settings(instance_dir=tmp_path, broker_url="redis://127.0.0.1:1/0"))
    celery_app.conf.update(
        broker_connection_timeout=1, task_publish_retry_policy={"max_retries": 0}
    )
    message_id = ledger.add(make_notice())

    started = time.monotonic()
    CeleryNotifier().message_queued(message_id)  # must not raise, nor wait for the broker
    assert time.monotonic() - started < 0.5

    # The publisher's thread tried, failed, and said so.
    deadline = time.monotonic() + 10
    while not [r for r in caplog.records if r.name == "ringfence.mailer"]:
        assert time.monotonic() < deadline, "the publisher logged nothing"
        time.sleep(0.01)
    assert ledger.claims == []  # nothing ran: the sweep will requeue it
    (record,) = [r for r in caplog.records if r.name == "ringfence.mailer"]
    assert record.getMessage() == f"Message {message_id}: could not queue it"
    assert record.exc_info is not None
    assert "Connection refused" in str(record.exc_info[1])


def test_send_test_to_the_outbox(tmp_path: Path) -> None:
    transport = mail_config(Settings(instance_dir=tmp_path, mail_from=MAIL_FROM))

    outcome = CeleryNotifier().send_test("ops@example.org", transport)

    (path,) = (tmp_path / "outbox").glob("*-message.eml")
    assert outcome == SendTestOutcome(ok=True, detail=str(path))
    message = read_eml(path)
    assert message["Subject"] == "Ringfence test email"
    assert message["From"] == MAIL_FROM
    assert message["To"] == "ops@example.org"
    assert message.get_content_type() == "text/plain"
    assert "test email from Ringfence" in message.get_content()


@pytest.mark.parametrize(
    ("to_address", "overrides", "why"),
    [
        ("ops@example.org", {"smtp_host": "mail.test", "smtp_security": "ssl"}, "smtp_security"),
        ("ops@example.org\r\nBcc: victim@example.org", {}, "CR or LF"),
    ],
)
def test_send_test_reports_unusable_settings(
    tmp_path: Path, to_address: str, overrides: dict[str, Any], why: str
) -> None:
    transport = {**mail_config(Settings(instance_dir=tmp_path)), **overrides}

    outcome = CeleryNotifier().send_test(to_address, transport)

    assert outcome.ok is False
    assert why in outcome.detail
    assert not (tmp_path / "outbox").exists()


# -- worker wiring ---------------------------------------------------------------------


def test_worker_argv(tmp_path: Path) -> None:
    settings = Settings(instance_dir=tmp_path, log_level="WARNING")

    assert worker_argv(settings, 3) == ["worker", "--loglevel", "WARNING", "--concurrency", "3"]
    assert worker_argv(settings, 1, beat=True) == [
        "worker",
        "--loglevel",
        "WARNING",
        "--concurrency",
        "1",
        "-B",
        "--schedule",
        str(tmp_path / "celerybeat-schedule"),
    ]


def test_ledgers_stack_and_an_uninstalled_one_gives_the_slot_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two apps in one process: the newer one's ledger serves; once it closes, the
    older one's serves again (not the closed app's database); with none left, none."""
    monkeypatch.setattr(mailer.delivery, "_ledgers", [])
    older, newer = MemoryLedger({}), MemoryLedger({})
    install_ledger(older)
    install_ledger(newer)
    assert current_ledger() is newer

    uninstall_ledger(older)  # an app that closes out of order takes only its own
    assert current_ledger() is newer
    install_ledger(older)
    uninstall_ledger(newer)
    assert current_ledger() is older

    uninstall_ledger(older)
    uninstall_ledger(older)  # closing twice is harmless
    with pytest.raises(RuntimeError, match="no delivery ledger"):
        current_ledger()


def test_prepare_worker_configures_celery_and_installs_the_ledger(
    tmp_path: Path, celery_conf: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mailer.delivery, "_ledgers", [])
    fake: DeliveryLedger = MemoryLedger({})
    settings = Settings(instance_dir=tmp_path, broker_url="redis://127.0.0.1:1/0")

    app = prepare_worker(settings, fake)

    assert app is celery_app
    assert app.conf.task_always_eager is False
    assert current_ledger() is fake


def test_a_worker_needs_a_broker(
    tmp_path: Path, celery_conf: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mailer.delivery, "_ledgers", [])
    with pytest.raises(SystemExit, match="RINGFENCE_BROKER_URL"):
        prepare_worker(Settings(instance_dir=tmp_path), MemoryLedger({}))
    monkeypatch.delenv("RINGFENCE_BROKER_URL", raising=False)
    with pytest.raises(SystemExit, match="RINGFENCE_BROKER_URL"):
        mailer.worker.app  # what ``celery -A mailer.worker`` looks up  # noqa: B018
    assert mailer.delivery._ledgers == []


def test_outbox_file_shows_the_link_verbatim(tmp_path: Path) -> None:
    # The embedded default's admin may open the .eml in an editor to find the link.
    path = OutboxTransport(tmp_path).send(render_invitation(make_notice(), MAIL_FROM))

    raw = Path(path).read_text(encoding="ascii")
    assert ACCEPT_URL in raw
    assert f'href="{ACCEPT_URL.replace("&", "&amp;")}"' in raw


def test_non_ascii_names_survive_the_round_trip(tmp_path: Path) -> None:
    notice = make_notice(
        inviter_name="Zoë Ångström", to_name="Jürgen", grants=(("Café", "éditeur"),)
    )

    path = OutboxTransport(tmp_path).send(render_invitation(notice, MAIL_FROM))

    received = message_from_bytes(Path(path).read_bytes(), policy=default_policy)
    assert isinstance(received, EmailMessage)
    assert received["Subject"] == "Zoë Ångström invited you to Ringfence"
    assert received["To"] == "Jürgen <sam@example.org>"
    text, html = parts(received)
    assert "Café: éditeur" in text
    assert "Zoë Ångström" in html


def test_a_message_sent_again_keeps_its_message_id(ledger: MemoryLedger) -> None:
    """The ambiguous case: the server took DATA and the worker died before recording it,
    so the message is claimed and sent again. The copy has the same Message-ID, so mail
    systems can collapse it; another message has its own."""
    mailbox = Mailbox()
    with running_smtp(mailbox) as port:
        ledger.transport |= {"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_security": "none"}
        first = ledger.add(make_notice())
        other = ledger.add(make_notice(invitation_id=43, to_address="kim@example.org"))
        deliver_message.apply((first,))
        ledger.status[first] = "queued"  # what a taken-over claim amounts to
        deliver_message.apply((first,))
        deliver_message.apply((other,))
    sent, again, another = mailbox.messages()
    assert sent["Message-ID"] == again["Message-ID"]
    assert another["Message-ID"] != sent["Message-ID"]
    assert str(sent["Message-ID"]).endswith("@ringfence.test>")  # the sender's domain


def test_an_unreachable_server_is_said_in_words_not_errno_text() -> None:
    """A delivery's reason is read by workspace admins: what failed and what to check,
    not "[Errno 111] Connection refused" (a real refused connection on loopback)."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", "b@example.com", "x"
    with pytest.raises(TransientDeliveryError) as refused:
        SmtpTransport("127.0.0.1", port, security="none", timeout=2).send(message)
    assert str(refused.value).endswith(
        "unreachable: it refused the connection (nothing listens on that port)"
    )
    assert "Errno" not in str(refused.value)
    assert in_words(socket.gaierror(-2, "Name or service not known")) == (
        "its name does not resolve (check the host name)"
    )
    assert in_words(TimeoutError("timed out")) == "it did not answer in time"
