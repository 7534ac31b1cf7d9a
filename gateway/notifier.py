"""The port through which services ask for people to be notified.

Services call a :class:`Notifier` after their transaction commits, with plain values
only; ``mailer`` provides the implementation and the app factory plugs it in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class InvitationNotice:
    """Everything the invitation email needs, as plain values."""

    invitation_id: int
    to_address: str
    to_name: str
    inviter_name: str
    grants: tuple[tuple[str, str], ...]  # (workspace name, role)
    accept_url: str
    expires_at: str  # ISO 8601, UTC


class Notifier(Protocol):
    def invitation_created(self, notice: InvitationNotice) -> None:
        """Send (or queue) the invitation email for ``notice``."""
