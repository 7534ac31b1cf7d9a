"""An in-memory :class:`mailer.delivery.DeliveryLedger` for the mail tasks."""

from __future__ import annotations

import json
from typing import Any

from gateway.notifier import InvitationNotice, invitation_payload
from mailer.delivery import Outgoing


class MemoryLedger:
    """A :class:`mailer.delivery.DeliveryLedger` in memory (the real one, on the outbox
    table, is tested with the gateway). Like it, it hands each attempt out once: a
    message can be claimed only while queued or waiting for a retry."""

    def __init__(self, transport: dict[str, Any]) -> None:
        self.transport = transport
        self.messages: dict[int, tuple[str, dict[str, Any]]] = {}
        self.status: dict[int, str] = {}  # queued, sending, retry, sent, failed
        self.attempts: dict[int, int] = {}
        self.claims: list[int] = []
        self.sent: dict[int, str] = {}
        self.failures: list[tuple[int, str, bool]] = []
        self.sweeps: list[float] = []
        self.to_remind: list[InvitationNotice] = []
        self.renewals = 0
        self.workers: set[str] = set()

    def add(self, notice: InvitationNotice, kind: str = "invitation") -> int:
        message_id = len(self.messages) + 1
        self.messages[message_id] = (kind, json.loads(json.dumps(invitation_payload(notice))))
        self.status[message_id] = "queued"
        self.attempts[message_id] = 0
        return message_id

    def claim(self, message_id: int) -> Outgoing | None:
        self.claims.append(message_id)
        if self.status.get(message_id) not in {"queued", "retry"}:
            return None
        self.status[message_id] = "sending"
        self.attempts[message_id] += 1
        kind, payload = self.messages[message_id]
        return Outgoing(message_id, kind, payload, dict(self.transport), self.attempts[message_id])

    def worker_seen(self, name: str) -> None:
        self.workers.add(name)

    def worker_gone(self, name: str) -> None:
        self.workers.discard(name)

    def renew(self, message_id: int) -> None:
        self.renewals += 1

    def record_sent(self, message_id: int, detail: str) -> None:
        assert self.status[message_id] == "sending", "recorded without a claim"
        self.status[message_id] = "sent"
        self.sent[message_id] = detail

    def record_failure(self, message_id: int, reason: str, *, final: bool) -> None:
        assert self.status[message_id] == "sending", "recorded without a claim"
        self.status[message_id] = "failed" if final else "retry"
        self.failures.append((message_id, reason, final))

    def unsent(self, older_than_seconds: float) -> list[int]:
        self.sweeps.append(older_than_seconds)
        return [i for i, status in self.status.items() if status == "queued"]

    def queue_reminders(self) -> list[int]:
        ids = [self.add(notice, kind="reminder") for notice in self.to_remind]
        self.to_remind = []
        return ids
