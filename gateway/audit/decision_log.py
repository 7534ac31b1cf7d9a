"""The decision log: one JSON line per decision of the check endpoints (all of them, or
a sample), to standard output or a file, written off the hot path.

A decision only appends a small tuple to a bounded buffer; a daemon thread formats and
writes the lines. When the buffer is full (the disk is slower than the decisions) lines
are dropped and counted rather than slowing decisions down, and a failed write is
logged and never reaches the decision: logging is best effort, deciding is not.
The app factory makes one :class:`DecisionLog` per app (kept in its
``gateway.web.state.GatewayState``) and hands it to the decision service, which calls
:meth:`DecisionLog.record`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as encode_basestring
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("ringfence.decision_log")
BUFFER_SIZE = 100_000  # decisions kept for the writer at most; beyond, lines are dropped
WRITE_INTERVAL = 0.05  # seconds between the writer's rounds


class DecisionLog:
    def __init__(
        self,
        target: str,
        sample: float = 1.0,
        request_id: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.target = target
        self.sample = min(1.0, max(0.0, sample))
        self.request_id = request_id
        self.dropped = 0
        self.failures = 0
        self.written = 0
        # A deque, not a Queue: appending is one atomic, lock-free step, and the writer
        # wakes on a timer instead of being signalled per decision (a wake-up per
        # decision would make the two threads trade the GIL on every check).
        self._buffer: deque[tuple[Any, ...]] = deque()
        self._busy = False
        self._wake = threading.Event()
        self._stopping = False
        self._stream: IO[str] | None = None
        self._start_writer()
        _open_logs.add(self)

    def _start_writer(self) -> None:
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        """In a forked child (a worker of a preloaded app): threads do not
        survive fork, so without a writer of its own the child would buffer decisions
        until it dropped them. The parent's pending lines are the parent's to write."""
        if self._stopping:
            return
        self._buffer.clear()
        self._busy = False
        self._wake = threading.Event()
        self._stream = None  # reopened by this process's writer (O_APPEND, shared file)
        self._start_writer()

    # -- the hot path ---------------------------------------------------------------

    def record(
        self, subject: str, workspace: str, resource: str, action: str, decision: Any
    ) -> None:
        """Keep one decision for the writer (if sampled); never raises, never waits."""
        try:
            if self.sample < 1.0 and random.random() >= self.sample:  # noqa: S311 - sampling
                return
            if len(self._buffer) >= BUFFER_SIZE:
                self.dropped += 1  # the writer is behind: lose a line, not time
                return
            self._buffer.append(
                (time.time(), subject, workspace, resource, action, decision, self.request_id())
            )
        except Exception:
            self.failures += 1  # a decision must never fail because of its log

    # -- the writer thread ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(WRITE_INTERVAL)
            self._wake.clear()
            self._drain()
            if self._stopping:
                self._drain()
                self._close()
                return

    def _drain(self) -> None:
        buffer = self._buffer
        while buffer:
            self._busy = True
            batch: list[str] = []
            try:
                while buffer and len(batch) < 1000:
                    batch.append(line(buffer.popleft()))
            except Exception:
                self.failures += 1
            if batch:
                self._write("".join(batch), len(batch))
        self._busy = False

    def _write(self, text: str, count: int) -> None:
        try:
            if self._stream is None:
                self._stream = self._open()
            # One write per batch of whole lines: with O_APPEND, processes sharing the
            # file (the served workers) do not interleave within a line.
            self._stream.write(text)
            self._stream.flush()
            self.written += count
        except Exception as exc:  # reported, and the next batch tries again
            self.failures += count
            if self.failures == count or self.failures % 10_000 < count:
                log.warning("decision log: cannot write to %s: %s", self.target, exc)
            self._close()

    def _open(self) -> IO[str]:
        if self.target == "stdout":
            return sys.stdout
        path = Path(self.target)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("a", encoding="utf-8")

    def _close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None and stream is not sys.stdout:
            with contextlib.suppress(OSError):
                stream.close()

    def flush(self, timeout: float = 10.0) -> bool:
        """Write every kept decision now (or fail to); False on timeout."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        while self._buffer or self._busy:
            if time.monotonic() > deadline or not self._thread.is_alive():
                return False
            self._wake.set()
            time.sleep(0.002)
        return True

    def close(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)


# Process-wide on purpose: a fork is an event of the process, not of an app, so the
# hook below restarts the writer of every open log (and nothing else reads this set).
_open_logs: weakref.WeakSet[DecisionLog] = weakref.WeakSet()


def _restart_writers_after_fork() -> None:
    for decision_log in list(_open_logs):
        decision_log._after_fork()


os.register_at_fork(after_in_child=_restart_writers_after_fork)


def line(entry: tuple[Any, ...]) -> str:
    """One JSON line; strings through json's C encoder, the rest by hand (this runs
    once per decision, in the writer thread, but still on the decisions' GIL)."""
    at, subject, workspace, resource, action, decision, request_id = entry
    allowed = getattr(decision, "allowed", False) is True
    revision = getattr(decision, "revision", None)
    return (
        f'{{"time":{_str(datetime.fromtimestamp(at, UTC).isoformat(timespec="microseconds"))},'
        f'"subject":{_str(subject)},"workspace":{_str(workspace)},'
        f'"resource":{_str(resource)},"action":{_str(action)},'
        f'"decision":"{"allow" if allowed else "deny"}",'
        f'"revision":{revision if isinstance(revision, int) else "null"},'
        f'"reason":{_str(getattr(decision, "reason", None))},'
        # The matching rule, where the engine reports one.
        f'"rule":{_str(getattr(decision, "rule", None))},'
        f'"request_id":{_str(request_id)}}}\n'
    )


def _str(value: Any) -> str:
    return "null" if value is None else encode_basestring(str(value))


def from_settings(
    target: str, sample: float, request_id: Callable[[], str | None]
) -> DecisionLog | None:
    """The log ``RINGFENCE_DECISION_LOG`` asks for: None when off (or sampled at 0)."""
    if target.strip().lower() in {"", "off", "none", "false", "0"} or sample <= 0:
        return None
    return DecisionLog(target.strip(), sample, request_id)
