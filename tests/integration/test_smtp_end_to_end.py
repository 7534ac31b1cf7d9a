"""An invitation from the admin API to an inbox and back: a gateway whose settings point
at a real SMTP server (aiosmtpd on loopback), Celery eager (no broker), everything
through HTTP. No mocks."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

import pytest

from gateway.config import Settings
from mailer.messages import format_expiry
from tests.helpers import (
    PASSWORD,
    LiveServer,
    accept_invitation,
    create_workspaces,
    invite,
    outbox_messages,
)
from tests.smtp_support import REFUSAL, Mailbox, running_smtp

DATA_REPLY = "250 2.0.0 Queued as E2E1"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    """A running SMTP server on loopback: its handler and port."""
    handler = Mailbox(data_reply=DATA_REPLY)
    with running_smtp(handler) as port:
        yield handler, port


@pytest.fixture
def mail_mode() -> str:
    """``smtp``: the gateway sends to :func:`mailbox`; ``outbox``: its default folder."""
    return "smtp"


@pytest.fixture
def settings(settings: Settings, mailbox: tuple[Mailbox, int], mail_mode: str) -> Settings:
    if mail_mode == "outbox":
        return settings
    return replace(
        settings,
        smtp_host="127.0.0.1",
        smtp_port=mailbox[1],
        smtp_security="none",
        smtp_timeout=5.0,
        mail_from="Ringfence <no-reply@ringfence.test>",
    )


def body(message: EmailMessage, kind: str) -> str:
    part = message.get_body((kind,))
    assert isinstance(part, EmailMessage)
    return str(part.get_content())


def gateway_log(caplog: pytest.LogCaptureFixture) -> str:
    """Every message the gateway logged; not those of this test's SMTP server and HTTP
    client, which see the link by their nature."""
    outsiders = ("mail.log", "httpx", "httpcore")
    return "\n".join(
        record.getMessage()
        for record in caplog.records
        if record.name.split(".")[0] not in outsiders and record.name not in outsiders
    )


def link_path(text: str) -> str:
    """The path of the accept link in an email body, e.g. ``/invite/<token>``."""
    [url] = [word for word in text.split() if "/invite/" in word]
    assert url.startswith("http://ringfence.test/invite/"), url
    return urlsplit(url.rstrip(".,;\"'<>")).path


def test_invitation_over_smtp_to_a_signed_in_user(
    server: LiveServer, mailbox: tuple[Mailbox, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    inbox, port = mailbox
    admin = server.admin()
    create_workspaces(admin, "acme", "globex")

    invitation = invite(
        admin, "john@example.com", [("acme", "editor"), ("globex", "viewer")], "John Smith"
    )

    # Sent at once (eager), over SMTP: one message, not an outbox file.
    assert outbox_messages(server.settings) == []
    [envelope] = inbox.envelopes
    assert envelope.rcpt_tos == ["john@example.com"]
    [message] = inbox.messages()
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["Subject"] == "Ada Admin invited you to Ringfence"
    assert message["To"].addresses[0].display_name == "John Smith"
    expiry = format_expiry(invitation["expires_at"])
    text, html = body(message, "plain"), body(message, "html")
    for part in (text, html):
        assert "Ada Admin" in part
        assert "Acme" in part and "Globex" in part  # the workspaces, by name
        assert "editor" in part and "viewer" in part
        assert expiry in part
    path = link_path(text)
    token = unquote(path.removeprefix("/invite/"))
    assert path in html

    shown = admin.get(f"/invitations/{invitation['id']}").json()
    assert shown["status"] == "sent"
    assert shown["delivery"]["status"] == "sent"
    assert shown["delivery"]["attempts"] == 1
    assert shown["delivery"]["detail"] == (
        f"SMTP 127.0.0.1:{port} accepted the message: {DATA_REPLY}"
    )
    assert shown["delivery"]["sent_at"]

    # John follows the link as a browser does.
    with server.client() as browser:
        page = browser.get(path)
        assert page.status_code == 200, page.text
        assert "john@example.com" in page.text
        assert "<td>Acme</td><td>editor</td>" in page.text
        assert "<td>Globex</td><td>viewer</td>" in page.text
        assert "Ada Admin" in page.text
        done = browser.post(path, data={"name": "John A. Smith", "password": PASSWORD})
        assert done.status_code == 200, done.text
        assert "john@example.com is active" in done.text

    john = server.login("john@example.com", PASSWORD)
    john.close()
    shown = admin.get(f"/invitations/{invitation['id']}").json()
    assert shown["status"] == "accepted" and shown["accepted_at"]
    assert shown["user_id"] is not None
    user = admin.get(f"/users/{shown['user_id']}").json()
    assert user["status"] == "active" and user["name"] == "John A. Smith"
    assert user["roles"] == {"acme": ["editor"], "globex": ["viewer"]}
    assert len(inbox.envelopes) == 1  # accepting sends nothing more

    # Over SMTP the link is a credential in John's inbox, never in our logs.
    logged = gateway_log(caplog)
    assert "ringfence.mailer" in {r.name for r in caplog.records}
    assert "/invite/[redacted]" in logged  # the request log names the page
    assert token not in logged
    assert path.removeprefix("/invite/") not in logged


def test_a_refused_recipient_shows_as_failed_with_the_reply(
    server: LiveServer, mailbox: tuple[Mailbox, int]
) -> None:
    inbox, port = mailbox
    inbox.rcpt_refusal = REFUSAL
    admin = server.admin()
    create_workspaces(admin, "acme")

    response = admin.post(
        "/invitations",
        json={
            "email": "nobody@example.com",
            "name": "No Body",
            "roles": [{"workspace": "acme", "role": "viewer"}],
        },
    )

    # The invitation stands: delivery failing is an outcome shown to the admin, not an error.
    assert response.status_code == 201, response.text
    assert inbox.envelopes == []
    shown = admin.get(f"/invitations/{response.json()['id']}").json()
    assert shown["status"] == "failed"
    assert shown["delivery"]["status"] == "failed"
    assert shown["delivery"]["attempts"] == 1
    assert REFUSAL in shown["delivery"]["detail"]
    assert f"127.0.0.1:{port}" in shown["delivery"]["detail"]
    failed = admin.get("/invitations", params={"status": "failed"}).json()
    assert [i["id"] for i in failed] == [shown["id"]]
    events = admin.get("/audit", params={"action": "invitation.failed"}).json()
    assert [e["target_id"] for e in events] == [str(shown["id"])]
    assert REFUSAL in events[0]["after"]["detail"]


@pytest.mark.parametrize("mail_mode", ["outbox"])
def test_without_smtp_the_link_is_logged_for_the_admin(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    admin = server.admin()
    create_workspaces(admin, "acme")

    invite(admin, "john@example.com", [("acme", "viewer")], "John Smith")

    # Nobody receives an email without SMTP: the log is how the admin gets the link.
    [message] = outbox_messages(server.settings)
    path = link_path(body(message, "plain"))
    assert f"http://ringfence.test{path}" in gateway_log(caplog)
    assert accept_invitation(server, unquote(path.removeprefix("/invite/"))).status_code == 200
