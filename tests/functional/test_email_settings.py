"""The email settings through HTTP: reading and changing them (the SMTP password is
write-only), who may, and the test email against a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from gateway.db import make_engine
from gateway.models import AppSetting
from tests.helpers import (
    LiveServer,
    assert_problem,
    create_workspaces,
    invite_and_accept,
)
from tests.smtp_support import Mailbox, running_smtp

SECRET = "s3cret-smtp-Pa55word"
DATA_REPLY = "250 2.0.0 Queued as SETTINGS1"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    """A running SMTP server on loopback: its handler and port."""
    handler = Mailbox(data_reply=DATA_REPLY)
    with running_smtp(handler) as port:
        yield handler, port


def audit(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/audit", params={"page_size": 100, **params})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def stored_settings(server: LiveServer) -> str:
    """The stored email settings row, as text (what a database dump would show)."""
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with DbSession(db) as session:
            return repr(session.scalars(select(AppSetting.value)).all())
    finally:
        db.dispose()


def test_defaults_come_from_the_environment(server: LiveServer) -> None:
    response = server.admin().get("/settings/email")

    assert response.status_code == 200, response.text
    assert response.json() == {
        "transport": "outbox",
        "smtp_host": "",
        "smtp_port": 587,
        "smtp_security": "starttls",
        "smtp_username": "",
        "smtp_timeout": 10.0,
        "mail_from": "Ringfence <no-reply@localhost>",
        "allowed_domains": [],
        "password_set": False,
    }


def test_changing_settings_never_shows_the_password(server: LiveServer) -> None:
    admin = server.admin()
    changes = {
        "smtp_host": "smtp.example.com",
        "smtp_port": 465,
        "smtp_security": "tls",
        "smtp_username": "mailer@example.com",
        "smtp_password": SECRET,
        "smtp_timeout": 15,
        "mail_from": "Acme Access <access@example.com>",
        "allowed_domains": ["@Example.com", "example.org"],
    }

    response = admin.patch("/settings/email", json=changes)

    assert response.status_code == 200, response.text
    assert SECRET not in response.text
    shown = response.json()
    assert "smtp_password" not in shown
    assert shown == {
        "transport": "smtp",
        "smtp_host": "smtp.example.com",
        "smtp_port": 465,
        "smtp_security": "tls",
        "smtp_username": "mailer@example.com",
        "smtp_timeout": 15.0,
        "mail_from": "Acme Access <access@example.com>",
        "allowed_domains": ["example.com", "example.org"],
        "password_set": True,
    }
    again = admin.get("/settings/email")
    assert again.json() == shown and SECRET not in again.text
    [event] = audit(admin, action="settings.email.updated")
    assert SECRET not in str(event)
    assert event["before"]["smtp_host"] == "" and event["before"]["password_set"] is False
    assert event["after"]["smtp_host"] == "smtp.example.com"
    assert event["after"]["password_set"] is True and event["after"]["password_changed"] is True
    assert SECRET not in stored_settings(server)  # sealed at rest

    # Another change keeps the password; an empty one clears it.
    assert admin.patch("/settings/email", json={"smtp_port": 2465}).json()["password_set"] is True
    cleared = admin.patch("/settings/email", json={"smtp_password": "", "smtp_host": ""})
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["password_set"] is False and cleared.json()["transport"] == "outbox"
    events = audit(admin, action="settings.email.updated")
    assert len(events) == 3 and SECRET not in str(events)


def test_invalid_changes_are_refused_and_change_nothing(server: LiveServer) -> None:
    admin = server.admin()
    before = admin.get("/settings/email").json()

    for body, field in (
        ({"smtp_hots": "smtp.example.com"}, "smtp_hots"),
        ({"smtp_host": "smtp.example.com", "password": SECRET}, "password"),
        ({"smtp_security": "ssl"}, "smtp_security"),
        ({"smtp_port": 0}, "smtp_port"),
        ({"allowed_domains": ["not a domain"]}, "allowed_domains"),
    ):
        response = admin.patch("/settings/email", json=body)
        problem = assert_problem(response, 422, "invalid-input")
        assert field in problem["errors"], problem
        assert SECRET not in response.text

    assert admin.get("/settings/email").json() == before
    assert audit(admin, action="settings.email.updated") == []


def test_a_workspace_admin_may_not_see_or_change_email_settings(
    server: LiveServer, smtp: tuple[Mailbox, int]
) -> None:
    inbox, _ = smtp
    admin = server.admin()
    create_workspaces(admin, "acme")
    _, adam = invite_and_accept(server, admin, "adam@example.com", "Adam", [("acme", "admin")])

    for response in (
        adam.get("/settings/email"),
        adam.patch("/settings/email", json={"smtp_host": "evil.example.org"}),
        adam.post("/settings/email/test", json={"to": "adam@example.com"}),
    ):
        assert_problem(response, 403, "forbidden", "settings:write")
    with server.client() as anonymous:
        assert anonymous.get("/settings/email").status_code == 401
    assert admin.get("/settings/email").json()["smtp_host"] == ""
    assert inbox.envelopes == []
    assert audit(admin, action="settings.email.updated") == []
    assert audit(admin, action="settings.email.tested") == []


def test_test_email_reports_what_the_server_said(
    server: LiveServer, smtp: tuple[Mailbox, int]
) -> None:
    inbox, port = smtp
    admin = server.admin()
    response = admin.patch(
        "/settings/email",
        json={
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_security": "none",
            "smtp_timeout": 5,
            "mail_from": "Ringfence <no-reply@ringfence.test>",
        },
    )
    assert response.status_code == 200, response.text

    sent = admin.post("/settings/email/test", json={"to": "ops@example.org"})

    assert sent.status_code == 200, sent.text
    assert sent.json() == {
        "ok": True,
        "detail": f"SMTP 127.0.0.1:{port} accepted the message: {DATA_REPLY}",
    }
    [envelope] = inbox.envelopes
    assert envelope.rcpt_tos == ["ops@example.org"]
    assert envelope.mail_from == "no-reply@ringfence.test"

    # Nobody listening: the API answers, and says why the email did not go.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
        assert admin.patch("/settings/email", json={"smtp_port": closed_port}).status_code == 200
        failed = admin.post("/settings/email/test", json={"to": "ops@example.org"})

    assert failed.status_code == 200, failed.text
    assert failed.json()["ok"] is False
    assert failed.json()["detail"].startswith(f"SMTP 127.0.0.1:{closed_port} unreachable")
    assert "refused" in failed.json()["detail"].lower()
    assert len(inbox.envelopes) == 1

    bad_address = admin.post("/settings/email/test", json={"to": "not an address"})
    assert_problem(bad_address, 422, "invalid-input")

    tested = audit(admin, action="settings.email.tested")
    assert [(e["after"]["to"], e["after"]["ok"]) for e in tested] == [
        ("ops@example.org", False),
        ("ops@example.org", True),
    ]
    assert "250" in tested[1]["after"]["detail"]
    assert "unreachable" in tested[0]["after"]["detail"]
    assert len(audit(admin, action="settings.email.updated")) == 2
