"""The port through which services ask for people to be notified.

Services write the message to the outbox table inside their transaction and, after it
commits, tell the :class:`Notifier` its id; ``mailer`` provides the implementation and
the app factory plugs it in. Only plain values cross this boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
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
