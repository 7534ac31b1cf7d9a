"""Sign-in throttling: after too many failures for one address or from one client, sign-in
is refused for a while. Keyed by the address as typed, whether or not an account exists,
so the answers reveal nothing about who has an account; normalised as stored addresses
are (gateway.emails), so look-alike spellings of one address share one count.

Counters live in memory by default; ``RINGFENCE_RATE_LIMIT_STORAGE_URL`` (e.g. a Redis
URL) shares them between replicas.
"""

from __future__ import annotations

import time

from limits import RateLimitItem, parse, storage, strategies

from gateway.emails import normalise_email
from gateway.errors import TooManyRequests

# Logout tokens refused from one client address (OpenID Connect Back-Channel Logout, the
# endpoint of each workspace connection) before its posts are refused for a while: a
# provider sends few, and rarely a bad one.
LOGOUT_REFUSALS_PER_CLIENT = "60 per minute"


class LoginThrottle:
    def __init__(
        self,
        storage_url: str,
        per_account: str,
        per_client: str,
        resets_per_account: str = "3 per hour",
        resets_per_client: str = "20 per hour",
    ) -> None:
        self._limiter = strategies.MovingWindowRateLimiter(storage.storage_from_string(storage_url))
        self._per_account: RateLimitItem = parse(per_account)
        self._per_client: RateLimitItem = parse(per_client)
        self._resets_per_account: RateLimitItem = parse(resets_per_account)
        self._resets_per_client: RateLimitItem = parse(resets_per_client)
        self._logout_refusals: RateLimitItem = parse(LOGOUT_REFUSALS_PER_CLIENT)

    def _keys(self, email: str, client: str) -> list[tuple[RateLimitItem, str]]:
        return [
            (self._per_account, f"login-account:{normalise_email(email)}"),
            (self._per_client, f"login-client:{client}"),
        ]

    def check(self, email: str, client: str) -> None:
        """TooManyRequests if either the address or the client is locked out."""
        for item, key in self._keys(email, client):
            if not self._limiter.test(item, key):
                reset = self._limiter.get_window_stats(item, key).reset_time
                wait = max(1, int(reset - time.time()) + 1)
                raise TooManyRequests(
                    f"Too many failed sign-ins; try again in {wait} s", retry_after=wait
                )

    def failed(self, email: str, client: str) -> None:
        for item, key in self._keys(email, client):
            self._limiter.hit(item, key)

    def succeeded(self, email: str) -> None:
        self._limiter.clear(self._per_account, f"login-account:{normalise_email(email)}")

    def client_check(self, client: str) -> None:
        """TooManyRequests once ``client`` failed too often, at anything counted against
        it (passwords, codes, passkeys): a sign-in that names no account, a passkey's."""
        item, key = self._per_client, f"login-client:{client}"
        if not self._limiter.test(item, key):
            reset = self._limiter.get_window_stats(item, key).reset_time
            wait = max(1, int(reset - time.time()) + 1)
            raise TooManyRequests(
                f"Too many failed sign-ins; try again in {wait} s", retry_after=wait
            )

    def client_failed(self, client: str) -> None:
        self._limiter.hit(self._per_client, f"login-client:{client}")

    def second_factor_check(self, user_id: int, client: str) -> None:
        """TooManyRequests once the person's second step (their codes, per account, as
        typed addresses are) or the client failed too often."""
        for item, key in self._second_factor_keys(user_id, client):
            if not self._limiter.test(item, key):
                reset = self._limiter.get_window_stats(item, key).reset_time
                wait = max(1, int(reset - time.time()) + 1)
                raise TooManyRequests(
                    f"Too many wrong codes; try again in {wait} s", retry_after=wait
                )

    def second_factor_failed(self, user_id: int, client: str) -> None:
        for item, key in self._second_factor_keys(user_id, client):
            self._limiter.hit(item, key)

    def second_factor_succeeded(self, user_id: int) -> None:
        self._limiter.clear(self._per_account, f"mfa-account:{user_id}")

    def _second_factor_keys(self, user_id: int, client: str) -> list[tuple[RateLimitItem, str]]:
        return [
            (self._per_account, f"mfa-account:{user_id}"),
            (self._per_client, f"login-client:{client}"),
        ]

    def logout_check(self, client: str) -> None:
        """TooManyRequests once ``client`` sent too many refused logout tokens."""
        item, key = self._logout_refusals, f"logout-client:{client}"
        if not self._limiter.test(item, key):
            reset = self._limiter.get_window_stats(item, key).reset_time
            wait = max(1, int(reset - time.time()) + 1)
            raise TooManyRequests(
                f"Too many refused logout tokens; try again in {wait} s", retry_after=wait
            )

    def logout_refused(self, client: str) -> None:
        self._limiter.hit(self._logout_refusals, f"logout-client:{client}")

    def reset_requested(self, email: str, client: str) -> None:
        """Count a password reset request; TooManyRequests once the address typed (known
        or not, so the answer reveals nothing) or the client asked too often."""
        keys = [
            (self._resets_per_account, f"reset-account:{normalise_email(email)}"),
            (self._resets_per_client, f"reset-client:{client}"),
        ]
        for item, key in keys:
            if not self._limiter.test(item, key):
                reset = self._limiter.get_window_stats(item, key).reset_time
                wait = max(1, int(reset - time.time()) + 1)
                raise TooManyRequests(
                    f"Too many password reset requests; try again in {wait} s", retry_after=wait
                )
        for item, key in keys:
            self._limiter.hit(item, key)
