"""Email messages: turning plain notices into :class:`email.message.EmailMessage`.

Owns the templates in ``mailer/templates`` and every header Ringfence puts on a message.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from gateway.notifier import InvitationNotice, PasswordResetNotice

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
    # Names end up in headers; a newline there would be a header injection, and the
    # email package refuses them anyway. Collapsing keeps the message sendable.
    return " ".join(value.split())


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
        "grants": [(workspace, role) for workspace, role in notice.grants],
        "accept_url": notice.accept_url,
        "expires": format_expiry(notice.expires_at),
        "expires_at": notice.expires_at,
    }
    env = _environment()
    text = env.get_template("invitation.txt").render(context)
    html = env.get_template("invitation.html").render(context)

    message = EmailMessage()
    message["Subject"] = subject
    message["To"] = Address(display_name=to_name, addr_spec=notice.to_address)
    kind = "reminder" if reminder else "invitation"
    _set_common_headers(message, mail_from, idstring=f"{kind}-{notice.invitation_id}")
    message[INVITATION_HEADER] = str(notice.invitation_id)
    message.set_content(text, cte=_transfer_encoding(text))
    message.add_alternative(html, subtype="html", cte=_transfer_encoding(html))
    return message


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
    message = EmailMessage()
    message["Subject"] = PASSWORD_RESET_SUBJECT
    message["To"] = Address(display_name=to_name, addr_spec=notice.to_address)
    _set_common_headers(message, mail_from, idstring=f"password-reset-{notice.user_id}")
    message.set_content(text, cte=_transfer_encoding(text))
    message.add_alternative(html, subtype="html", cte=_transfer_encoding(html))
    return message


def render_test_message(to_address: str, mail_from: str) -> EmailMessage:
    """A short plain-text message that proves the mail settings work."""
    message = EmailMessage()
    message["Subject"] = TEST_SUBJECT
    # Assigning a header refuses CR/LF, so an address cannot smuggle in another header.
    message["To"] = to_address
    _set_common_headers(message, mail_from, idstring="test")
    text = (
        f"This is a test email from {PRODUCT_NAME}.\n"
        "\n"
        f"It was sent because an administrator tested the email settings of {PRODUCT_NAME}.\n"
        "If you can read it, those settings work; there is nothing else to do.\n"
    )
    message.set_content(text, cte=_transfer_encoding(text))
    return message


def _set_common_headers(message: EmailMessage, mail_from: str, *, idstring: str) -> None:
    message["From"] = mail_from
    message["Date"] = format_datetime(datetime.now(UTC))
    # Using the sender's domain avoids make_msgid's default DNS lookup of our hostname
    # (slow on some hosts) and keeps Message-IDs recognisably ours.
    addresses = message["From"].addresses
    domain = (addresses[0].domain if addresses else "") or "ringfence.invalid"
    message["Message-ID"] = make_msgid(idstring=idstring, domain=domain)
    # RFC 3834: tells vacation responders and ticket systems not to reply.
    message["Auto-Submitted"] = "auto-generated"


def _transfer_encoding(body: str) -> str:
    # Plain 7bit whenever it is valid, so the accept link in an outbox .eml can be read
    # or copied as is; quoted-printable would break it with "=3D" and soft line breaks.
    if body.isascii() and all(len(line) <= 998 for line in body.splitlines()):
        return "7bit"
    return "quoted-printable"
