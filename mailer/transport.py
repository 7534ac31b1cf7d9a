"""Delivery of rendered messages: to an SMTP server, or to an outbox folder.

Owns the mapping of SMTP and network failures onto two outcomes the tasks act on:
:class:`TransientDeliveryError` (try again later) and :class:`PermanentDeliveryError`
(retrying cannot help).
"""

from __future__ import annotations

import os
import re
import smtplib
import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any, Protocol

from gateway.notifier import in_words
from mailer.messages import INVITATION_HEADER
from mailer.tls import tls_context

SECURITY_MODES = ("none", "starttls", "tls")


class DeliveryError(Exception):
    """A message could not be delivered; ``reply`` is the server's answer, if any."""

    def __init__(self, message: str, *, code: int | None = None, reply: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reply = reply


class TransientDeliveryError(DeliveryError):
    """Delivery may succeed later: connection refused, timeouts, SMTP 4xx."""


class PermanentDeliveryError(DeliveryError):
    """Delivery will not succeed by retrying: SMTP 5xx, unusable configuration."""


# Called with the outcome the moment the message is out of our hands (the SMTP server
# accepted DATA, or the file is in place), before the connection is closed.
Accepted = Callable[[str], None]


class Transport(Protocol):
    def send(self, message: EmailMessage, on_accepted: Accepted | None = None) -> str:
        """Deliver ``message``; return a human-readable outcome (SMTP reply, file path),
        and tell ``on_accepted`` as soon as it is delivered."""
        ...


_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class OutboxTransport:
    """Writes each message as an ``.eml`` file; the embedded default, and for tests."""

    directory: Path

    def send(self, message: EmailMessage, on_accepted: Accepted | None = None) -> str:
        """Write ``message`` to ``<UTC timestamp>-invitation-<id>.eml``; return its path."""
        try:
            path = self._write(message)
        except OSError as exc:
            # Disk full, a folder not yet mounted or made writable: like an SMTP server
            # that is away, it may work later, and the tasks handle it the same way.
            raise TransientDeliveryError(
                f"outbox {self.directory}: cannot write the message: {exc}"
            ) from exc
        if on_accepted is not None:
            on_accepted(path)
        return path

    def _write(self, message: EmailMessage) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC)
        # Microseconds keep names unique and the folder sorted by time of sending.
        stamp = f"{now:%Y%m%dT%H%M%S}.{now:%f}Z"
        invitation_id = _UNSAFE_FILENAME.sub("_", str(message.get(INVITATION_HEADER, "")))
        stem = f"{stamp}-invitation-{invitation_id}" if invitation_id else f"{stamp}-message"
        target = self.directory / f"{stem}.eml"
        counter = 1
        while target.exists():
            target = self.directory / f"{stem}-{counter}.eml"
            counter += 1
        # CRLF line endings: an .eml is an RFC 5322 message as it would go on the wire.
        data = message.as_bytes(policy=SMTP_POLICY)
        # Write-then-rename so a reader watching the folder never sees half a message;
        # the dot prefix and .tmp suffix keep the partial file out of "*.eml" globs.
        # mkstemp's 0600 mode is deliberate: the file holds a live invitation link.
        fd, tmp_name = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return str(target)


class _SMTP(smtplib.SMTP):
    # smtplib's send_message() discards the reply to DATA, which is the one line that
    # identifies the message at the server ("250 2.0.0 Ok: queued as ...").
    last_data_reply: tuple[int, bytes] | None = None

    def data(self, msg: Any) -> tuple[int, bytes]:
        reply = super().data(msg)
        self.last_data_reply = reply
        return reply


class _SMTP_SSL(smtplib.SMTP_SSL):
    last_data_reply: tuple[int, bytes] | None = None

    def data(self, msg: Any) -> tuple[int, bytes]:
        reply = super().data(msg)
        self.last_data_reply = reply
        return reply


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


@dataclass(frozen=True)
class SmtpTransport:
    """Sends through an SMTP server with smtplib; one connection per message."""

    host: str
    port: int
    security: str = "starttls"
    username: str = ""
    password: str = field(default="", repr=False)
    timeout: float = 10.0
    ssl_context: ssl.SSLContext | None = field(default=None, kw_only=True, repr=False)

    def __post_init__(self) -> None:
        if self.security not in SECURITY_MODES:
            raise ValueError(
                f"smtp_security must be one of {SECURITY_MODES}, got {self.security!r}"
            )

    @property
    def _where(self) -> str:
        return f"SMTP {self.host}:{self.port}"

    def send(self, message: EmailMessage, on_accepted: Accepted | None = None) -> str:
        """Send ``message``; return the server's reply to DATA (also given to
        ``on_accepted`` before QUIT, which a slow or dying connection may never finish)."""
        try:
            code, reply = self._deliver(message, on_accepted)
        except smtplib.SMTPRecipientsRefused as exc:
            replies = [
                (rcpt_code, f"{rcpt}: {rcpt_code} {_text(msg)}")
                for rcpt, (rcpt_code, msg) in exc.recipients.items()
            ]
            text = "; ".join(line for _, line in replies)
            # One recipient per invitation in practice; if any refusal is final, so is
            # the whole delivery, since a retry would hit the same answer.
            worst = max(rcpt_code for rcpt_code, _ in replies) if replies else 500
            error = PermanentDeliveryError if worst >= 500 else TransientDeliveryError
            raise error(
                f"{self._where} refused the recipient: {text}", code=worst, reply=text
            ) from exc
        except smtplib.SMTPResponseException as exc:
            text = f"{exc.smtp_code} {_text(exc.smtp_error)}"
            error = PermanentDeliveryError if exc.smtp_code >= 500 else TransientDeliveryError
            raise error(
                f"{self._where} rejected the message: {text}", code=exc.smtp_code, reply=text
            ) from exc
        except smtplib.SMTPServerDisconnected as exc:
            raise TransientDeliveryError(f"{self._where} closed the connection: {exc}") from exc
        except smtplib.SMTPException as exc:
            # No reply code: STARTTLS or AUTH not offered and the like. That is
            # configuration, which no amount of retrying fixes.
            raise PermanentDeliveryError(f"{self._where}: {exc}") from exc
        except ssl.SSLCertVerificationError as exc:
            raise PermanentDeliveryError(
                f"{self._where}: TLS certificate not trusted: {exc}"
            ) from exc
        except OSError as exc:
            # Refused, reset, timed out, name not resolved: the server may be back soon.
            # (smtplib.SMTPException is an OSError too, hence this comes last.)
            raise TransientDeliveryError(f"{self._where} unreachable: {in_words(exc)}") from exc
        return f"{self._where} accepted the message: {code} {reply}"

    def _deliver(self, message: EmailMessage, on_accepted: Accepted | None) -> tuple[int, str]:
        context = self.ssl_context or tls_context()
        client: _SMTP | _SMTP_SSL
        if self.security == "tls":
            client = _SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            client = _SMTP(self.host, self.port, timeout=self.timeout)
        try:
            if self.security == "starttls":
                client.starttls(context=context)
            if self.username:
                client.login(self.username, self.password)
            client.send_message(message)
            code, reply = client.last_data_reply or (250, b"")
            if on_accepted is not None:
                on_accepted(f"{self._where} accepted the message: {code} {_text(reply)}")
            return code, _text(reply)
        finally:
            _close_quietly(client)


def _close_quietly(client: smtplib.SMTP) -> None:
    # Once DATA has been accepted the message is sent; a failing QUIT must not turn
    # that into an error, or the retry would deliver the invitation twice.
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()


def transport_from_config(cfg: Mapping[str, Any]) -> Transport:
    """SMTP when ``cfg["smtp_host"]`` is set, else the outbox folder ``cfg["outbox_dir"]``."""
    if cfg.get("smtp_host"):
        return SmtpTransport(
            host=str(cfg["smtp_host"]),
            port=int(cfg.get("smtp_port") or 587),
            security=str(cfg.get("smtp_security") or "starttls"),
            username=str(cfg.get("smtp_username") or ""),
            password=str(cfg.get("smtp_password") or ""),
            timeout=float(cfg.get("smtp_timeout") or 10.0),
        )
    return OutboxTransport(Path(cfg["outbox_dir"]))
