"""Service tokens the decision endpoints accepted a moment ago.

Checking a service token in full costs a database round trip (its key, the revocation
list, its client) and an RSA verification: milliseconds, on a path that otherwise answers
in microseconds, and impossible while the database is away. So each process remembers the
tokens it accepted for ``RINGFENCE_DECISION_TOKEN_CACHE_SECONDS`` (default 2, like the
revision check): within that time the token is not checked again.

Whatever ends a token (a revocation, a deleted client, a retired key) is committed as a
revision marked as ending tokens (gateway.replication.changelog): the process that
commits it forgets every remembered token at once (:meth:`DecisionTokenCache.forget_all`,
through gateway.replication.sync), and other processes do so as soon as they apply that
revision, on its Redis notice or at their revision check. The cache time is only the
bound for a process that hears of no changes at all.

While the database cannot be reached, a token this process checked within the last
``RINGFENCE_DECISION_TOKEN_OUTAGE_GRACE_SECONDS`` (default 300) keeps working, never past
its expiry, and the answer says it is stale; after that, and for an unknown token, the
answer is 503. So no token is accepted unchecked for longer than the grace (it caps the
cache time as well).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

# Enough for every service of a large installation; beyond it the oldest half is dropped.
MAX_TOKENS = 10_000


class DecisionTokenCache:
    def __init__(self, ttl_seconds: float, outage_grace_seconds: float = 300.0) -> None:
        # The grace caps the cache time too: no token is taken unchecked for longer.
        self.ttl = min(ttl_seconds, outage_grace_seconds)
        self.outage_grace = outage_grace_seconds
        self._lock = threading.Lock()
        # digest -> (last checked against the database, monotonic seconds; token expiry,
        # POSIX seconds)
        self._accepted: dict[bytes, tuple[float, float]] = {}
        # Bumped by forget_all: a check that began before it must not remember its
        # token afterwards (it may have read the database before the token was ended).
        self.generation = 0
        # Monotonic seconds; a test moves it on rather than sleep through the cache time.
        self.clock: Callable[[], float] = time.monotonic

    def fresh(self, token: str) -> bool:
        """Checked within the last ``ttl`` seconds and not expired since."""
        entry = self._accepted.get(_digest(token))
        return entry is not None and self.clock() - entry[0] < self.ttl and time.time() < entry[1]

    def known(self, token: str) -> bool:
        """Checked within the last ``outage_grace`` seconds and not expired: usable while
        the database is away."""
        entry = self._accepted.get(_digest(token))
        return (
            entry is not None
            and self.clock() - entry[0] < self.outage_grace
            and time.time() < entry[1]
        )

    def remember(self, token: str, expires_at: float, generation: int) -> None:
        """Remember a token just checked in full; ``generation`` is :attr:`generation` as
        read before the check began (nothing is remembered if tokens were ended since)."""
        if self.ttl <= 0:
            return
        with self._lock:
            if generation != self.generation:
                return
            if len(self._accepted) >= MAX_TOKENS:
                for key in list(self._accepted)[: MAX_TOKENS // 2]:
                    del self._accepted[key]
            self._accepted[_digest(token)] = (self.clock(), float(expires_at))

    def forget(self, token: str) -> None:
        with self._lock:
            self._accepted.pop(_digest(token), None)

    def forget_all(self) -> None:
        """Some token was ended (which ones, a revision does not say): check each again."""
        with self._lock:
            self.generation += 1
            self._accepted = {}


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
