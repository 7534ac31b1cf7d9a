"""Names cannot become email headers (security finding 4): through HTTP, names with line
breaks or other control characters, raw or as RFC 2047 encoded words, are refused with a
422; names already stored with them reach the email as plain one-line text, never as
header lines, both in the outbox (.eml) and over real SMTP (aiosmtpd on loopback)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.config import Settings
from gateway.db.models import Invitation, User, Workspace
from gateway.db.session import make_engine
from tests.helpers import (
    ADMIN_EMAIL,
    LiveServer,
    accept_token,
    assert_problem,
    create_workspaces,
    invite,
    outbox_messages,
)
from tests.smtp_support import Mailbox, running_smtp
from tests.unit.test_mail_headers import INVITATION_HEADERS, RESET_HEADERS

ATTACKER = "attacker@evil.example"
MAIL_FROM = "Ringfence <no-reply@ringfence.test>"


def _b64_word(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


# Each one turned into real header lines (a Reply-To of the attacker's choice, or a blank
# line that replaced the body) on Python 3.11.7 before the fix.
CRAFTED = {
    "q-word": f"=?utf-8?q?Eve=0D=0AReply-To:_{ATTACKER}=0D=0A?=",
    "b-word": _b64_word(f"Eve\r\nReply-To: {ATTACKER}\r\n\r\nForged body"),
    "mid-word": f"Eve=?utf-8?q?=0D=0AReply-To:_{ATTACKER}?=x",
    "blank-line": "Eve =?utf-8?q?=0A=0A?= Forged body",
    "unknown-charset": f"=?x-unknown?q?Eve=0D=0AReply-To:_{ATTACKER}?=",
    "nested": "=?utf-8?q?=3D=3Futf-8=3Fq=3FEve=3D0D=3D0AReply-To:_" + ATTACKER + "=3F=3D?=",
}
# Raw control characters: JSON and forms can carry them as well.
RAW = {
    "crlf": f"Eve\r\nReply-To: {ATTACKER}",
    "lf": f"Eve\nReply-To: {ATTACKER}",
    "nul": "Eve\x00",
    "line-separator": f"Eve\u2028Reply-To: {ATTACKER}",
    "c1-nel": "Eve\x85Reply-To",
    "encoded-nul": "=?utf-8?q?Eve=00?=",
}
# What can be stored: PostgreSQL keeps no NUL in text, so that one is refused at input only.
STORED = {**CRAFTED, **{label: name for label, name in RAW.items() if "\x00" not in name}}


@pytest.fixture(params=["outbox", "smtp"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    with running_smtp(box) as port:
        yield box, port


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    # Resends and reset requests back to back: one per crafted name.
    settings = replace(
        settings,
        resend_interval_seconds=0,
        password_resets_per_account="100 per hour",
        mail_from=MAIL_FROM,
    )
    if "transport" in request.fixturenames and request.getfixturevalue("transport") == "smtp":
        _, port = request.getfixturevalue("mailbox")
        settings = replace(
            settings, smtp_host="127.0.0.1", smtp_port=port, smtp_security="none", smtp_timeout=5
        )
    return settings


def raw_mail(server: LiveServer, transport: str, request: pytest.FixtureRequest) -> list[bytes]:
    """Every message delivered so far, as the bytes that went out, oldest first."""
    if transport == "smtp":
        box, _ = request.getfixturevalue("mailbox")
        with box._lock:
            return [bytes(envelope.content) for envelope in box.envelopes]
    return [path.read_bytes() for path in sorted(server.settings.outbox_path.glob("*.eml"))]


def wait_for(fetch: Callable[[], list[bytes]], count: int) -> list[bytes]:
    deadline = time.monotonic() + 10
    while len(found := fetch()) < count:
        assert time.monotonic() < deadline, f"expected {count} emails, have {len(found)}"
        time.sleep(0.05)
    return found


def parse(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=default_policy)
    assert isinstance(message, EmailMessage)
    return message


def header_block(raw: bytes) -> list[bytes]:
    """The header lines as sent (continuation lines joined to theirs)."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    lines: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and lines:
            lines[-1] += line
        else:
            lines.append(line)
    return lines


def assert_one_clean_message(raw: bytes, expected_headers: list[str]) -> EmailMessage:
    """Exactly the headers Ringfence sets, each once and free of control characters, no
    header line but theirs, and the one body: text and HTML."""
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    assert [line.split(b":", 1)[0].decode() for line in header_block(raw)] == expected_headers
    message = parse(raw)
    assert message.keys() == expected_headers
    assert message["Reply-To"] is None and message["Bcc"] is None
    for name in expected_headers:
        value = str(message[name])
        assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in value), (name, value)
        assert "\u2028" not in value and "\u2029" not in value, (name, value)
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    text = message.get_body(("plain",))
    assert isinstance(text, EmailMessage)
    body = text.get_content()
    # The names stay on their lines: nothing reads as a header or a forged paragraph.
    assert not any(line.startswith(("Reply-To:", "Forged body")) for line in body.splitlines())
    return message


def db_session(server: LiveServer) -> Iterator[Session]:
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with Session(db) as session, session.begin():
            yield session
    finally:
        db.dispose()


def store_names(
    server: LiveServer, invitation_id: int, *, invitee: str, inviter: str, workspace: str
) -> None:
    """Write names straight into the rows: names stored before input was checked."""
    for session in db_session(server):
        invitation = session.get(Invitation, invitation_id)
        assert invitation is not None
        invitation.name = invitee
        admin = session.scalars(select(User).where(User.email == ADMIN_EMAIL)).one()
        admin.name = inviter
        acme = session.scalars(select(Workspace).where(Workspace.slug == "acme")).one()
        acme.name = workspace


# -- names already stored: the mailer neutralises them ----------------------------------------


@pytest.mark.parametrize("position", ["invitee", "inviter", "workspace"])
def test_stored_crafted_names_never_become_headers(
    server: LiveServer, transport: str, position: str, request: pytest.FixtureRequest
) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    invitation = invite(admin, "sam@example.org", [("acme", "viewer")], "Sam Rivera")
    sent = len(wait_for(lambda: raw_mail(server, transport, request), 1))

    for label, crafted in STORED.items():
        names = {"invitee": "Sam Rivera", "inviter": "Ada Admin", "workspace": "Acme"}
        names[position] = crafted
        store_names(server, invitation["id"], **names)
        response = admin.post(f"/invitations/{invitation['id']}/resend")
        assert response.status_code == 200, response.text
        sent += 1
        raw = wait_for(lambda: raw_mail(server, transport, request), sent)[-1]

        message = assert_one_clean_message(raw, INVITATION_HEADERS)
        [to] = message["To"].addresses
        assert to.addr_spec == "sam@example.org", label
        [sender] = message["From"].addresses
        assert sender.addr_spec == "no-reply@ringfence.test", label
        assert str(message["Subject"]).endswith("invited you to Ringfence"), label
        text = message.get_body(("plain",))
        assert isinstance(text, EmailMessage)
        assert text.get_content().count("http://ringfence.test/invite/") == 1, label
        if position == "invitee":
            assert to.display_name.startswith("Eve"), (label, to.display_name)
        if position == "inviter":
            # (A long Subject is folded right after "Subject:"; the reader keeps the space.)
            assert str(message["Subject"]).lstrip().startswith("Eve"), (label, message["Subject"])


def test_stored_crafted_user_name_in_password_reset_mail(
    server: LiveServer, transport: str, request: pytest.FixtureRequest
) -> None:
    sent = len(raw_mail(server, transport, request))
    for label, crafted in STORED.items():
        for session in db_session(server):
            user = session.scalars(select(User).where(User.email == ADMIN_EMAIL)).one()
            user.name = crafted
        with server.client() as anonymous:
            response = anonymous.post("/auth/password-reset", json={"email": ADMIN_EMAIL})
        assert response.status_code == 202, response.text
        sent += 1
        raw = wait_for(lambda: raw_mail(server, transport, request), sent)[-1]

        message = assert_one_clean_message(raw, RESET_HEADERS)
        [to] = message["To"].addresses
        assert to.addr_spec == ADMIN_EMAIL, label
        assert to.display_name.startswith("Eve"), (label, to.display_name)


# -- input: refused with a 422 ------------------------------------------------------------


def assert_name_refused(response: httpx.Response) -> None:
    problem = assert_problem(response, 422, "invalid-input")
    assert "control character" in " ".join(problem["errors"]["name"]).lower(), problem


def test_crafted_names_are_refused_at_input(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    invite(admin, "sam@example.org", [("acme", "viewer")], "Sam Rivera")
    [message] = outbox_messages(server.settings)
    token = accept_token(message)

    for label, crafted in {**CRAFTED, **RAW}.items():
        response = admin.post(
            "/invitations",
            json={
                "email": "eve@example.org",
                "name": crafted,
                "roles": [{"workspace": "acme", "role": "viewer"}],
            },
        )
        assert_name_refused(response)
        assert_name_refused(admin.post("/workspaces", json={"slug": "evil", "name": crafted}))
        assert_name_refused(admin.patch("/workspaces/acme", json={"name": crafted}))
        with server.client() as anonymous:
            response = anonymous.post(
                "/invitations/accept",
                json={"token": token, "password": "a long enough passw0rd!", "name": crafted},
            )
            assert_name_refused(response)
            page = anonymous.post(
                f"/invite/{token}", data={"password": "a long enough passw0rd!", "name": crafted}
            )
            assert page.status_code == 422, (label, page.text)
            assert "control character" in page.text.lower(), label

    # Nothing of it was stored or sent: one invitation, its one email, the workspace as was.
    assert [i["email"] for i in admin.get("/invitations").json()] == ["sam@example.org"]
    assert len(outbox_messages(server.settings)) == 1
    assert admin.get("/workspaces/acme").json()["name"] == "Acme"
    assert [w["slug"] for w in admin.get("/workspaces").json()] == ["acme"]


def test_ordinary_names_still_pass(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    for name in ["Zoë Ångström", "O'Brien, Seán", "Anne-Marie (Ops) <ops>", "李小龍", "a = b?"]:
        response = admin.patch("/workspaces/acme", json={"name": name})
        assert response.status_code == 200, response.text
        assert response.json()["name"] == name
