"""The port through which services ask for people to be notified.

Services write the message to the outbox table inside their transaction and, after it
commits, tell the :class:`Notifier` its id; ``mailer`` provides the implementation and
the app factory plugs it in. The mail tasks reach the outbox through a
:class:`DeliveryLedger` that the gateway implements. Only plain values cross these
boundaries, and ``mailer`` imports nothing of the gateway but this module and its config.

Names (of people and workspaces) travel into email headers, so this module also owns the
rule for them: :func:`name_problem` says why a name may not be stored (the admin API
refuses it), :func:`one_line_text` makes a stored one harmless (the mailer applies it).
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
import ssl
from dataclasses import asdict, dataclass, fields
from email.errors import HeaderParseError
from email.header import decode_header
from typing import Any, Protocol, runtime_checkable

# C0 controls (CR and LF among them), DEL, C1 controls (NEL among them), and the Unicode
# line and paragraph separators: what some parser somewhere reads as the end of a line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# An RFC 2047 encoded word, "=?charset?q|b?text?=". Found anywhere, not only between
# spaces: Python's own parser decodes one in the middle of a word, too.
_ENCODED_WORD = re.compile(r"=\?[^?]*\?[qQbB]\?.*?\?=", re.DOTALL)
# An encoded word may decode to another one; past this depth a name is an attack.
_MAX_DEPTH = 4


def _decode_words(value: str) -> str:
    """``value`` with each RFC 2047 encoded word replaced by its text, as a mail reader
    would show it. A charset that Python does not know is read as Latin-1, so that a
    control byte hidden behind a made-up charset still shows."""

    def decoded(match: re.Match[str]) -> str:
        try:
            [(data, charset)] = decode_header(match.group(0))
        except (HeaderParseError, ValueError):
            return match.group(0)
        if isinstance(data, str):  # not an encoded word to email.header after all
            return data
        try:
            return data.decode((charset or "ascii").partition("*")[0], "replace")
        except LookupError:
            return data.decode("latin-1")

    return _ENCODED_WORD.sub(decoded, value)


def has_control_character(value: str) -> bool:
    """Whether ``value`` holds a control character (a line break, say) as it is."""
    return _CONTROL.search(value) is not None


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot be a name (it holds a control character such as a line break,
    as is or inside RFC 2047 encoded words), or None when it can."""
    text = value
    for depth in range(_MAX_DEPTH + 1):
        if has_control_character(text):
            return "Must not contain control characters such as line breaks" + (
                "" if depth == 0 else ", also not inside an RFC 2047 encoded word (=?...?=)"
            )
        decoded = _decode_words(text)
        if decoded == text:
            return None
        text = decoded
    return "Must not contain control characters hidden in nested RFC 2047 encoded words"


def one_line_text(value: str) -> str:
    """``value`` as one line of plain text that no email parser turns into more: encoded
    words decoded, control characters as spaces, runs of whitespace as one space, and no
    ``=?`` left for any parser (of any Python version) to decode as an encoded word."""
    text = value
    for _ in range(_MAX_DEPTH + 1):
        cleaned = " ".join(_CONTROL.sub(" ", _decode_words(text)).split())
        if cleaned == text:
            break
        text = cleaned
    # Decoded text may hold another encoded word (nested, or one decode_header rejects
    # that a more lenient parser would accept); with its opener broken, none is left.
    return text.replace("=?", "= ?")


@dataclass(frozen=True)
class InvitationNotice:
    """Everything an invitation (or reminder) email needs, as plain values."""

    invitation_id: int
    to_address: str
    to_name: str
    inviter_name: str
    grants: tuple[tuple[str, str], ...]  # (workspace name, role)
    accept_url: str
    expires_at: str  # ISO 8601, UTC


def invitation_payload(notice: InvitationNotice) -> dict[str, Any]:
    """``notice`` as a JSON-safe dict (grants as ``[workspace, role]`` lists): what the
    outbox keeps (sealed) and the mail task reads."""
    payload = asdict(notice)
    payload["grants"] = [[workspace, role] for workspace, role in notice.grants]
    return payload


def notice_from_payload(payload: dict[str, Any]) -> InvitationNotice:
    """The :class:`InvitationNotice` a payload describes."""
    # Unknown keys are ignored so that a newer web process can add a field without
    # breaking older workers during a rolling deployment.
    values = {f.name: payload[f.name] for f in fields(InvitationNotice)}
    values["invitation_id"] = int(values["invitation_id"])
    values["grants"] = tuple((str(workspace), str(role)) for workspace, role in values["grants"])
    return InvitationNotice(**values)


@dataclass(frozen=True)
class PasswordResetNotice:
    """Everything a password reset email needs, as plain values."""

    user_id: int
    to_address: str
    to_name: str
    reset_url: str
    expires_at: str  # ISO 8601, UTC


def reset_payload(notice: PasswordResetNotice) -> dict[str, Any]:
    """``notice`` as a JSON-safe dict: what the outbox keeps (sealed)."""
    return asdict(notice)


def reset_notice_from_payload(payload: dict[str, Any]) -> PasswordResetNotice:
    """The :class:`PasswordResetNotice` a payload describes (unknown keys ignored)."""
    values = {f.name: payload[f.name] for f in fields(PasswordResetNotice)}
    values["user_id"] = int(values["user_id"])
    return PasswordResetNotice(**values)


@dataclass(frozen=True)
class TestOutcome:
    __test__ = False  # not a pytest test class, whatever its name

    ok: bool
    detail: str  # the server's reply, or why it failed


# What a failed connection means, for the admins who read a delivery's reason (workspace
# admins among them) or a check of the settings: not "[Errno 111] Connection refused".
CONNECTION_WORDS = {
    errno.ECONNREFUSED: "it refused the connection (nothing listens on that port)",
    errno.ECONNRESET: "it reset the connection",
    errno.ECONNABORTED: "the connection was aborted",
    errno.EHOSTUNREACH: "no route to it",
    errno.ENETUNREACH: "its network cannot be reached",
    errno.ETIMEDOUT: "it did not answer in time",
}


def in_words(exc: OSError) -> str:
    """``exc``, a failed connection to a server (a mail server, an identity provider),
    in words an admin can act on."""
    if isinstance(exc, socket.gaierror):
        return "its name does not resolve (check the host name)"
    if isinstance(exc, TimeoutError):
        return "it did not answer in time"
    if isinstance(exc, ssl.SSLError):
        return f"the TLS handshake failed ({exc.reason or 'check the security setting'})"
    if exc.errno in CONNECTION_WORDS:
        return CONNECTION_WORDS[exc.errno]
    return exc.strerror or str(exc) or type(exc).__name__


class Notifier(Protocol):
    def message_queued(self, message_id: int) -> None:
        """Deliver the committed outbox message ``message_id`` (now, or via the queue)."""

    def send_test(self, to_address: str, transport: dict[str, Any]) -> TestOutcome:
        """Send a test email at once through ``transport`` and report what happened."""


@dataclass(frozen=True)
class Outgoing:
    """One claimed attempt to send one outbox message."""

    message_id: int
    kind: str  # "invitation", "reminder" or "password_reset"
    payload: dict[str, Any]  # invitation_payload(...) or reset_payload(...) of the notice
    transport: dict[str, Any]  # the mail transport settings (mailer.celery_app.mail_config)
    attempt: int  # 1 for the first attempt


class DeliveryLedger(Protocol):
    """The outbox as the mail tasks see it; the gateway implements it on its database."""

    def claim(self, message_id: int) -> Outgoing | None:
        """The message to send now, or None if it is sent, failed or being sent already
        (so that a redelivered task never sends one attempt twice)."""

    def worker_seen(self, name: str) -> None:
        """Worker ``name`` is consuming (connected to the broker), as of now."""

    def worker_gone(self, name: str) -> None:
        """Worker ``name`` stopped consuming for good (a warm shutdown)."""

    def renew(self, message_id: int) -> None:
        """The message is still being sent: its claim's lease starts again (a worker
        renews it while it talks to the SMTP server, so that only a dead worker's claim
        runs out and the message is taken over)."""

    def record_sent(self, message_id: int, detail: str) -> None:
        """The SMTP server (or the outbox folder) took the message; ``detail`` is its reply."""

    def record_failure(self, message_id: int, reason: str, *, final: bool) -> None:
        """An attempt failed; ``final`` when no retry follows (5xx, or out of attempts)."""

    def unsent(self, older_than_seconds: float) -> list[int]:
        """Ids of messages still waiting after ``older_than_seconds`` (for the sweep)."""

    def queue_reminders(self) -> list[int]:
        """Queue reminder emails for invitations pending too long; their message ids."""


class Housekeeping(Protocol):
    """Scheduled upkeep that beat asks of the gateway (plain values back): the tasks in
    :mod:`mailer.housekeeping` call it, the gateway implements it on its database."""

    def expire_grants(self) -> int:
        """Remove time-limited grants that ended (audited ``grant.expired``); how many."""

    def close_due_reviews(self) -> int:
        """Finish review campaigns past their deadline; how many."""

    def start_due_review(self) -> int | None:
        """Start the periodic review campaign if one is due; its id, or None."""

    def recheck_domains(self) -> int:
        """Look up again the verified email domains due a check; how many lost their
        verification (their TXT record is gone)."""

    def forget_ended_devices(self) -> int:
        """Delete the remembered browsers of two-step sign-in that no longer skip it
        (expired, or ended by their person's password, factors or status); how many."""


# -- event streams ---------------------------------------------------------------------
#
# The audit trail delivered to SIEMs (gateway.services.streams, mailer.streams): the
# gateway hands the worker a claimed batch of events as plain values; the worker sends
# them and reports how far it got.

STREAM_KINDS = ("webhook", "syslog", "file")


def address_problem(address: str) -> str | None:
    """Why an event stream may not connect to IP ``address`` (loopback, link-local,
    private, or any other range that is not the public internet), or None."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"'{address}' is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for test, what in (
        (ip.is_loopback, "a loopback"),
        (ip.is_unspecified, "an unspecified"),
        (ip.is_link_local, "a link-local"),
        (ip.is_private, "a private"),
        (ip.is_multicast, "a multicast"),
        (ip.is_reserved, "a reserved"),
        (not ip.is_global, "a non-public"),
    ):
        if test:
            return f"{ip} is {what} address"
    return None


@dataclass(frozen=True)
class StreamBatch:
    """One claimed delivery of an event stream: its destination and the next events, in
    audit order. ``through_id`` is the stream's position once all of them are delivered
    (past the last event, when events that do not match were skipped after it)."""

    stream_id: int
    token: str  # the claim's: only its holder records the outcome
    kind: str  # webhook | syslog | file
    target: str  # https URL, host:port, or a file name in file_dir
    secrets: tuple[str, ...]  # webhooks: whsec_... secrets, newest first
    events: tuple[dict[str, Any], ...]  # audit records (gateway.audit.chain.record)
    through_id: int
    source: str  # the CloudEvents source: this installation's public URL
    allow_private: bool
    ca_file: str | None
    timeout: float
    file_dir: str
    # What the events are: AUDIT records, or DECISIONS (sampled decision events, their
    # ids decision event ids: a lane of its own, with its own cursor).
    lane: str = "audit"


AUDIT, DECISIONS = "audit", "decisions"


@runtime_checkable
class StreamLedger(Protocol):
    """The event streams as the worker sees them; the gateway implements it."""

    def streams_due(self) -> list[int]:
        """Active streams with events to deliver whose retry wait is over."""

    def streams_wait(self) -> float | None:
        """Seconds until the next stream's retry wait is over (None: none is waiting)."""

    def claim_stream(self, stream_id: int) -> StreamBatch | None:
        """The next events of ``stream_id``, claimed (None: paused, being delivered,
        waiting, or nothing new)."""

    def record_stream(
        self,
        stream_id: int,
        token: str,
        cursor: int,
        count: int,
        error: str | None,
        lane: str = "audit",
    ) -> None:
        """The claimed delivery ended: ``count`` events were delivered, up to ``cursor``;
        ``error`` says why it stopped early (a retry after a back-off, or a pause)."""
