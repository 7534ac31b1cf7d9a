"""Database calls that a request must not wait on for long.

psycopg has no read timeout: a query on a link that stalls (packets stop, nothing is
refused) waits until TCP gives up, minutes later. On the decision path, and in
``/readyz``, such a wait held request threads until every one of them waited, on every
replica at once. So those calls run on a few threads of their own: the caller waits at
most its bound and then treats the database as unreachable, while a stalled call holds
only its own thread; with all of those stuck, further calls fail at once.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

T = TypeVar("T")


class DatabaseStalled(Exception):
    """The database did not answer within the bound (or every thread waits on it)."""


class BoundedCalls:
    def __init__(self, timeout: float, workers: int = 4) -> None:
        self.timeout = timeout
        self.workers = workers
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._shared: dict[str, Future[Any]] = {}
        self._pid = -1
        self.last_stalled = float("-inf")  # monotonic time of the last DatabaseStalled
        self._start()

    def recently_stalled(self, within: float = 5.0) -> bool:
        """Whether a call found the database silent in the last ``within`` seconds."""
        return time.monotonic() - self.last_stalled < within

    def run(self, call: Callable[[], T], timeout: float | None = None) -> T:
        """``call()``'s result, waiting at most ``timeout`` (default: the bound);
        DatabaseStalled past it. ``call`` opens its own session: it may outlive the wait."""
        self._start_once_per_process()
        return self._wait(self._submit(call), timeout)

    def run_shared(self, key: str, call: Callable[[], T], timeout: float | None = None) -> T:
        """:meth:`run`, except that callers asking under the same ``key`` while its call
        runs wait on that one call and share its result or its error. A burst of
        requests with one new service token (a worker just started, a reload) is then
        one database read, not one per request: with every thread taken by the same
        question, the rest would be refused as if the database were stalled."""
        self._start_once_per_process()
        with self._lock:
            future = self._shared.get(key)
            started = future is None
            if future is None:
                future = self._shared[key] = self._submit(call)
        if started:
            # Outside the lock: a call already done runs the callback here, at once.
            future.add_done_callback(lambda done: self._forget(key, done))
        return self._wait(future, timeout)

    def _submit(self, call: Callable[[], T]) -> Future[T]:
        """``call`` on a free database thread; DatabaseStalled at once if none is free."""
        if not self._slots.acquire(blocking=False):
            self.last_stalled = time.monotonic()
            raise DatabaseStalled("every database thread is waiting for an answer")
        return self._pool.submit(self._then_release, call)

    def _wait(self, future: Future[T], timeout: float | None) -> T:
        bound = self.timeout if timeout is None else timeout
        try:
            return future.result(bound)
        except FutureTimeout as exc:
            self.last_stalled = time.monotonic()
            raise DatabaseStalled(f"the database did not answer within {bound:g} s") from exc

    def _forget(self, key: str, done: Future[Any]) -> None:
        with self._lock:
            if self._shared.get(key) is done:
                del self._shared[key]

    def start(self, key: str, call: Callable[[], None]) -> None:
        """Run ``call()`` in the background, unless one started under ``key`` still runs
        or every thread waits on the database; never waits itself."""
        self._start_once_per_process()
        with self._lock:
            if key in self._running or not self._slots.acquire(blocking=False):
                return
            self._running.add(key)

        def job() -> None:
            try:
                call()
            finally:
                with self._lock:
                    self._running.discard(key)
                self._slots.release()

        self._pool.submit(job)

    def _then_release(self, call: Callable[[], T]) -> T:
        try:
            return call()
        finally:
            self._slots.release()

    def _start_once_per_process(self) -> None:
        # `ringfence serve` forks after building the app: the parent's threads are not in the child.
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._start()

    def _start(self) -> None:
        self._slots = threading.BoundedSemaphore(self.workers)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="ringfence-db")
        self._running = set()
        self._shared = {}
        self._pid = os.getpid()
