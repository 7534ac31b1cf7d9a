"""The port through which services ask for people to be notified.

Services write the message to the outbox table inside their transaction and, after it
commits, tell the :class:`Notifier` its id; ``mailer`` provides the implementation and
the app factory plugs it in. The mail tasks reach the outbox through a
:class:`DeliveryLedger` that the gateway implements. Only plain values cross these
boundaries, and ``mailer`` imports nothing of the gateway but this module and its config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol


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
