"""Unit tests for mailer: rendering, the outbox transport, payloads, eager tasks."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Settings
from gateway.notifier import InvitationNotice
from mailer.celery_app import celery_app, configure_celery
from mailer.messages import render_invitation
from mailer.notifier import CeleryNotifier
from mailer.tasks import invitation_payload, notice_from_payload, send_invitation_email
from mailer.transport import OutboxTransport, SmtpTransport, transport_from_config

MAIL_FROM = "Ringfence <no-reply@ringfence.test>"
ACCEPT_URL = "https://ringfence.test/invitations/accept?token=tok-123&x=1"
_CELERY_KEYS = ("broker_url", "task_always_eager", "task_eager_propagates", "ringfence_mail")


@pytest.fixture
def celery_conf() -> Iterator[None]:
    """Put celery_app's configuration back as it was: it is process-wide state."""
    saved = {key: celery_app.conf.get(key) for key in _CELERY_KEYS}
    yield
    celery_app.conf.update(saved)


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
    assert "ringfence.send_invitation_email" in app.tasks
    assert app.conf.ringfence_mail == {
        "smtp_host": "",
        "smtp_port": 587,
        "smtp_security": "starttls",
        "smtp_username": "",
        "smtp_password": "pw",
        "smtp_timeout": 10.0,
        "mail_from": MAIL_FROM,
        "outbox_dir": str(tmp_path / "outbox"),
    }


def test_configure_celery_uses_broker_when_set(tmp_path: Path, celery_conf: None) -> None:
    app = configure_celery(Settings(instance_dir=tmp_path, broker_url="redis://localhost:6379/0"))

    assert app.conf.broker_url == "redis://localhost:6379/0"
    assert app.conf.task_always_eager is False


def test_retry_policy() -> None:
    task = celery_app.tasks["ringfence.send_invitation_email"]

    assert task.max_retries == 5
    assert task.retry_backoff_max == 600
    assert task.retry_backoff
    assert [e.__name__ for e in task.autoretry_for] == ["TransientDeliveryError"]


def test_eager_task_writes_outbox_and_logs_link(
    tmp_path: Path, celery_conf: None, caplog: pytest.LogCaptureFixture
) -> None:
    configure_celery(Settings(instance_dir=tmp_path, mail_from=MAIL_FROM))
    caplog.set_level(logging.INFO, logger="ringfence.mailer")

    result = send_invitation_email.delay(invitation_payload(make_notice())).get()

    assert result["status"] == "sent"
    files = list((tmp_path / "outbox").glob("*-invitation-42.eml"))
    assert [str(f) for f in files] == [result["detail"]]
    assert f"Invitation 42 for sam@example.org: accept link {ACCEPT_URL}" in caplog.messages


def test_notifier_sends_through_eager_task(tmp_path: Path, celery_conf: None) -> None:
    configure_celery(Settings(instance_dir=tmp_path, mail_from=MAIL_FROM))

    CeleryNotifier().invitation_created(make_notice(invitation_id=7))

    (path,) = (tmp_path / "outbox").glob("*.eml")
    received = message_from_bytes(path.read_bytes(), policy=default_policy)
    assert received["X-Ringfence-Invitation"] == "7"


def test_notifier_logs_instead_of_raising(
    tmp_path: Path, celery_conf: None, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    configure_celery(Settings(instance_dir=tmp_path, outbox_dir=blocker / "outbox"))

    CeleryNotifier().invitation_created(make_notice())  # must not raise

    (record,) = [r for r in caplog.records if r.name == "ringfence.mailer"]
    assert record.levelno == logging.ERROR
    assert (
        record.getMessage()
        == "Invitation 42 for sam@example.org: could not send or queue the email"
    )
    assert record.exc_info is not None


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
