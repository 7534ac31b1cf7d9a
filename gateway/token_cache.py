"""Service tokens the decision endpoints accepted a moment ago.

Checking a service token in full costs a database round trip (its key, the revocation
list, its client) and an RSA verification: milliseconds, on a path that otherwise answers
in microseconds, and impossible while the database is away. So each process remembers the
tokens it accepted for ``RINGFENCE_DECISION_TOKEN_CACHE_SECONDS`` (default 2, like the
revision check): within that time the token is not checked again, and a revocation, a
deleted client or a retired key reaches other processes within it (this process forgets a
token it revokes at once). While the database cannot be reached, a token accepted before
keeps working until it expires, and the answer says it is stale; an unknown token is
refused with 503, never accepted unchecked.
"""

from __future__ import annotations

import hashlib
import threading
import time

# Enough for every service of a large installation; beyond it the oldest half is dropped.
MAX_TOKENS = 10_000


class DecisionTokenCache:
    def __init__(self, ttl_seconds: float) -> None:
        self.ttl = ttl_seconds
        self._lock = threading.Lock()
        # digest -> (accepted at, monotonic seconds; token expiry, POSIX seconds)
        self._accepted: dict[bytes, tuple[float, float]] = {}

    def fresh(self, token: str) -> bool:
        """Accepted within the last ``ttl`` seconds and not expired since."""
        entry = self._accepted.get(_digest(token))
        return (
            entry is not None and time.monotonic() - entry[0] < self.ttl and time.time() < entry[1]
        )

    def known(self, token: str) -> bool:
        """Accepted at some point and not expired: usable while the database is away."""
        entry = self._accepted.get(_digest(token))
        return entry is not None and time.time() < entry[1]

    def remember(self, token: str, expires_at: float) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._accepted) >= MAX_TOKENS:
                for key in list(self._accepted)[: MAX_TOKENS // 2]:
                    del self._accepted[key]
            self._accepted[_digest(token)] = (time.monotonic(), float(expires_at))

    def forget(self, token: str) -> None:
        with self._lock:
            self._accepted.pop(_digest(token), None)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
