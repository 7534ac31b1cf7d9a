"""The event streams' task, and what wakes it after a change commits.

``ringfence.deliver_streams`` delivers every stream that has events waiting, each from
its claimed position, in order (:mod:`mailer.streams` sends; the ledger, a
:class:`gateway.notifier.StreamLedger`, claims and records). Beat runs it every few
seconds, which also retries streams whose back-off is over; a commit that wrote audit
events wakes it at once through :data:`WAKER`.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from gateway.notifier import DECISIONS, StreamBatch, StreamLedger
from mailer.celery_app import STREAMS_INTERVAL, celery_app
from mailer.delivery import current_ledger
from mailer.streams import StreamError, deliver

logger = logging.getLogger("ringfence.streams")

BATCHES_PER_RUN = 50  # per stream and run, so that one busy stream does not hold the rest
BATCH = 200  # events per claim at most (gateway.services.streams.BATCH)
# Seconds: in-process delivery (the embedded default, no broker) looks again this often
# when nothing woke it, as beat's sweep does with a broker. A lost wake-up (the streams
# tolerate them: gateway.services.streams) then delays delivery by this much, not 30 s.
IDLE_POLL = STREAMS_INTERVAL


def stream_ledger() -> StreamLedger | None:
    try:
        ledger = current_ledger()
    except RuntimeError:
        return None
    return ledger if isinstance(ledger, StreamLedger) else None


def deliver_batch(ledger: StreamLedger, batch: StreamBatch) -> tuple[int, str | None]:
    """Send one claimed batch and record how far it got: (events delivered, error). A
    delivery that ran out of time without an error leaves the rest for the next claim."""
    done: list[int] = []
    error: str | None = None
    try:
        deliver(batch, done.append)
    except (StreamError, OSError) as exc:
        error = str(exc) or type(exc).__name__
    except Exception as exc:  # a bug: recorded like a failure (retried, then paused)
        logger.exception("Event stream %s: delivery failed unexpectedly", batch.stream_id)
        error = f"unexpected error: {type(exc).__name__}: {exc}"
    complete = error is None and len(done) == len(batch.events)
    cursor = batch.through_id if complete else (done[-1] if done else 0)
    ledger.record_stream(batch.stream_id, batch.token, cursor, len(done), error, batch.lane)
    if error:
        logger.warning(
            "Event stream %s: %d event(s) delivered, then: %s", batch.stream_id, len(done), error
        )
    return len(done), error


@celery_app.task(name="ringfence.deliver_streams")
def deliver_streams() -> dict[str, Any]:
    """Deliver what every active stream has waiting; counts of events and failures."""
    ledger = stream_ledger()
    if ledger is None:
        return {"delivered": 0, "failed": 0}
    delivered = failed = 0
    for stream_id in ledger.streams_due():
        for _ in range(BATCHES_PER_RUN):
            batch = ledger.claim_stream(stream_id)
            if batch is None:
                break
            count, error = deliver_batch(ledger, batch)
            delivered += count
            if error:
                failed += 1
                break
            if batch.lane == DECISIONS and len(batch.events) < BATCH:
                break  # it had all there was; what came since, its wake-up brings
    return {"delivered": delivered, "failed": failed}


class StreamWaker:
    """Starts delivery soon after a commit, from a thread of its own, never the
    request's: with a broker it publishes ``deliver_streams`` (wake-ups that come while
    it publishes make one task); without one (eager, the embedded default) the thread
    delivers itself, and comes back when a stream's retry is due. One per process."""

    def __init__(self) -> None:
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._pid: int | None = None

    def wake(self) -> None:
        if self._pid != os.getpid():  # after a fork the parent's thread is not here
            with self._lock:
                if self._pid != os.getpid():
                    threading.Thread(
                        target=self._run, name="ringfence-streams", daemon=True
                    ).start()
                    self._pid = os.getpid()
        self._wake.set()

    def _run(self) -> None:
        wait: float | None = None
        while True:
            self._wake.wait(wait)
            self._wake.clear()
            wait = None
            try:
                if not celery_app.conf.task_always_eager:
                    deliver_streams.apply_async()
                    continue
                deliver_streams()
                ledger = stream_ledger()
                due = ledger.streams_wait() if ledger else None
                wait = IDLE_POLL if due is None else min(IDLE_POLL, max(0.01, due))
            except Exception as exc:
                # The broker or the database is away: beat, or the next wake-up, retries.
                logger.warning("Event streams: could not start delivery: %s", exc)
                wait = IDLE_POLL


WAKER = StreamWaker()
