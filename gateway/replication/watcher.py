"""Change notices between replicas: a Casbin watcher on Redis pub/sub.

It has the interface of pycasbin's ``persist.Watcher`` and of the ``redis-watcher``
package (``set_update_callback``, ``update``, ``close``; messages are the same JSON
shape on the same default channel ``/casbin``), but is built directly on redis-py,
because the package cannot be given socket timeouts or a URL, prints instead of
logging, and resubscribes only when polled. Here:

- publishing never blocks a request: notices go through a queue to a publisher thread,
  with short socket timeouts; a notice lost while Redis is away is harmless, since the
  revision check finds the change anyway;
- the subscriber thread reconnects by itself with back-off, and on every (re)subscribe
  calls the callback once, because notices may have been missed while away;
- a notice names the revision (``params[0]``); the callback only wakes the revision
  check, which applies missed revisions from the database's change log.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from casbin.persist.watcher import Watcher

log = logging.getLogger("ringfence.watcher")

CHANNEL = "/casbin"
SOCKET_TIMEOUT = 2.0  # seconds: a frozen Redis must not hold a thread for long
HEALTH_CHECK_SECONDS = 5.0  # the subscriber pings this often to notice a dead link


class RedisWatcher(Watcher):
    """Publishes revision notices and calls ``callback(message)`` for each received."""

    def __init__(
        self,
        url: str,
        channel: str = CHANNEL,
        local_id: str | None = None,
        health_seconds: float = HEALTH_CHECK_SECONDS,
    ) -> None:
        self.url = url
        self.health_seconds = health_seconds
        self.channel = channel
        self.local_id = local_id or uuid.uuid4().hex
        self.connected = False  # subscribed right now
        self.received = 0
        self._callback: Callable[[str], None] = lambda _message: None
        self._on_connected: Callable[[bool], None] = lambda _connected: None
        self._outbox: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- pycasbin's Watcher interface ------------------------------------------------

    def set_update_callback(self, func: Callable[[str], None]) -> None:
        self._callback = func

    def update(self, revision: int = 0) -> None:
        """Tell every other replica that ``revision`` was committed (non-blocking)."""
        self._outbox.put(revision)

    def close(self) -> None:
        self._stop.set()
        self._outbox.put(None)
        for thread in self._threads:
            thread.join(timeout=SOCKET_TIMEOUT + 3)

    # -- ours --------------------------------------------------------------------------

    def on_connection_change(self, func: Callable[[bool], None]) -> None:
        self._on_connected = func

    def start(self) -> RedisWatcher:
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._subscribe_loop, name="ringfence-watch", daemon=True),
            threading.Thread(target=self._publish_loop, name="ringfence-notify", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def restart_after_fork(self) -> None:
        """Threads and sockets do not survive ``fork``: start afresh in the child."""
        self._outbox = queue.SimpleQueue()
        self.connected = False
        self.start()

    def _client(self) -> redis.Redis:
        return redis.Redis.from_url(
            self.url,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            health_check_interval=self.health_seconds,
        )

    def message(self, revision: int) -> str:
        # The redis-watcher package's MSG shape, so its subscribers understand ours.
        return json.dumps(
            {"method": "Update", "ID": self.local_id, "sec": "", "ptype": "", "params": [revision]}
        )

    def _publish_loop(self) -> None:
        client: redis.Redis | None = None
        while not self._stop.is_set():
            revision = self._outbox.get()
            if revision is None:
                break
            # Only the newest revision matters: a notice just says "check the log".
            try:
                while (newer := self._outbox.get_nowait()) is not None:
                    revision = max(revision, newer)
            except queue.Empty:
                pass
            try:
                client = client or self._client()
                client.publish(self.channel, self.message(revision))
            except redis.RedisError as exc:
                log.debug("could not publish revision %s: %s", revision, exc)
                if client is not None:
                    client.close()
                client = None
        if client is not None:
            client.close()

    def _set_connected(self, connected: bool) -> None:
        if connected != self.connected:
            self.connected = connected
            if connected:
                log.info("watcher subscribed to %s", self.channel)
            else:
                log.warning("watcher lost Redis; catching up by polling until it returns")
            try:
                self._on_connected(connected)
            except Exception:
                log.exception("watcher connection callback failed")

    def _subscribe_loop(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            pubsub: Any = None
            try:
                pubsub = self._client().pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                # Wait for the confirmation so "connected" means subscribed.
                deadline = time.monotonic() + SOCKET_TIMEOUT
                while not pubsub.subscribed and time.monotonic() < deadline:
                    pubsub.get_message(timeout=0.1)
                if not pubsub.subscribed:
                    raise redis.ConnectionError("no subscription confirmation")
                self._set_connected(True)
                backoff = 0.2
                self._deliver("resubscribed")  # notices may have been missed meanwhile
                last_ping = time.monotonic()
                awaiting_pong: float | None = None
                while not self._stop.is_set():
                    item = pubsub.get_message(timeout=min(1.0, self.health_seconds))
                    if item and item.get("type") == "message":
                        data = item["data"]
                        self.received += 1
                        self._deliver(data.decode() if isinstance(data, bytes) else str(data))
                    elif item and item.get("type") == "pong":
                        awaiting_pong = None
                    now = time.monotonic()
                    # Connected means answering: a frozen Redis (or a stalled link) takes
                    # a PING without a word, and reads just time out quietly.
                    if awaiting_pong is not None and now - awaiting_pong > SOCKET_TIMEOUT:
                        raise redis.TimeoutError("Redis did not answer PING")
                    if awaiting_pong is None and now - last_ping > self.health_seconds:
                        pubsub.ping()
                        last_ping = awaiting_pong = now
            except (redis.RedisError, OSError) as exc:
                log.debug("watcher connection failed: %s", exc)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        log.debug("closing the subscription failed", exc_info=True)
            self._set_connected(False)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)

    def _deliver(self, message: str) -> None:
        try:
            self._callback(message)
        except Exception:
            log.exception("watcher callback failed")


def notice_revision(message: str) -> int | None:
    """The revision a notice names; None for other messages (e.g. a resubscribe)."""
    try:
        params = json.loads(message).get("params") or []
        return int(params[0])
    except (ValueError, TypeError, AttributeError, IndexError):
        return None
