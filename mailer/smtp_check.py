"""The settings page's test email over SMTP, and what of it the admin is shown.

The host and port come from whoever may change the settings, so the test must not be a
way to look at other services on the gateway's network. Until a peer has greeted with
``220`` and answered EHLO or HELO it is not known to be an SMTP server: whatever went
wrong before that (refused, timed out, a name that does not resolve, a TLS handshake
that failed, an SSH or HTTP banner, an FTP server's ``220`` and then ``500``) is one fixed
message, given after one fixed time, with none of the peer's bytes. After that, a reply
of the server is shown as its code and at most :data:`REPLY_CHARS` printable characters,
and problems without a reply (no STARTTLS, no AUTH, an untrusted certificate) as fixed
words. The settings' ``smtp_timeout`` is for delivery; the test uses its own, fixed,
timeouts.
"""

from __future__ import annotations

import re
import smtplib
import ssl
import time
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

from gateway.notifier import TestOutcome
from mailer.tls import tls_context
from mailer.transport import SECURITY_MODES

# Connecting, the greeting and EHLO together must fit in this; every outcome before the
# peer is known to speak SMTP is given after exactly this long (a closed port would
# otherwise answer at once, a filtered or silent one after the timeout). The default of
# the setting smtp_test_connect_seconds, which the configuration may carry.
CONNECT_SECONDS = 5.0
# Each later command's reply (STARTTLS, AUTH, MAIL, RCPT, DATA) may take this long.
REPLY_SECONDS = 10.0
REPLY_CHARS = 200

NO_SMTP_SERVER = "could not connect, or the server did not answer as an SMTP server"
NO_STARTTLS = "the SMTP server does not offer STARTTLS"
TLS_FAILED = "the TLS handshake with the SMTP server failed"
CERTIFICATE_NOT_TRUSTED = "the SMTP server's TLS certificate is not trusted"
NO_AUTH = "the SMTP server offers no login (AUTH) that Ringfence can use"
STOPPED = "the SMTP server closed the connection or stopped answering"
NOT_A_REPLY = "the SMTP server sent something that is not an SMTP reply"

_NOT_PRINTABLE = re.compile(r"[^\x21-\x7e]+")


class _NotSmtp(Exception):
    """The peer has not shown itself to be an SMTP server (why is not said, on purpose)."""


class _Client(smtplib.SMTP):
    # smtplib's send_message() drops the reply to DATA, which is what the admin wants to
    # see ("250 2.0.0 Ok: queued as ...").
    data_reply: tuple[int, bytes] = (250, b"")

    def data(self, msg: Any) -> tuple[int, bytes]:
        reply = super().data(msg)
        self.data_reply = reply
        return reply


class _TlsClient(smtplib.SMTP_SSL):
    data_reply: tuple[int, bytes] = (250, b"")

    def data(self, msg: Any) -> tuple[int, bytes]:
        reply = super().data(msg)
        self.data_reply = reply
        return reply


def reply_text(code: int, text: bytes | str) -> str:
    """An SMTP reply as ``"<code> <text>"``: lines joined, anything but printable ASCII
    (control characters, escape sequences, line breaks) as one space, the text cut to
    :data:`REPLY_CHARS` characters."""
    raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"{code} {_NOT_PRINTABLE.sub(' ', raw).strip()[:REPLY_CHARS]}".strip()


def send_test_message(
    message: EmailMessage,
    cfg: Mapping[str, Any],
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> TestOutcome:
    """Send ``message`` through the SMTP server of ``cfg`` (the keys of
    :func:`mailer.celery_app.mail_config`); what an SMTP server answered, or a fixed reason.
    Raises ValueError for an unknown ``smtp_security``."""
    security = str(cfg.get("smtp_security") or "starttls")
    if security not in SECURITY_MODES:
        raise ValueError(f"smtp_security must be one of {SECURITY_MODES}, got {security!r}")
    host = str(cfg["smtp_host"])
    port = int(cfg.get("smtp_port") or 587)
    context = ssl_context or tls_context()
    connect_seconds = float(cfg.get("smtp_test_connect_seconds") or CONNECT_SECONDS)
    deadline = time.monotonic() + connect_seconds
    try:
        client = _greet(host, port, security, context, connect_seconds, deadline)
    except _NotSmtp:
        # Padding every such outcome to the same length keeps the answer's timing from
        # telling a closed port from a filtered one or from a service that is not SMTP.
        time.sleep(max(0.0, deadline - time.monotonic()))
        return TestOutcome(ok=False, detail=NO_SMTP_SERVER)
    try:
        return _converse(
            client,
            message,
            security,
            context,
            str(cfg.get("smtp_username") or ""),
            str(cfg.get("smtp_password") or ""),
        )
    finally:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()


def _greet(
    host: str,
    port: int,
    security: str,
    context: ssl.SSLContext,
    connect_seconds: float,
    deadline: float,
) -> _Client | _TlsClient:
    """A connection whose peer greeted with 220 and answered EHLO (or HELO)."""
    client: _Client | _TlsClient
    try:
        # smtplib connects here and raises SMTPConnectError unless the greeting is 220;
        # its message (the peer's banner) is dropped with the exception.
        if security == "tls":
            client = _TlsClient(host, port, timeout=connect_seconds, context=context)
        else:
            client = _Client(host, port, timeout=connect_seconds)
    except (smtplib.SMTPException, OSError, UnicodeError) as exc:
        # OSError: refused, timed out, unresolvable, TLS handshake failed (ssl.SSLError);
        # UnicodeError: a host name IDNA cannot encode.
        raise _NotSmtp from exc
    try:
        _set_timeout(client, deadline - time.monotonic())
        # An FTP server greets with 220 too; an SMTP server also answers EHLO or HELO.
        client.ehlo_or_helo_if_needed()
    except (smtplib.SMTPException, OSError) as exc:
        client.close()
        raise _NotSmtp from exc
    return client


def _converse(
    client: _Client | _TlsClient,
    message: EmailMessage,
    security: str,
    context: ssl.SSLContext,
    username: str,
    password: str,
) -> TestOutcome:
    step = "starttls"
    try:
        _set_timeout(client, REPLY_SECONDS)
        if security == "starttls":
            client.starttls(context=context)
        step = "login"
        if username:
            client.login(username, password)
        step = "send"
        client.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()), (550, b""))
        return _refusal(code, text)
    except smtplib.SMTPResponseException as exc:
        # AUTH refused (535), sender refused, DATA refused, STARTTLS answered 454, ...
        return _refusal(exc.smtp_code, exc.smtp_error)
    except smtplib.SMTPNotSupportedError:
        return TestOutcome(ok=False, detail=NO_STARTTLS if step == "starttls" else NO_AUTH)
    except smtplib.SMTPServerDisconnected:
        return TestOutcome(ok=False, detail=STOPPED)
    except smtplib.SMTPException:
        # No reply code: "No suitable authentication method found" and the like.
        return TestOutcome(ok=False, detail=NO_AUTH if step == "login" else STOPPED)
    except ssl.SSLCertVerificationError:
        return TestOutcome(ok=False, detail=CERTIFICATE_NOT_TRUSTED)
    except ssl.SSLError:
        return TestOutcome(ok=False, detail=TLS_FAILED)
    except OSError:
        # Timed out or reset in the middle of the conversation.
        return TestOutcome(ok=False, detail=STOPPED)
    code, text = client.data_reply
    return TestOutcome(ok=True, detail=reply_text(code, text))


def _set_timeout(client: smtplib.SMTP, seconds: float) -> None:
    if seconds <= 0:
        raise TimeoutError("the test's time is up")
    if client.sock is None:
        raise smtplib.SMTPServerDisconnected("not connected")
    client.sock.settimeout(seconds)


def _refusal(code: int, text: bytes | str) -> TestOutcome:
    if not 200 <= code <= 599:
        # smtplib's -1: a line without a reply code, so not an SMTP reply to show.
        return TestOutcome(ok=False, detail=NOT_A_REPLY)
    return TestOutcome(ok=False, detail=reply_text(code, text))
