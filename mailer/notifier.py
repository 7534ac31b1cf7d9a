"""The :class:`gateway.notifier.Notifier` that delivers outbox messages through Celery.

Owns the boundary rule that notifying never fails the caller: by the time a service
calls it, the message is committed in the outbox, and an email or broker problem must
not turn that into an error response (the sweep requeues what could not be queued).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from typing import Any

from celery._state import _set_task_join_will_block

from gateway.logs import REQUEST_ID_HEADER, current_request_id
from gateway.notifier import TestOutcome
from mailer.celery_app import celery_app
from mailer.messages import render_test_message
from mailer.smtp_check import send_test_message
from mailer.stream_tasks import WAKER
from mailer.tasks import deliver_message
from mailer.transport import DeliveryError, transport_from_config

logger = logging.getLogger("ringfence.mailer")


class Publisher:
    """Publishes delivery tasks from a thread of its own, so that the request which
    committed a message answers at once whatever the broker does: a frozen or failing-over
    broker holds this thread (each attempt bounded by the socket timeouts), never a
    request. A message that could not be published, or that was still waiting here when
    the process ended, is in the outbox all the same, and the sweep requeues it."""

    MAX_WAITING = 10_000  # beyond this the sweep has them anyway; memory stays bounded

    def __init__(self) -> None:
        self._waiting: queue.Queue[tuple[int, dict[str, str] | None]] = queue.Queue(
            self.MAX_WAITING
        )
        self._pid: int | None = None
        self._lock = threading.Lock()
        self.dropped = 0

    def submit(self, message_id: int, headers: dict[str, str] | None) -> None:
        self._start_once_per_process()
        try:
            self._waiting.put_nowait((message_id, headers))
        except queue.Full:
            self.dropped += 1
            logger.warning(
                "Message %s: publisher backlog full; the sweep will queue it", message_id
            )

    def _start_once_per_process(self) -> None:
        # After a fork (the server's workers) the parent's thread is not in the child.
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                threading.Thread(target=self._run, name="ringfence-publisher", daemon=True).start()
                self._pid = os.getpid()

    def _run(self) -> None:
        while True:
            message_id, headers = self._waiting.get()
            try:
                deliver_message.apply_async((message_id,), headers=headers)
            except Exception:
                # The broker is down: the sweep requeues the message once it is back.
                logger.exception("Message %s: could not queue it", message_id)


class CeleryNotifier:
    """Queues one ``deliver_message`` task per message (runs it in place when eager)."""

    def __init__(self) -> None:
        self.publisher = Publisher()

    def message_queued(self, message_id: int) -> None:
        """Queue delivery of outbox message ``message_id``; failures are logged, never raised."""
        try:
            # The request id travels with the task, so the worker's lines name it too.
            request_id = current_request_id()
            headers = {REQUEST_ID_HEADER: request_id} if request_id else None
            if celery_app.conf.task_always_eager:
                deliver_message.apply_async((message_id,), headers=headers)
            else:
                self.publisher.submit(message_id, headers)
        except Exception:
            # With a broker: publishing failed (it is down), and the sweep requeues the
            # message once it is back. Eager: the task itself failed unexpectedly (it
            # records delivery failures rather than raising them). Either way the
            # change that queued the message stands.
            logger.exception("Message %s: could not deliver or queue it", message_id)
        finally:
            if celery_app.conf.task_always_eager:
                # An eager task guards result.get() with a process-wide flag that it sets
                # and restores; two eager tasks in two threads (a request, and a password
                # reset email sent after the answer) can leave it set for good, and every
                # later .get() in the process fails. Nothing here needs it between tasks.
                _set_task_join_will_block(False)

    def events_committed(self) -> None:
        """Audit events were committed: start delivering the event streams (from a thread
        of this process; never fails, never waits)."""
        WAKER.wake()

    def send_test(self, to_address: str, transport: dict[str, Any]) -> TestOutcome:
        """Send a short test email to ``to_address`` now, through ``transport`` (the keys
        of :func:`mailer.celery_app.mail_config`); what an SMTP server said (its code and
        at most 200 printable characters), a fixed reason, or the outbox file written."""
        try:
            message = render_test_message(to_address, str(transport["mail_from"]))
            if transport.get("smtp_host"):
                # Not the delivery transport: whoever may change the settings chooses the
                # host, and must not learn what other services there say (mailer.smtp_check).
                outcome = send_test_message(message, transport)
            else:
                outcome = TestOutcome(
                    ok=True, detail=transport_from_config(transport).send(message)
                )
        except (DeliveryError, ValueError) as exc:
            # ValueError: settings no transport can use (an unknown smtp_security), or an
            # address no header can hold. The admin testing them wants to know, not a 500.
            logger.warning("Test email to %s failed: %s", to_address, exc)
            return TestOutcome(ok=False, detail=str(exc))
        log = logger.info if outcome.ok else logger.warning
        log("Test email to %s: %s", to_address, outcome.detail)
        return outcome
