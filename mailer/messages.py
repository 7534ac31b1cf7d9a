"""Email messages: turning plain notices into :class:`email.message.EmailMessage`.

Owns the templates in ``mailer/templates`` and every header Ringfence puts on a message.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from email import message_from_bytes
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.policy import default as default_policy
from email.utils import format_datetime, getaddresses, make_msgid
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from gateway.notifier import (
    InvitationNotice,
    PasswordResetNotice,
    has_control_character,
    name_problem,
    one_line_text,
)

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
INVITATION_HEADER = "X-Ringfence-Invitation"
PRODUCT_NAME = "Ringfence"


@cache
def _environment() -> Environment:
    # Autoescape is keyed on the extension so that .html is always escaped and .txt is
    # never mangled into entities; StrictUndefined turns a typo into an error instead
    # of an email with a hole in it.
    return Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(enabled_extensions=("html",), default=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def _one_line(value: str) -> str:
    # Names end up in headers. The admin API refuses names with control characters, but
    # rows stored before it did (or written by other means) still reach us, and Python's
    # email package is no guard: up to 3.11.9/3.12.4 it writes the CR/LF of an RFC 2047
    # encoded word in a name out as real header lines. So every name becomes plain text
    # on one line, with nothing left in it that any parser would decode.
    return one_line_text(value)


def format_expiry(expires_at: str) -> str:
    """``expires_at`` (ISO 8601) for people, e.g. ``4 December 2026 at 20:57 UTC``."""
    try:
        moment = datetime.fromisoformat(expires_at)
    except ValueError:
        return expires_at
    # A naive timestamp is UTC by the InvitationNotice contract.
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return f"{moment.day} {moment:%B %Y} at {moment:%H:%M} UTC"


def _check_link(url: str) -> None:
    # Autoescaping does not stop a javascript: or data: URL in an href; the link is
    # built by gateway from public_url, so anything else is a bug worth failing on.
    if urlsplit(url).scheme not in {"http", "https"}:
        raise ValueError(f"accept link must be an http(s) URL, got {url!r}")


KINDS = ("invitation", "reminder")
TEST_SUBJECT = f"{PRODUCT_NAME} test email"


def render_invitation(
    notice: InvitationNotice, mail_from: str, *, reminder: bool = False
) -> EmailMessage:
    """The invitation email for ``notice``: multipart/alternative, text and HTML.
    With ``reminder``, the same invitation as a reminder ("Reminder: ..." subject)."""
    _check_link(notice.accept_url)
    inviter = _one_line(notice.inviter_name)
    to_name = _one_line(notice.to_name)
    subject = (
        f"{inviter} invited you to {PRODUCT_NAME}"
        if inviter
        else f"You are invited to {PRODUCT_NAME}"
    )
    if reminder:
        subject = f"Reminder: {subject}"
    context = {
        "product": PRODUCT_NAME,
        "subject": subject,
        "reminder": reminder,
        "inviter_name": inviter,
        "to_name": to_name,
        "to_address": notice.to_address,
        "grants": [(_one_line(workspace), _one_line(role)) for workspace, role in notice.grants],
        "accept_url": notice.accept_url,
        "expires": format_expiry(notice.expires_at),
        "expires_at": notice.expires_at,
    }
    env = _environment()
    text = env.get_template("invitation.txt").render(context)
    html = env.get_template("invitation.html").render(context)

    message = EmailMessage(policy=default_policy)
    message["Subject"] = subject
    message["To"] = Address(display_name=to_name, addr_spec=notice.to_address)
    kind = "reminder" if reminder else "invitation"
    _set_common_headers(message, mail_from, idstring=f"{kind}-{notice.invitation_id}")
    message[INVITATION_HEADER] = str(notice.invitation_id)
    message.set_content(text, cte=_transfer_encoding(text))
    message.add_alternative(html, subtype="html", cte=_transfer_encoding(html))
    return _checked(message)


def render_reminder(notice: InvitationNotice, mail_from: str) -> EmailMessage:
    """The reminder email for the still pending invitation ``notice``."""
    return render_invitation(notice, mail_from, reminder=True)


def render_notice(
    kind: str, notice: InvitationNotice | PasswordResetNotice, mail_from: str
) -> EmailMessage:
    """The email of ``kind`` (one of :data:`KINDS`, or ``password_reset``) for ``notice``."""
    if kind == PASSWORD_RESET and isinstance(notice, PasswordResetNotice):
        return render_password_reset(notice, mail_from)
    if kind not in KINDS or not isinstance(notice, InvitationNotice):
        raise ValueError(f"unknown message kind {kind!r}; expected one of {KINDS}")
    return render_invitation(notice, mail_from, reminder=kind == "reminder")


PASSWORD_RESET = "password_reset"  # noqa: S105 - not a secret
PASSWORD_RESET_SUBJECT = f"Reset your {PRODUCT_NAME} password"


def render_password_reset(notice: PasswordResetNotice, mail_from: str) -> EmailMessage:
    """The password reset email for ``notice``: multipart/alternative, text and HTML."""
    _check_link(notice.reset_url)
    to_name = _one_line(notice.to_name)
    context = {
        "product": PRODUCT_NAME,
        "subject": PASSWORD_RESET_SUBJECT,
        "to_name": to_name,
        "to_address": notice.to_address,
        "reset_url": notice.reset_url,
        "expires": format_expiry(notice.expires_at),
        "expires_at": notice.expires_at,
    }
    env = _environment()
    text = env.get_template("password_reset.txt").render(context)
    html = env.get_template("password_reset.html").render(context)
    message = EmailMessage(policy=default_policy)
    message["Subject"] = PASSWORD_RESET_SUBJECT
    message["To"] = Address(display_name=to_name, addr_spec=notice.to_address)
    _set_common_headers(message, mail_from, idstring=f"password-reset-{notice.user_id}")
    message.set_content(text, cte=_transfer_encoding(text))
    message.add_alternative(html, subtype="html", cte=_transfer_encoding(html))
    return _checked(message)


def render_test_message(to_address: str, mail_from: str) -> EmailMessage:
    """A short plain-text message that proves the mail settings work."""
    message = EmailMessage(policy=default_policy)
    message["Subject"] = TEST_SUBJECT
    # An address object, never a string to parse: only a plain addr-spec is accepted
    # (ValueError otherwise), so the address cannot smuggle in a name or another header.
    message["To"] = Address(addr_spec=to_address)
    _set_common_headers(message, mail_from, idstring="test")
    text = (
        f"This is a test email from {PRODUCT_NAME}.\n"
        "\n"
        f"It was sent because an administrator tested the email settings of {PRODUCT_NAME}.\n"
        "If you can read it, those settings work; there is nothing else to do.\n"
    )
    message.set_content(text, cte=_transfer_encoding(text))
    return _checked(message)


def sender(mail_from: str) -> Address:
    """The one address of the ``mail_from`` setting (``Name <address>`` or an address),
    its name as plain one-line text; ValueError when it holds a control character, no
    address, or several."""
    if has_control_character(mail_from):
        raise ValueError(f"mail_from must not contain control characters: {mail_from!r}")
    # getaddresses() decodes no encoded words, so a name cannot turn into address syntax
    # (a ":" or "," that makes a group or a second address) before it is split off.
    addresses = [(name, addr) for name, addr in getaddresses([mail_from]) if addr]
    if len(addresses) != 1:
        raise ValueError(f"mail_from must be one address, got {mail_from!r}")
    [(name, addr_spec)] = addresses
    return Address(display_name=one_line_text(name), addr_spec=addr_spec)


def _set_common_headers(message: EmailMessage, mail_from: str, *, idstring: str) -> None:
    from_address = sender(mail_from)
    message["From"] = from_address
    message["Date"] = format_datetime(datetime.now(UTC))
    # Using the sender's domain avoids make_msgid's default DNS lookup of our hostname
    # (slow on some hosts) and keeps Message-IDs recognisably ours.
    domain = from_address.domain or "ringfence.invalid"
    message["Message-ID"] = make_msgid(idstring=idstring, domain=domain)
    # RFC 3834: tells vacation responders and ticket systems not to reply.
    message["Auto-Submitted"] = "auto-generated"


def stable_message_id(message: EmailMessage, *parts: object) -> None:
    """Give ``message`` a Message-ID made from ``parts`` (the outbox message's id and
    payload), the same on every attempt to send it, in the domain it has already."""
    domain = str(message["Message-ID"]).rstrip(">").rpartition("@")[2]
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    message.replace_header("Message-ID", f"<{digest.hexdigest()[:32]}@{domain}>")


def _transfer_encoding(body: str) -> str:
    # Plain 7bit whenever it is valid, so the accept link in an outbox .eml can be read
    # or copied as is; quoted-printable would break it with "=3D" and soft line breaks.
    if body.isascii() and all(len(line) <= 998 for line in body.splitlines()):
        return "7bit"
    return "quoted-printable"


def _checked(message: EmailMessage) -> EmailMessage:
    """``message``, once it is shown to read back, as written for SMTP, with exactly its
    own headers; ValueError otherwise.

    The last line of defence against header injection, whatever the Python version: a
    header that folding turned into several lines (an injected Reply-To, or a blank line
    that starts a forged body) shows up as a header name too many or too few."""
    written = message_from_bytes(message.as_bytes(policy=SMTP_POLICY), policy=default_policy)
    if written.keys() != message.keys():
        raise ValueError(
            f"refusing to send a message whose headers {message.keys()} "
            f"would be written as {written.keys()}"
        )
    for name, value in written.items():
        if problem := name_problem(str(value)):
            raise ValueError(f"refusing to send a message whose {name} header reads: {problem}")
    return message
