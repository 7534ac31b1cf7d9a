"""The email settings through HTTP: reading and changing them (the SMTP password is
write-only), who may, and the test email against a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import html
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from gateway.config import Settings
from gateway.db.models import AppSetting
from gateway.db.session import make_engine
from tests.console_support import sign_in
from tests.helpers import (
    ADMIN_EMAIL,
    LiveServer,
    assert_problem,
    create_workspaces,
    invite_and_accept,
)
from tests.peer_support import (
    FTP_ANSWER,
    FTP_GREETING,
    HTTP_ANSWER,
    SSH_BANNER,
    refused_port,
    tcp_peer,
)
from tests.smtp_support import Logins, Mailbox, free_port, running_smtp

SECRET = "s3cret-smtp-Pa55word"
DATA_REPLY = "250 2.0.0 Queued as SETTINGS1"
# What the test email says of anything that is not an SMTP server answering: the same
# words for a refused port, a silent one, an SSH or HTTP service, none of their bytes.
NO_SMTP_SERVER = "could not connect, or the server did not answer as an SMTP server"
# ... and after the same time: the fixed connect timeout of the test (5 s by default;
# 1 s here), whatever the peer did, so that the test cannot time ports either.
TEST_CONNECT_SECONDS = 1.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, smtp_test_connect_seconds=TEST_CONNECT_SECONDS)


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

    # A change that keeps the server keeps the password; an empty one clears it.
    assert admin.patch("/settings/email", json={"smtp_timeout": 20}).json()["password_set"] is True
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
        adam.post(
            "/settings/email/test",
            json={"to": "adam@example.com", "smtp_host": "127.0.0.1", "smtp_security": "none"},
        ),
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
    assert sent.json() == {"ok": True, "detail": DATA_REPLY}
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
    assert failed.json() == {"ok": False, "detail": NO_SMTP_SERVER}
    assert len(inbox.envelopes) == 1

    bad_address = admin.post("/settings/email/test", json={"to": "not an address"})
    assert_problem(bad_address, 422, "invalid-input")

    tested = audit(admin, action="settings.email.tested")
    assert [(e["after"]["to"], e["after"]["ok"]) for e in tested] == [
        ("ops@example.org", False),
        ("ops@example.org", True),
    ]
    assert "250" in tested[1]["after"]["detail"]
    assert tested[0]["after"]["detail"] == NO_SMTP_SERVER
    assert len(audit(admin, action="settings.email.updated")) == 2


# -- the password stays with the server it was given for ------------------------------


@contextmanager
def smtp_with_auth(host: str, port: int) -> Iterator[tuple[Mailbox, Logins]]:
    """An SMTP server on ``host:port`` that offers AUTH without TLS and records logins."""
    inbox, logins = Mailbox(data_reply=DATA_REPLY), Logins()
    controller = Controller(
        inbox, hostname=host, port=port, authenticator=logins, auth_require_tls=False
    )
    controller.start()
    try:
        yield inbox, logins
    finally:
        controller.stop()


SERVER = {"smtp_security": "none", "smtp_username": "mailer", "mail_from": "R <r@ringfence.test>"}


@pytest.mark.parametrize(
    "move",
    [
        pytest.param(lambda port: {"smtp_host": "127.0.0.2"}, id="host"),
        pytest.param(lambda port: {"smtp_port": port}, id="port"),
    ],
)
def test_moving_the_server_needs_the_password_again(server: LiveServer, move: Any) -> None:
    # Two real SMTP servers: the one the password was given for, and another one (on
    # another loopback address, or another port) that keeps whatever it is sent.
    port = free_port()
    other_port = free_port()
    admin = server.admin()
    with (
        smtp_with_auth("127.0.0.1", port) as (inbox, logins),
        smtp_with_auth("127.0.0.2", port) as (_, other_host_logins),
        smtp_with_auth("127.0.0.1", other_port) as (_, other_port_logins),
    ):
        saved = admin.patch(
            "/settings/email",
            json={**SERVER, "smtp_host": "127.0.0.1", "smtp_port": port, "smtp_password": SECRET},
        )
        assert saved.status_code == 200, saved.text
        first_test = admin.post("/settings/email/test", json={"to": "ops@example.org"})
        assert first_test.json()["ok"] is True, first_test.text
        assert logins.seen == [("mailer", SECRET)]
        before = admin.get("/settings/email").json()

        moved = admin.patch("/settings/email", json=move(other_port))
        tested = admin.post("/settings/email/test", json={"to": "ops@example.org"})

        # The stored password never reaches the other server ...
        assert other_host_logins.seen == [] and other_port_logins.seen == []
        # ... because the move is refused, and changes nothing.
        problem = assert_problem(moved, 422, "invalid-input", "password")
        assert problem["errors"] == {"smtp_password": ["required when the server changes"]}
        assert SECRET not in moved.text
        assert admin.get("/settings/email").json() == before
        assert tested.json()["ok"] is True  # the old server still
        assert logins.seen == [("mailer", SECRET)] * 2
        assert len(audit(admin, action="settings.email.updated")) == 1

        # With the other server's password in the same request the move is made, and
        # that password, not the old one, goes to the other server.
        moved = admin.patch("/settings/email", json={**move(other_port), "smtp_password": "pw2"})
        assert moved.status_code == 200, moved.text
        assert moved.json()["password_set"] is True
        sent = admin.post("/settings/email/test", json={"to": "ops@example.org"})
        assert sent.json()["ok"] is True, sent.text
        assert other_host_logins.seen + other_port_logins.seen == [("mailer", "pw2")]
        assert len(inbox.envelopes) == 2

    events = audit(admin, action="settings.email.updated")
    assert len(events) == 2
    assert SECRET not in str(events) and "pw2" not in str(events)
    assert events[0]["after"]["password_changed"] is True
    assert {k: events[0]["after"][k] for k in move(other_port)} == move(other_port)
    assert "pw2" not in stored_settings(server) and SECRET not in stored_settings(server)


def test_each_server_field_needs_the_password_and_the_rest_does_not(server: LiveServer) -> None:
    admin = server.admin()
    first = {
        **SERVER,
        "smtp_host": "smtp.example.com",
        "smtp_port": 587,
        "smtp_password": SECRET,
    }
    assert admin.patch("/settings/email", json=first).status_code == 200
    before = admin.get("/settings/email").json()

    for change in (
        {"smtp_host": "mail.elsewhere.example"},
        {"smtp_port": 2525},
        {"smtp_security": "starttls"},
        {"smtp_username": "someone-else"},
        {"smtp_host": "mail.elsewhere.example", "mail_from": "X <x@elsewhere.example>"},
    ):
        refused = admin.patch("/settings/email", json=change)
        problem = assert_problem(refused, 422, "invalid-input")
        assert problem["errors"] == {"smtp_password": ["required when the server changes"]}
    assert admin.get("/settings/email").json() == before
    assert len(audit(admin, action="settings.email.updated")) == 1

    # The same server again (as a form sends every field), or other settings: no password.
    for change in (
        {"smtp_host": "SMTP.example.com", "smtp_port": 587, "smtp_security": "none"},
        {"smtp_username": "mailer", "smtp_timeout": 30, "mail_from": "Y <y@example.com>"},
        {"allowed_domains": ["example.com"]},
    ):
        response = admin.patch("/settings/email", json=change)
        assert response.status_code == 200, response.text
        assert response.json()["password_set"] is True

    # Removing the password is always possible, with a move or without.
    moved = admin.patch(
        "/settings/email", json={"smtp_host": "mail.elsewhere.example", "smtp_password": ""}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["password_set"] is False
    assert moved.json()["smtp_host"] == "mail.elsewhere.example"
    # With no password stored, there is none to protect.
    assert admin.patch("/settings/email", json={"smtp_port": 2525}).status_code == 200
    events = audit(admin, action="settings.email.updated")
    assert len(events) == 6 and SECRET not in str(events)


def test_the_console_asks_for_the_password_when_the_server_changes(server: LiveServer) -> None:
    admin = server.admin()
    first = {**SERVER, "smtp_host": "smtp.example.com", "smtp_port": 587, "smtp_password": SECRET}
    assert admin.patch("/settings/email", json=first).status_code == 200
    before = admin.get("/settings/email").json()
    console = sign_in(server, ADMIN_EMAIL, server.admin_password)
    page = console.get("/console/settings")
    assert "A new host, port, security or user name needs it again." in page.text
    # The form sends every field, the password empty ("keep it").
    form = {
        "smtp_host": "mail.elsewhere.example",
        "smtp_port": "587",
        "smtp_security": "none",
        "smtp_username": "mailer",
        "smtp_password": "",
        "smtp_timeout": "10",
        "mail_from": "R <r@ringfence.test>",
        "allowed_domains": "",
    }

    refused = console.post("/console/settings/email", form)

    assert refused.status_code == 422, refused.text
    assert re.search(
        r'id="s-smtp_password-error" class="field-error">required when the server changes<',
        refused.text,
    )
    assert 'value="mail.elsewhere.example"' in refused.text  # what was typed stays
    assert SECRET not in refused.text
    assert admin.get("/settings/email").json() == before

    # The same server with another sender: saved, the password kept.
    same = console.post(
        "/console/settings/email",
        {**form, "smtp_host": "smtp.example.com", "mail_from": "S <s@ringfence.test>"},
    )
    assert same.status_code == 200 and "Email settings saved." in same.text
    assert admin.get("/settings/email").json()["password_set"] is True
    # The new server with its password, or with the box that removes the stored one.
    moved = console.post("/console/settings/email", {**form, "smtp_password": "pw2"})
    assert moved.status_code == 200 and "Email settings saved." in moved.text
    assert console.post("/console/settings/email", {**form, "smtp_port": "2525"}).status_code == 422
    cleared = console.post(
        "/console/settings/email", {**form, "smtp_port": "2525", "clear_password": "1"}
    )
    assert cleared.status_code == 200, cleared.text
    now = admin.get("/settings/email").json()
    assert (now["smtp_host"], now["smtp_port"], now["password_set"]) == (
        "mail.elsewhere.example",
        2525,
        False,
    )
    events = audit(admin, action="settings.email.updated")
    assert len(events) == 4 and SECRET not in str(events) and "pw2" not in str(events)
    console.close()


# -- the test email speaks to SMTP servers only --------------------------------------


def test_the_test_email_never_echoes_a_service_that_is_not_smtp(server: LiveServer) -> None:
    admin = server.admin()
    with (
        tcp_peer(SSH_BANNER) as ssh,
        tcp_peer(HTTP_ANSWER) as http,
        tcp_peer(FTP_GREETING, FTP_ANSWER) as ftp,
        refused_port() as closed_port,
    ):
        for port in (ssh.port, http.port, ftp.port, closed_port):
            patched = admin.patch(
                "/settings/email",
                json={"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_security": "none"},
            )
            assert patched.status_code == 200, patched.text
            started = time.monotonic()
            tested = admin.post("/settings/email/test", json={"to": "ops@example.org"})
            elapsed = time.monotonic() - started

            assert tested.status_code == 200, tested.text
            assert tested.json() == {"ok": False, "detail": NO_SMTP_SERVER}
            # Open, closed, talkative or not: all take the fixed connect timeout.
            assert TEST_CONNECT_SECONDS - 0.25 <= elapsed < TEST_CONNECT_SECONDS + 4, port

    events = audit(admin, action="settings.email.tested")
    assert [e["after"]["detail"] for e in events] == [NO_SMTP_SERVER] * 4
    # What the events record of each test (not their hashes and request ids, random hex
    # in which "500" turns up by chance).
    recorded = str([e["after"] for e in events])
    for leaked in ("OpenSSH", "internal", "HTTP/1.1", "X-Internal", "ProFTPD", "500 Unknown"):
        assert leaked not in recorded
    # Nothing beyond the greeting exchange was sent to them (no mail, no password).
    assert b"RCPT" not in ftp.received and b"AUTH" not in ftp.received


def test_the_test_email_shows_an_smtp_reply_as_its_code_and_200_printable_characters(
    server: LiveServer,
) -> None:
    # A two-line refusal with terminal control characters and a long tail.
    refusal = "550-5.1.1 \x1b[2J\x07 first line\r\n550 5.1.1 " + "x" * 400
    admin = server.admin()
    with running_smtp(Mailbox(rcpt_refusal=refusal)) as port:
        patched = admin.patch(
            "/settings/email",
            json={"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_security": "none"},
        )
        assert patched.status_code == 200, patched.text
        tested = admin.post("/settings/email/test", json={"to": "ops@example.org"})

    assert tested.status_code == 200, tested.text
    assert tested.json()["ok"] is False
    code, text = tested.json()["detail"].split(" ", 1)
    assert code == "550"
    assert text == ("5.1.1 [2J first line 5.1.1 " + "x" * 400)[:200]
    [event] = audit(admin, action="settings.email.tested")
    assert event["after"]["detail"] == tested.json()["detail"]


# -- settings tried before they are saved ---------------------------------------------


def test_unsaved_settings_are_tested_and_nothing_is_saved(
    server: LiveServer, smtp: tuple[Mailbox, int]
) -> None:
    inbox, port = smtp
    admin = server.admin()
    # What is saved: the outbox folder (no SMTP host), with a sender of its own.
    saved = admin.patch("/settings/email", json={"mail_from": "Saved <saved@ringfence.test>"})
    assert saved.status_code == 200, saved.text
    before = admin.get("/settings/email").json()
    stored_before = stored_settings(server)
    good = {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_security": "none",
        "mail_from": "Tried <tried@ringfence.test>",
    }

    sent = admin.post("/settings/email/test", json={"to": "ops@example.org", **good})

    # A good setup, unsaved: the email goes through the server it names ...
    assert sent.status_code == 200, sent.text
    assert sent.json() == {"ok": True, "detail": DATA_REPLY}
    [envelope] = inbox.envelopes
    assert envelope.rcpt_tos == ["ops@example.org"]
    assert envelope.mail_from == "tried@ringfence.test"
    # ... and the saved settings stay as they were.
    assert admin.get("/settings/email").json() == before
    assert stored_settings(server) == stored_before

    # A bad setup, unsaved: nobody listens there. Not sent, said in words, nothing saved.
    with refused_port() as closed_port:
        failed = admin.post(
            "/settings/email/test",
            json={"to": "ops@example.org", **good, "smtp_port": closed_port},
        )
    assert failed.status_code == 200, failed.text
    assert failed.json() == {"ok": False, "detail": NO_SMTP_SERVER}
    assert len(inbox.envelopes) == 1
    assert admin.get("/settings/email").json() == before
    assert stored_settings(server) == stored_before

    # The saved settings are what a test without settings still uses: the outbox.
    plain = admin.post("/settings/email/test", json={"to": "ops@example.org"})
    assert plain.status_code == 200 and plain.json()["ok"] is True, plain.text
    assert "outbox" in plain.json()["detail"] or plain.json()["detail"].endswith(".eml")
    assert len(inbox.envelopes) == 1

    # Each test is audited, the unsaved ones with what was tried; no save is.
    tested = audit(admin, action="settings.email.tested")
    assert [(e["after"]["ok"], "tried" in e["after"]) for e in tested] == [
        (True, False),
        (False, True),
        (True, True),
    ]
    assert tested[2]["after"]["tried"] == {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_security": "none",
        "smtp_username": "",
        "smtp_timeout": 10.0,
        "mail_from": "Tried <tried@ringfence.test>",
        "password": "none",
    }
    assert tested[1]["after"]["detail"] == NO_SMTP_SERVER
    assert len(audit(admin, action="settings.email.updated")) == 1


def test_unsaved_settings_are_checked_as_a_save_checks_them(server: LiveServer) -> None:
    admin = server.admin()
    before = admin.get("/settings/email").json()

    for body, field in (
        ({"smtp_hots": "smtp.example.com"}, "smtp_hots"),
        ({"smtp_host": "smtp.example.com", "password": SECRET}, "password"),
        ({"smtp_security": "ssl"}, "smtp_security"),
        ({"smtp_port": 0}, "smtp_port"),
        ({"smtp_timeout": 500}, "smtp_timeout"),
        ({"mail_from": "not an address"}, "mail_from"),
        ({"allowed_domains": ["not a domain"]}, "allowed_domains"),
    ):
        patched = admin.patch("/settings/email", json=body)
        tested = admin.post("/settings/email/test", json={"to": "ops@example.org", **body})
        saved_problem = assert_problem(patched, 422, "invalid-input")
        problem = assert_problem(tested, 422, "invalid-input")
        assert problem["errors"] == saved_problem["errors"], (body, problem)
        assert field in problem["errors"], problem

    assert admin.get("/settings/email").json() == before
    assert audit(admin, action="settings.email.tested") == []
    assert audit(admin, action="settings.email.updated") == []


def test_a_tried_setup_gets_the_saved_password_only_for_its_own_server(
    server: LiveServer,
) -> None:
    port, other_port = free_port(), free_port()
    admin = server.admin()
    with (
        smtp_with_auth("127.0.0.1", port) as (inbox, logins),
        smtp_with_auth("127.0.0.1", other_port) as (other_inbox, other_logins),
    ):
        saved = admin.patch(
            "/settings/email",
            json={**SERVER, "smtp_host": "127.0.0.1", "smtp_port": port, "smtp_password": SECRET},
        )
        assert saved.status_code == 200, saved.text
        before = admin.get("/settings/email").json()
        stored_before = stored_settings(server)

        # The same server with another sender, the password left out: the saved one is
        # used, and never shown.
        same = admin.post(
            "/settings/email/test",
            json={"to": "ops@example.org", "smtp_port": port, "mail_from": "T <t@ringfence.test>"},
        )
        assert same.json() == {"ok": True, "detail": DATA_REPLY}, same.text
        assert logins.seen == [("mailer", SECRET)]
        assert inbox.envelopes[-1].mail_from == "t@ringfence.test"

        # Another server without a password: refused as a save is, and it hears nothing.
        moved = admin.post(
            "/settings/email/test", json={"to": "ops@example.org", "smtp_port": other_port}
        )
        problem = assert_problem(moved, 422, "invalid-input", "password")
        assert problem["errors"] == {"smtp_password": ["required when the server changes"]}
        assert other_logins.seen == [] and other_inbox.envelopes == []

        # With its own password typed, that one goes there; still nothing is saved.
        typed = admin.post(
            "/settings/email/test",
            json={"to": "ops@example.org", "smtp_port": other_port, "smtp_password": "pw2"},
        )
        assert typed.json() == {"ok": True, "detail": DATA_REPLY}, typed.text
        assert other_logins.seen == [("mailer", "pw2")]
        # A wrong password is said as the server said it, and the saved one still works.
        other_logins.accept = False
        refused = admin.post(
            "/settings/email/test",
            json={"to": "ops@example.org", "smtp_port": other_port, "smtp_password": "wrong"},
        )
        assert refused.json()["ok"] is False and refused.json()["detail"].startswith("535")
        assert admin.get("/settings/email").json() == before
        assert stored_settings(server) == stored_before
        again = admin.post("/settings/email/test", json={"to": "ops@example.org"})
        assert again.json()["ok"] is True, again.text
        assert logins.seen == [("mailer", SECRET)] * 2

    for response in (same, moved, typed, refused):
        assert SECRET not in response.text and "pw2" not in response.text
    tested = audit(admin, action="settings.email.tested")
    assert SECRET not in str(tested) and "pw2" not in str(tested) and "wrong" not in str(tested)
    assert [e["after"].get("tried", {}).get("password") for e in tested] == [
        None,
        "typed",
        "typed",
        "saved",
    ]
    assert len(audit(admin, action="settings.email.updated")) == 1


def test_a_tried_setup_never_echoes_a_service_that_is_not_smtp(server: LiveServer) -> None:
    admin = server.admin()
    with tcp_peer(SSH_BANNER) as ssh, tcp_peer(HTTP_ANSWER) as http:
        for port in (ssh.port, http.port):
            tested = admin.post(
                "/settings/email/test",
                json={
                    "to": "ops@example.org",
                    "smtp_host": "127.0.0.1",
                    "smtp_port": port,
                    "smtp_security": "none",
                },
            )
            assert tested.status_code == 200, tested.text
            assert tested.json() == {"ok": False, "detail": NO_SMTP_SERVER}
    recorded = str([e["after"] for e in audit(admin, action="settings.email.tested")])
    for leaked in ("OpenSSH", "internal", "HTTP/1.1", "X-Internal"):
        assert leaked not in recorded
    assert admin.get("/settings/email").json()["smtp_host"] == ""


def test_the_console_tests_the_form_as_typed_before_saving(
    server: LiveServer, smtp: tuple[Mailbox, int]
) -> None:
    inbox, port = smtp
    admin = server.admin()
    before = admin.get("/settings/email").json()
    console = sign_in(server, ADMIN_EMAIL, server.admin_password)
    page = console.get("/console/settings")
    assert "Send a test email with these settings" in page.text
    assert f'value="{ADMIN_EMAIL}"' in page.text  # the test goes to the admin by default
    form = {
        "smtp_host": "127.0.0.1",
        "smtp_port": str(port),
        "smtp_security": "none",
        "smtp_username": "",
        "smtp_password": "",
        "smtp_timeout": "10",
        "mail_from": "Console <console@ringfence.test>",
        "allowed_domains": "",
        "try_to": "ops@example.org",
    }

    # With htmx: only the outcome, beside the button; the form stays as typed.
    sent = console.post("/console/settings/email/try", form, htmx=True)
    assert sent.status_code == 200, sent.text
    assert 'id="try-result"' in sent.text and "<h1>" not in sent.text
    assert f"Sent with the settings in the form (not saved): {DATA_REPLY}" in sent.text
    assert inbox.envelopes[-1].mail_from == "console@ringfence.test"
    assert inbox.envelopes[-1].rcpt_tos == ["ops@example.org"]
    # Without script: the whole page, the form as typed, the outcome in it.
    whole = console.post("/console/settings/email/try", form)
    assert whole.status_code == 200, whole.text
    assert (
        "<h1>Settings</h1>" in whole.text
        and 'value="Console &lt;console@ringfence.test&gt;"' in (whole.text)
    )
    assert f"Sent with the settings in the form (not saved): {DATA_REPLY}" in whole.text
    assert len(inbox.envelopes) == 2

    # A bad setup: not sent, in the saved test's words.
    with refused_port() as closed_port:
        failed = console.post(
            "/console/settings/email/try", {**form, "smtp_port": str(closed_port)}, htmx=True
        )
    assert failed.status_code == 200, failed.text
    assert f"Not sent with the settings in the form (not saved): {NO_SMTP_SERVER}" in failed.text
    assert 'role="alert"' in failed.text

    # Settings no save would take: listed beside the button (htmx), marked on the fields
    # (without script); nothing sent.
    bad = {**form, "smtp_port": "0", "mail_from": "not an address", "try_to": "nobody"}
    listed = console.post("/console/settings/email/try", bad, htmx=True)
    assert listed.status_code == 422, listed.text
    text = html.unescape(listed.text)
    assert "Not sent, and nothing saved" in text
    assert "SMTP port: " in text and "Sender (From): Not a sender address" in text
    assert "Send the test to: Not a valid email address." in text
    marked = console.post("/console/settings/email/try", bad)
    assert marked.status_code == 422
    assert 'id="s-smtp_port-error"' in marked.text and 'id="s-try_to-error"' in marked.text
    assert len(inbox.envelopes) == 2

    assert admin.get("/settings/email").json() == before
    assert audit(admin, action="settings.email.updated") == []
    assert [e["after"]["ok"] for e in audit(admin, action="settings.email.tested")] == [
        False,
        True,
        True,
    ]
    console.close()


def test_the_console_tries_the_saved_password_only_with_its_server(server: LiveServer) -> None:
    port = free_port()
    admin = server.admin()
    with smtp_with_auth("127.0.0.1", port) as (_, logins):
        saved = admin.patch(
            "/settings/email",
            json={**SERVER, "smtp_host": "127.0.0.1", "smtp_port": port, "smtp_password": SECRET},
        )
        assert saved.status_code == 200, saved.text
        console = sign_in(server, ADMIN_EMAIL, server.admin_password)
        form = {
            "smtp_host": "127.0.0.1",
            "smtp_port": str(port),
            "smtp_security": "none",
            "smtp_username": "mailer",
            "smtp_password": "",
            "smtp_timeout": "10",
            "mail_from": "R <r@ringfence.test>",
            "allowed_domains": "",
            "try_to": "ops@example.org",
        }
        # The password left empty: the saved one, for the saved server.
        kept = console.post("/console/settings/email/try", form, htmx=True)
        assert f"(not saved): {DATA_REPLY}" in kept.text, kept.text
        assert logins.seen == [("mailer", SECRET)]
        # Another user name with the password left empty: asked for, as a save asks.
        moved = console.post(
            "/console/settings/email/try", {**form, "smtp_username": "other"}, htmx=True
        )
        assert moved.status_code == 422
        assert "SMTP password: required when the server changes" in moved.text
        # The box that removes the stored password: tried without one.
        bare = console.post(
            "/console/settings/email/try", {**form, "clear_password": "1"}, htmx=True
        )
        assert bare.status_code == 200, bare.text
        assert logins.seen == [("mailer", SECRET), ("mailer", "")]
        for response in (kept, moved, bare):
            assert SECRET not in response.text
        console.close()
    assert admin.get("/settings/email").json()["password_set"] is True
