"""The port between the mail tasks and whoever records deliveries (the gateway).

Tasks know messages only by id. The ledger, plugged in by the process that runs them
(the app factory, or ``ringfence worker``), hands out what to send and records what
happened, so that ``mailer`` never touches the database or its models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Outgoing:
    """One claimed attempt to send one message."""

    message_id: int
    kind: str  # "invitation" or "reminder"
    payload: dict[str, Any]  # the fields of gateway.notifier.InvitationNotice
    transport: dict[str, Any]  # the keys of mailer.celery_app.mail_config
    attempt: int  # 1 for the first attempt


class DeliveryLedger(Protocol):
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


_ledger: DeliveryLedger | None = None


def install_ledger(ledger: DeliveryLedger) -> None:
    global _ledger
    _ledger = ledger


def current_ledger() -> DeliveryLedger:
    if _ledger is None:
        raise RuntimeError("no delivery ledger installed (gateway.app or ringfence worker does it)")
    return _ledger
