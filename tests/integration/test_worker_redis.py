"""Email delivery with the real parts, no mocks: a Celery worker process (``ringfence worker
--beat``) on a private Redis server, an SMTP server (aiosmtpd) on loopback, and the
gateway over HTTP on a database both processes share.

Each test gets its own ``redis-server`` (so it can stop and restart it), its own SMTP
server and worker, and small retry and sweep settings. Waiting is always a bounded poll
for an observable outcome, never a sleep that an assertion relies on.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from werkzeug.serving import BaseWSGIServer, make_server

from gateway.app import create_app
from gateway.config import Settings
from mailer.celery_app import (
    BROKER_SOCKET_TIMEOUT,
    DELIVERY_POLICY_KEY,
    celery_app,
    reset_connections,
)
from tests.cluster import REDIS_SERVER, RedisServer, Worker
from tests.conftest import SESSION_SECRET, TEST_HASH_PROFILE, InitTemplates
from tests.helpers import (
    ADMIN_EMAIL,
    LiveServer,
    accept_invitation,
    close_app,
    create_workspaces,
)
from tests.smtp_support import REFUSAL, Mailbox, SlowMailbox, free_port, running_smtp

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed"),
]

WAIT = 30.0  # seconds: the most any outcome may take to show
POLL = 0.05
SMTP_REPLY = "250 2.0.0 Queued as RFTEST1"
_CELERY_KEYS = (
    "broker_url",
    "task_always_eager",
    "task_eager_propagates",
    "beat_schedule",
    DELIVERY_POLICY_KEY,
)

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None],
    what: str,
    diagnostics: Callable[[], str] = lambda: "",
    timeout: float = WAIT,
) -> T:
    """The first truthy result of ``probe``, polled for up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"Timed out after {timeout:.0f} s waiting for {what}\n{diagnostics()}")
        time.sleep(POLL)


# -- the whole stack ----------------------------------------------------------------------


@dataclass
class Stack:
    server: LiveServer
    admin: httpx.Client
    redis: RedisServer
    worker: Worker
    mailbox: Mailbox | None

    def diagnostics(self) -> str:
        return f"{self.worker.log()}\n{self.redis.log()}"

    def invitation(self, invitation_id: int) -> dict[str, Any]:
        response = self.admin.get(f"/invitations/{invitation_id}")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def wait_for(self, probe: Callable[[], T | None], what: str) -> T:
        return wait_for(probe, what, self.diagnostics)

    def wait_delivery(self, invitation_id: int, status: str) -> dict[str, Any]:
        """The invitation once its delivery status is ``status``."""

        def reached() -> dict[str, Any] | None:
            invitation = self.invitation(invitation_id)
            return invitation if invitation["delivery"]["status"] == status else None

        return self.wait_for(reached, f"invitation {invitation_id} to be {status}")

    def sweeps_done(self) -> int:
        return len(re.findall(r"ringfence\.sweep_unsent\[[^\]]+\] succeeded", self.worker.output()))

    def wait_next_sweep(self) -> None:
        """Until the worker has finished a sweep that started after this call."""
        done = self.sweeps_done()
        self.wait_for(lambda: self.sweeps_done() >= done + 2, "two more sweeps")


@pytest.fixture
def start_stack(
    tmp_path: Path, database_url: str, init_templates: InitTemplates
) -> Iterator[Callable[..., Stack]]:
    """Start Redis, an SMTP server (unless ``mailbox`` is None: then ``smtp_port`` is a
    port where nobody listens), the gateway set up as ``ringfence init`` sets it up (a
    copy of the session's, as ``admin_password`` gives) on a live HTTP server, and a
    worker with beat, all with the same settings; everything is stopped after the test,
    and the worker's output shown if it failed."""
    with stack_factory(tmp_path, database_url, init_templates) as start:
        yield start


@pytest.fixture
def start_stack_on_sqlite(
    tmp_path: Path, init_templates: InitTemplates
) -> Iterator[Callable[..., Stack]]:
    """:func:`start_stack` on SQLite only, for tests about the broker alone."""
    database_url = f"sqlite:///{tmp_path / 'ringfence.db'}"
    with stack_factory(tmp_path, database_url, init_templates) as start:
        yield start


@contextmanager
def stack_factory(
    tmp_path: Path, database_url: str, init_templates: InitTemplates
) -> Iterator[Callable[..., Stack]]:
    cleanups: list[Callable[[], None]] = []
    saved = {key: celery_app.conf.get(key) for key in _CELERY_KEYS}

    def start(mailbox: Mailbox | None, **overrides: Any) -> Stack:
        broker = RedisServer(tmp_path / "redis")
        broker.start()
        cleanups.append(broker.stop)

        if mailbox is not None:
            smtp = ExitStack()
            smtp_port = smtp.enter_context(running_smtp(mailbox))
            cleanups.append(smtp.close)
        else:
            # Bound but not listening: connections are refused, and nobody else can take
            # the port during the test.
            closed = socket.socket()
            closed.bind(("127.0.0.1", 0))
            cleanups.append(closed.close)
            smtp_port = int(closed.getsockname()[1])

        http_port = free_port()
        values: dict[str, Any] = {
            "instance_dir": tmp_path / "instance",
            "database_url": database_url,
            # The session's secret and the suite's cheap password hashing: the init
            # inputs of every other test, so the database is a copy of the session's
            # template (a real ``ringfence init`` of these settings, done once) rather
            # than an init of its own (half a second with production's argon2).
            "secret_key": SESSION_SECRET,
            "password_hash_profile": TEST_HASH_PROFILE,
            "public_url": f"http://127.0.0.1:{http_port}",
            "admin_email": ADMIN_EMAIL,
            "admin_name": "Ada Admin",
            "broker_url": broker.url,
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp_port,
            "smtp_security": "none",
            "smtp_timeout": 5.0,
            "mail_from": "Ringfence <no-reply@ringfence.test>",
            "mail_retry_backoff_seconds": 0.5,
            "mail_retry_backoff_max_seconds": 1.0,
            "mail_max_attempts": 3,
            "outbox_sweep_interval_seconds": 0.5,
            "outbox_sweep_after_seconds": 1.0,
            # No reminders: the invitations here are seconds old anyway.
            "reminder_after_days": 0,
            "log_level": "INFO",
        }
        values.update(overrides)
        settings = Settings(**values)

        admin_password = init_templates.set_up(settings)

        # Started before the gateway, so that its start-up overlaps with the gateway's.
        worker = Worker(settings, tmp_path / "worker.log")
        worker.start()
        # After the worker stopped (cleanups run in reverse), its whole output; pytest
        # shows what a test printed only when the test failed.
        cleanups.append(lambda: print(worker.log(tail=200_000)))
        cleanups.append(worker.stop)

        app = create_app(settings)
        cleanups.append(lambda: close_app(app))
        httpd: BaseWSGIServer = make_server("127.0.0.1", http_port, app, threaded=True)
        thread = threading.Thread(
            target=lambda: httpd.serve_forever(poll_interval=0.05), daemon=True
        )
        thread.start()
        cleanups.append(lambda: (httpd.shutdown(), thread.join(timeout=5)))

        server = LiveServer(f"http://127.0.0.1:{http_port}", app, settings, admin_password)
        admin = server.admin()
        cleanups.append(admin.close)
        create_workspaces(admin, "acme")
        worker.wait_ready()
        # First thing at teardown: the worker's shutdown overlaps with the others'.
        cleanups.append(worker.begin_stop)
        return Stack(server, admin, broker, worker, mailbox)

    try:
        yield start
    finally:
        for cleanup in reversed(cleanups):
            cleanup()
        # celery_app is process-wide: later tests get the configuration they had.
        celery_app.conf.update(saved)
        reset_connections()


def invite(stack: Stack, email: str) -> dict[str, Any]:
    response = stack.admin.post(
        "/invitations",
        json={
            "email": email,
            "name": "Sam Rivera",
            "roles": [{"workspace": "acme", "role": "viewer"}],
        },
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def invite_link(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert isinstance(body, EmailMessage)
    match = re.search(r"(https?://\S+)/invite/([A-Za-z0-9_\-%]+)", body.get_content())
    assert match, body.get_content()
    return match.group(0)


# -- the tests ----------------------------------------------------------------------------


def test_worker_on_redis_delivers_the_invitation_over_smtp(
    start_stack: Callable[..., Stack],
) -> None:
    mailbox = Mailbox(data_reply=SMTP_REPLY)
    stack = start_stack(mailbox)

    invitation = invite(stack, "sam@example.org")

    sent = stack.wait_delivery(invitation["id"], "sent")
    assert sent["status"] == "sent"
    assert sent["delivery"]["attempts"] == 1
    assert SMTP_REPLY in sent["delivery"]["detail"], sent
    assert f":{stack.server.settings.smtp_port}" in sent["delivery"]["detail"]
    assert sent["delivery"]["sent_at"]
    # Any duplicate would have to come from a sweep; let a few more run.
    stack.wait_next_sweep()
    [(recipients, message)] = mailbox.deliveries()
    assert recipients == ["sam@example.org"]
    assert message["To"].addresses[0].addr_spec == "sam@example.org"
    assert message["X-Ringfence-Invitation"] == str(invitation["id"])

    # The emailed link is the gateway's, and it works.
    link = invite_link(message)
    assert link.startswith(f"{stack.server.url}/invite/")
    with httpx.Client(timeout=30) as browser:
        page = browser.get(link)
    assert page.status_code == 200, page.text
    token = link.rsplit("/", 1)[1]
    accepted = accept_invitation(stack.server, token)
    assert accepted.status_code == 200, accepted.text
    assert stack.invitation(invitation["id"])["status"] == "accepted"


def test_invitation_made_while_the_broker_is_down_is_swept_and_sent_once(
    start_stack: Callable[..., Stack],
) -> None:
    mailbox = Mailbox(data_reply=SMTP_REPLY)
    stack = start_stack(mailbox)
    stack.redis.stop()

    # Nothing is lost: the invitation and its outbox message are committed; only the
    # hand-off to the broker failed.
    invitation = invite(stack, "kim@example.org")
    assert invitation["delivery"]["status"] == "queued"
    assert stack.invitation(invitation["id"])["delivery"]["status"] == "queued"

    stack.redis.start()  # same port, and empty: the task was never there

    sent = stack.wait_delivery(invitation["id"], "sent")
    assert SMTP_REPLY in sent["delivery"]["detail"]
    assert sent["status"] == "sent"
    # Queued by the sweep, or by the publisher's last retry if Redis was back in time
    # (publishing runs off the request): either way one claim, one email.
    stack.wait_next_sweep()
    [(recipients, _)] = mailbox.deliveries()
    assert recipients == ["kim@example.org"]


def test_a_frozen_broker_does_not_hold_up_the_request_and_nothing_is_lost(
    start_stack_on_sqlite: Callable[..., Stack],
) -> None:
    mailbox = Mailbox(data_reply=SMTP_REPLY)
    stack = start_stack_on_sqlite(mailbox)
    stack.redis.freeze()  # accepts connections (the kernel does), answers nothing
    try:
        started = time.monotonic()
        invitation = invite(stack, "jo@example.org")
        took = time.monotonic() - started
    finally:
        stack.redis.thaw()

    # Publishing runs off the request (mailer.notifier.Publisher): the answer does not
    # wait for the broker at all (it waited up to 3 socket timeouts, 15 s, before). A
    # request that waited would take at least one socket timeout; the bound is that, not
    # a guess at how fast a loaded machine answers (2 s failed once on a busy CI run).
    assert took < BROKER_SOCKET_TIMEOUT, took
    sent = stack.wait_delivery(invitation["id"], "sent")
    assert SMTP_REPLY in sent["delivery"]["detail"]
    # The timed-out publish may have reached Redis after all, besides the sweep's: one
    # claim, one email.
    stack.wait_next_sweep()
    [(recipients, _)] = mailbox.deliveries()
    assert recipients == ["jo@example.org"]


def test_unreachable_smtp_server_is_retried_then_marked_failed(
    start_stack: Callable[..., Stack],
) -> None:
    # Back-offs of 0.5-1 s and 1-2 s between three attempts: long enough to watch.
    stack = start_stack(None, mail_retry_backoff_seconds=1.0, mail_retry_backoff_max_seconds=2.0)
    invitation = invite(stack, "lee@example.org")

    seen: list[tuple[str, str, int]] = []

    def finished() -> dict[str, Any] | None:
        current = stack.invitation(invitation["id"])
        state = (current["status"], current["delivery"]["status"], current["delivery"]["attempts"])
        if not seen or seen[-1] != state:
            seen.append(state)
        return current if current["delivery"]["status"] == "failed" else None

    failed = stack.wait_for(finished, "the invitation to fail after its retries")

    assert failed["status"] == "failed"
    assert failed["delivery"]["attempts"] == 3
    detail = failed["delivery"]["detail"]
    assert f"SMTP 127.0.0.1:{stack.server.settings.smtp_port} unreachable" in detail, detail
    assert "refused" in detail.lower(), detail
    # Meanwhile the invitation waited for a retry, still pending, with growing attempts.
    retries = [(status, attempts) for status, delivery, attempts in seen if delivery == "retry"]
    assert retries, seen
    assert all(status == "pending" and 1 <= attempts < 3 for status, attempts in retries), seen
    attempts_seen = [attempts for _, _, attempts in seen]
    assert attempts_seen == sorted(attempts_seen), seen
    log = stack.worker.output()
    assert "delivery deferred (attempt 1 of 3" in log, stack.diagnostics()
    assert "delivery deferred (attempt 2 of 3" in log, stack.diagnostics()
    # The worker records the failure, then logs it: the line may follow the status.
    final = "delivery failed, not retried (attempt 3 of 3)"
    stack.wait_for(lambda: final in stack.worker.output(), "the worker's line of the last attempt")


def test_mailbox_refused_with_550_fails_at_once(start_stack: Callable[..., Stack]) -> None:
    mailbox = Mailbox(rcpt_refusal=REFUSAL)
    stack = start_stack(mailbox)

    invitation = invite(stack, "nobody@example.org")

    failed = stack.wait_delivery(invitation["id"], "failed")
    assert failed["status"] == "failed"
    assert failed["delivery"]["attempts"] == 1
    assert REFUSAL in failed["delivery"]["detail"], failed
    assert "nobody@example.org" in failed["delivery"]["detail"]
    # A final answer is not retried, by the task or by a sweep.
    stack.wait_next_sweep()
    assert mailbox.rcpt_commands == 1
    assert mailbox.deliveries() == []
    assert stack.invitation(invitation["id"])["delivery"]["attempts"] == 1


def test_the_worker_outlives_redis_dying_under_a_task_or_exits_with_failure(
    start_stack_on_sqlite: Callable[..., Stack],
) -> None:
    """Redis dies while the worker holds an unacknowledged task (its SMTP server is slow).
    The worker must keep going and consume again once Redis is back, or exit non-zero so
    that its supervisor restarts it; never stop quietly with status 0 (mail stalled for
    minutes that way: a restart-on-failure policy saw a clean exit)."""
    mailbox = SlowMailbox()
    mailbox.data_delay = 3.0
    stack = start_stack_on_sqlite(mailbox)
    invite(stack, "ann@example.org")
    assert mailbox.data_started.wait(30), stack.diagnostics()
    stack.redis.stop()  # while the task is in DATA, unacknowledged
    # The task ends (and would be acknowledged) while Redis is away.
    stack.wait_for(lambda: mailbox.data_attempts or None, "the slow DATA to end")
    stack.wait_for(lambda: "succeeded" in stack.worker.output() or None, "the task to end")
    stack.redis.start()  # same port, empty
    mailbox.data_delay = 0.0
    later = invite(stack, "bo@example.org")

    def outcome() -> str | None:
        assert stack.worker.process is not None
        code = stack.worker.process.poll()
        if code is not None:
            return f"exited with {code}"
        sent = stack.invitation(later["id"])["delivery"]["status"] == "sent"
        return "consuming again" if sent else None

    result = stack.wait_for(outcome, "the worker to consume again, or to exit")
    assert result != "exited with 0", stack.diagnostics()


def test_a_worker_that_stops_on_an_unrecoverable_error_exits_with_failure(
    tmp_path: Path,
) -> None:
    """Celery logs "Unrecoverable error" and stops; the process must then exit non-zero,
    so that a restart-on-failure supervisor (deploy/) starts it again. (It exited 0: the
    worker's status was dropped on the way out.) A broker URL whose database is not a
    number is unrecoverable at once; a broker dying under a task ended the same way."""
    settings = Settings(
        instance_dir=tmp_path / "instance",
        database_url=f"sqlite:///{tmp_path / 'ringfence.db'}",
        broker_url=f"redis://127.0.0.1:{free_port()}/not-a-number",
    )
    worker = Worker(settings, tmp_path / "worker.log")
    worker.start()
    assert worker.process is not None
    status = worker.process.wait(timeout=60)
    assert "Unrecoverable error" in worker.output(), worker.log()
    assert status != 0, worker.log()


def test_readyz_and_metrics_show_whether_a_worker_is_consuming(
    start_stack_on_sqlite: Callable[..., Stack],
) -> None:
    """The worker stamps its row while its consumer is connected: with Redis gone, the
    gateway reports no worker consuming (before mail piles up), and one again once the
    worker is back on Redis."""
    stack = start_stack_on_sqlite(Mailbox(), mail_worker_heartbeat_seconds=0.3)

    def consuming() -> int | None:
        with stack.server.client() as anonymous:
            return anonymous.get("/readyz").json()["mail_workers_consuming"]  # type: ignore[no-any-return]

    def scraped() -> float:
        text = httpx.get(f"{stack.server.url}/metrics", timeout=30).text
        [line] = [x for x in text.splitlines() if x.startswith("ringfence_mail_workers_consuming ")]
        return float(line.split()[1])

    stack.wait_for(lambda: consuming() == 1 or None, "the worker to be reported consuming")
    assert scraped() == 1.0
    stack.redis.stop()
    stack.wait_for(lambda: consuming() == 0 or None, "no worker to be reported consuming")
    assert scraped() == 0.0
    stack.redis.start()
    stack.wait_for(lambda: consuming() == 1 or None, "the worker to consume again")
