"""Header injection through names (security finding 4), in the mailer alone: the name
rule (:func:`gateway.notifier.name_problem`), the plain one-line text the mailer makes of
stored names, and every message's headers as written, to a file and over real SMTP."""

from __future__ import annotations

import base64
from email import message_from_bytes
from email.errors import MessageError
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest

from gateway.notifier import InvitationNotice, PasswordResetNotice, name_problem, one_line_text
from mailer.messages import (
    _checked,
    render_invitation,
    render_password_reset,
    render_test_message,
    sender,
)
from mailer.transport import OutboxTransport, SmtpTransport
from tests.smtp_support import Mailbox, running_smtp

ATTACKER = "attacker@evil.example"
MAIL_FROM = "Ringfence <no-reply@ringfence.test>"
CONTROLS = {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]} | {"\u2028", "\u2029"}


def _b64(text: str, charset: str = "utf-8") -> str:
    return f"=?{charset}?b?" + base64.b64encode(text.encode(charset)).decode() + "?="


CRAFTED = {
    "q-word": f"=?utf-8?q?Eve=0D=0AReply-To:_{ATTACKER}=0D=0A?=",
    "q-word-upper": f"=?UTF-8?Q?Eve=0d=0aReply-To:_{ATTACKER}?=",
    "b-word": _b64(f"Eve\r\nReply-To: {ATTACKER}\r\n\r\nForged body"),
    "b-word-no-padding": _b64(f"Eve\r\nReply-To: {ATTACKER}").rstrip("=?") + "?=",
    "mid-word": f"Eve=?utf-8?q?=0D=0AReply-To:_{ATTACKER}?=x",
    "two-words": f"=?utf-8?q?Eve=0D?= =?utf-8?q?=0AReply-To:_{ATTACKER}?=",
    "blank-line": "Eve =?utf-8?q?=0A=0A?= Forged body",
    "unknown-charset": f"=?x-unknown?q?Eve=0D=0AReply-To:_{ATTACKER}?=",
    "language-tag": f"=?utf-8*en?q?Eve=0D=0AReply-To:_{ATTACKER}?=",
    "utf-7": "=?utf-7?q?Eve+AA0ACg-Reply-To:_" + ATTACKER + "?=",
    "latin-1-nel": "=?iso-8859-1?q?Eve=85Reply-To:_" + ATTACKER + "?=",
    "encoded-nul": "=?utf-8?q?Eve=00?=",
    "encoded-line-separator": "=?utf-8?q?Eve=E2=80=A8Reply-To:_" + ATTACKER + "?=",
    "nested": "=?utf-8?q?=3D=3Futf-8=3Fq=3FEve=3D0D=3D0AReply-To:_" + ATTACKER + "=3F=3D?=",
    "crlf": f"Eve\r\nReply-To: {ATTACKER}",
    "lf-lf": "Eve\n\nForged body",
    "cr": f"Eve\rReply-To: {ATTACKER}",
    "nul": "Eve\x00",
    "tab": "Eve\tAdams",
    "vertical-tab": f"Eve\x0bReply-To: {ATTACKER}",
    "del": "Eve\x7f",
    "nel": f"Eve\x85Reply-To: {ATTACKER}",
    "line-separator": f"Eve\u2028Reply-To: {ATTACKER}",
    "paragraph-separator": f"Eve\u2029Reply-To: {ATTACKER}",
}
ORDINARY = [
    "Sam Rivera",
    "Zoë Ångström",
    "O'Brien, Seán",
    "Anne-Marie (Ops) <ops>",
    "李小龍",
    "a = b?",
    'R&D: "core" team',
    "=?utf-8?q?J=C3=BCrgen?=",  # a harmless encoded word: it reads "Jürgen"
    "x" * 200,
]
INVITATION_HEADERS = [
    "Subject",
    "To",
    "From",
    "Date",
    "Message-ID",
    "Auto-Submitted",
    "X-Ringfence-Invitation",
    "MIME-Version",
    "Content-Type",
]
RESET_HEADERS = [h for h in INVITATION_HEADERS if h != "X-Ringfence-Invitation"]


def notice(**overrides: Any) -> InvitationNotice:
    values: dict[str, Any] = {
        "invitation_id": 7,
        "to_address": "sam@example.org",
        "to_name": "Sam Rivera",
        "inviter_name": "Alex Chen",
        "grants": (("Acme", "editor"),),
        "accept_url": "https://ringfence.test/invite/tok-123",
        "expires_at": "2026-12-04T20:57:00+00:00",
    }
    values.update(overrides)
    return InvitationNotice(**values)


def reset_notice(to_name: str) -> PasswordResetNotice:
    return PasswordResetNotice(
        user_id=3,
        to_address="sam@example.org",
        to_name=to_name,
        reset_url="https://ringfence.test/reset/tok-456",
        expires_at="2026-12-04T20:57:00+00:00",
    )


def clean(value: str) -> bool:
    return not CONTROLS & set(value)


def assert_clean_wire(raw: bytes, expected: list[str]) -> EmailMessage:
    """Exactly the ``expected`` header lines, in order, free of control characters once
    read; one multipart/alternative body; nothing in the text body reads as a header."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    starts = [line.split(b":", 1)[0].decode() for line in head.split(b"\r\n") if line[:1] != b" "]
    assert starts == expected
    message = message_from_bytes(raw, policy=default_policy)
    assert isinstance(message, EmailMessage)
    assert message.keys() == expected
    assert all(clean(str(message[name])) for name in expected), dict(message.items())
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    text = message.get_body(("plain",))
    assert isinstance(text, EmailMessage)
    lines = text.get_content().splitlines()
    assert not any(line.startswith(("Reply-To:", "Forged body")) for line in lines), lines
    return message


# -- the rule for names, and plain text for stored ones ------------------------------------


@pytest.mark.parametrize("name", CRAFTED.values(), ids=CRAFTED.keys())
def test_names_with_control_characters_are_refused(name: str) -> None:
    problem = name_problem(name)

    assert problem is not None
    assert "control characters" in problem


@pytest.mark.parametrize("name", ORDINARY)
def test_ordinary_names_are_accepted(name: str) -> None:
    assert name_problem(name) is None


def test_encoded_words_nested_too_deep_are_refused() -> None:
    name = "Eve\r\n"
    for _ in range(8):
        name = "=?utf-8?b?" + base64.b64encode(name.encode()).decode() + "?="

    assert name_problem(name) is not None
    assert clean(one_line_text(name)) and "=?" not in one_line_text(name)


@pytest.mark.parametrize("name", CRAFTED.values(), ids=CRAFTED.keys())
def test_one_line_text_leaves_nothing_to_decode_or_break_a_line(name: str) -> None:
    text = one_line_text(name)

    assert clean(text) and "=?" not in text
    assert text.startswith("Eve")
    assert one_line_text(text) == text
    assert name_problem(text) is None


@pytest.mark.parametrize("name", [n for n in ORDINARY if "=?" not in n])
def test_one_line_text_keeps_ordinary_names(name: str) -> None:
    assert one_line_text(name) == name


def test_one_line_text_shows_a_harmless_encoded_word_as_its_text() -> None:
    assert one_line_text("=?utf-8?q?J=C3=BCrgen?= Weiß") == "Jürgen Weiß"


# -- messages: every position, as written ---------------------------------------------------


POSITIONS = {
    "invitee": lambda name: render_invitation(notice(to_name=name), MAIL_FROM),
    "inviter": lambda name: render_invitation(notice(inviter_name=name), MAIL_FROM),
    "workspace": lambda name: render_invitation(notice(grants=((name, "editor"),)), MAIL_FROM),
    "reminder-inviter": lambda name: render_invitation(
        notice(inviter_name=name), MAIL_FROM, reminder=True
    ),
}


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("name", CRAFTED.values(), ids=CRAFTED.keys())
def test_crafted_names_never_become_headers(position: str, name: str, tmp_path: Path) -> None:
    message = POSITIONS[position](name)

    raw = Path(OutboxTransport(tmp_path).send(message)).read_bytes()
    received = assert_clean_wire(raw, INVITATION_HEADERS)
    [to] = received["To"].addresses
    assert to.addr_spec == "sam@example.org"
    assert received["From"].addresses == (Address("Ringfence", "no-reply", "ringfence.test"),)
    subject = str(received["Subject"]).strip()
    assert subject.endswith("invited you to Ringfence")
    if position == "invitee":
        assert to.display_name.startswith("Eve")
    if position.endswith("inviter"):
        assert subject.removeprefix("Reminder: ").startswith("Eve")
    if position == "workspace":
        text = received.get_body(("plain",))
        assert isinstance(text, EmailMessage)
        [line] = [li for li in text.get_content().splitlines() if li.startswith("  - ")]
        assert line.startswith("  - Eve") and line.endswith(": editor")


ENCODED = {label: name for label, name in CRAFTED.items() if clean(name)}


@pytest.mark.parametrize("name", ENCODED.values(), ids=ENCODED.keys())
@pytest.mark.parametrize("quoted", [True, False], ids=["quoted", "unquoted"])
def test_crafted_sender_name_never_becomes_headers(name: str, quoted: bool) -> None:
    mail_from = (
        f'"{name}" <no-reply@ringfence.test>' if quoted else f"{name} <no-reply@ringfence.test>"
    )
    try:
        message = render_invitation(notice(), mail_from)
    except ValueError as exc:
        # Unquoted, a name with ":" or "," is a group or a list of addresses: which one
        # is meant cannot be told, and nothing is sent.
        assert not quoted and "one address" in str(exc)
        return

    received = assert_clean_wire(message.as_bytes(policy=SMTP_POLICY), INVITATION_HEADERS)
    [sender_address] = received["From"].addresses
    assert sender_address.addr_spec == "no-reply@ringfence.test"
    assert sender_address.display_name.startswith("Eve")


@pytest.mark.parametrize("name", CRAFTED.values(), ids=CRAFTED.keys())
def test_crafted_user_name_in_password_reset(name: str) -> None:
    message = render_password_reset(reset_notice(name), MAIL_FROM)

    received = assert_clean_wire(message.as_bytes(policy=SMTP_POLICY), RESET_HEADERS)
    [to] = received["To"].addresses
    assert (to.display_name[:3], to.addr_spec) == ("Eve", "sam@example.org")


def test_crafted_names_over_real_smtp() -> None:
    box = Mailbox()
    with running_smtp(box) as port:
        transport = SmtpTransport("127.0.0.1", port, security="none", timeout=5)
        for name in CRAFTED.values():
            transport.send(
                render_invitation(
                    notice(to_name=name, inviter_name=name, grants=((name, "editor"),)),
                    f'"{name}" <no-reply@ringfence.test>' if clean(name) else MAIL_FROM,
                )
            )
            transport.send(render_password_reset(reset_notice(name), MAIL_FROM))

    assert len(box.envelopes) == 2 * len(CRAFTED)
    for envelope, expected in zip(
        box.envelopes, [INVITATION_HEADERS, RESET_HEADERS] * len(CRAFTED), strict=True
    ):
        assert envelope.rcpt_tos == ["sam@example.org"]
        assert isinstance(envelope.content, bytes)
        assert_clean_wire(envelope.content, expected)


def test_ordinary_names_are_kept() -> None:
    for name in ORDINARY[:-1]:
        message = render_invitation(
            notice(to_name=name, inviter_name=name, grants=((name, "editor"),)), MAIL_FROM
        )
        received = message_from_bytes(message.as_bytes(policy=SMTP_POLICY), policy=default_policy)
        expected = one_line_text(name)
        assert received["To"].addresses[0].display_name == expected
        assert str(received["Subject"]).strip() == f"{expected} invited you to Ringfence"


# -- addresses, and the last check -------------------------------------------------------


def test_sender_is_one_address_with_a_plain_name() -> None:
    crafted = sender(f'"=?utf-8?q?Eve=0D=0AReply-To:_{ATTACKER}?=" <no-reply@ringfence.test>')

    assert crafted.addr_spec == "no-reply@ringfence.test"
    assert crafted.display_name == f"Eve Reply-To: {ATTACKER}"
    assert sender("no-reply@ringfence.test") == Address(addr_spec="no-reply@ringfence.test")
    with pytest.raises(ValueError, match="one address"):
        sender("a@ringfence.test, b@ringfence.test")
    with pytest.raises(ValueError, match="one address"):
        sender(f"Eve Reply-To: {ATTACKER} <no-reply@ringfence.test>")
    with pytest.raises(ValueError, match="control characters"):
        sender(f"Ringfence\r\nReply-To: {ATTACKER} <no-reply@ringfence.test>")


@pytest.mark.parametrize(
    "to_address",
    [
        f'"=?utf-8?q?a=0D=0AReply-To:_{ATTACKER}?="@example.org',
        "Eve <eve@example.org>",
        "eve@example.org\r\nBcc: victim@example.org",
    ],
)
def test_test_message_takes_a_plain_address_only(to_address: str) -> None:
    with pytest.raises(ValueError):
        render_test_message(to_address, MAIL_FROM)


def test_a_message_that_would_be_written_with_other_headers_is_refused() -> None:
    # Built as the mailer used to build it: the display name straight from the database.
    message = EmailMessage(policy=default_policy)
    message["Subject"] = "Hello"
    message["To"] = Address(display_name=CRAFTED["q-word"], addr_spec="sam@example.org")
    message.set_content("Hello")

    # This Python writes a Reply-To line (ValueError from the check); a fixed one
    # refuses to write the header at all (email.errors.HeaderWriteError).
    with pytest.raises((ValueError, MessageError)):
        _checked(message)
