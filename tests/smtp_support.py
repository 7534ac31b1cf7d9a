"""A real SMTP server for tests: aiosmtpd on loopback with a handler that keeps what it
accepts, and can refuse recipients or DATA with a fixed reply."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

DATA_REPLY = "250 2.0.0 Queued as TEST1"
REFUSAL = "550 5.1.1 mailbox unavailable"


class Mailbox:
    """An aiosmtpd handler: answers DATA with ``data_reply`` and keeps the envelope when
    that reply is 2xx; refuses each recipient with ``rcpt_refusal`` while it is set. It
    counts RCPT and DATA commands; it is safe to read from another thread."""

    def __init__(self, data_reply: str = DATA_REPLY, rcpt_refusal: str | None = None) -> None:
        self.data_reply = data_reply
        self.rcpt_refusal = rcpt_refusal
        self.envelopes: list[Envelope] = []
        self.rcpt_commands = 0
        self.data_attempts = 0
        self._lock = threading.Lock()

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        with self._lock:
            self.rcpt_commands += 1
        if self.rcpt_refusal is not None:
            return self.rcpt_refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            self.data_attempts += 1
            if self.data_reply.startswith("2"):
                self.envelopes.append(envelope)
        return self.data_reply

    def deliveries(self) -> list[tuple[list[str], EmailMessage]]:
        """Each accepted message with its envelope recipients, in order."""
        with self._lock:
            envelopes = list(self.envelopes)
        received = []
        for envelope in envelopes:
            assert isinstance(envelope.content, bytes)
            message = message_from_bytes(envelope.content, policy=default_policy)
            assert isinstance(message, EmailMessage)
            received.append((list(envelope.rcpt_tos), message))
        return received

    def messages(self) -> list[EmailMessage]:
        """Each accepted message, parsed, in order."""
        return [message for _, message in self.deliveries()]


class SlowMailbox(Mailbox):
    """Answers DATA after ``data_delay`` seconds, and QUIT only once ``quit_gate`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.data_delay = 0.0
        self.quit_gate = threading.Event()
        self.quit_gate.set()
        self.quitting = threading.Event()
        self.data_started = threading.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.data_started.set()
        await asyncio.sleep(self.data_delay)
        return await super().handle_DATA(server, session, envelope)

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.quitting.set()
        while not self.quit_gate.is_set():
            await asyncio.sleep(0.02)
        return "221 Bye"


class Logins:
    """Accepts (or refuses) every login and keeps each (user, password) it was sent."""

    def __init__(self, accept: bool = True) -> None:
        self.accept = accept
        self.seen: list[tuple[str, str]] = []

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.seen.append((data.login.decode(), data.password.decode()))
        return AuthResult(success=self.accept, handled=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_smtp(handler: object) -> Iterator[int]:
    """An SMTP server on loopback with ``handler`` while the block runs: its port."""
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield int(controller.port)
    finally:
        controller.stop()
