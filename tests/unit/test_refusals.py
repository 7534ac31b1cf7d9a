"""The refusal sampler (gateway/audit/refusals.py): one event per source and window with the
count since the previous one, bounded memory, and no free text in what it lets through."""

from __future__ import annotations

import pytest

from gateway import metrics
from gateway.audit.refusals import (
    OTHER_SOURCES,
    RefusalSampler,
    category,
    reason_of,
    source_key,
    with_reason,
)
from gateway.errors import InsufficientScope, InvalidToken, Unauthorized


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sampler(max_sources: int = 100) -> tuple[RefusalSampler, Clock]:
    clock = Clock()
    return RefusalSampler(window=60.0, max_sources=max_sources, clock=clock), clock


def untracked(kind: str) -> float:
    return metrics.AUTH_REFUSALS_UNTRACKED.labels(kind)._value.get()


def test_one_event_per_source_and_window_carrying_the_count_since_the_last() -> None:
    refusals, clock = sampler()
    first = refusals.refused("access_token", "203.0.113.5", "malformed")
    assert first is not None and first.refusals == 1 and first.reasons == {"malformed": 1}
    assert first.action == "auth.token_rejected" and first.source == "203.0.113.5"
    for n in range(49):
        clock.now += 1.0  # 49 seconds: still the same window
        assert refusals.refused("access_token", "203.0.113.5", "expired" if n else "x") is None
    # Another source, and another kind from the same source, have windows of their own.
    assert refusals.refused("access_token", "203.0.113.6", "malformed") is not None
    assert refusals.refused("sso_code", "203.0.113.5", "unknown-code") is not None

    clock.now += 11.0  # the window has passed since the first event
    summary = refusals.refused("access_token", "203.0.113.5", "expired")
    assert summary is not None
    assert summary.refusals == 50  # the 49 held back and this one
    assert summary.reasons == {"expired": 49, "x": 1}
    assert refusals.refused("access_token", "203.0.113.5", "expired") is None


def test_every_refusal_is_counted_in_the_metric() -> None:
    refusals, _ = sampler()
    counter = metrics.AUTH_REFUSALS.labels("sso_callback", "state-mismatch")
    before = counter._value.get()
    for _ in range(7):
        refusals.refused("sso_callback", "198.51.100.1", "state-mismatch")
    assert counter._value.get() == before + 7


def test_memory_is_bounded_and_overflow_is_counted_and_sampled_together() -> None:
    refusals, clock = sampler(max_sources=3)
    before = untracked("access_token")
    for host in range(3):
        assert refusals.refused("access_token", f"192.0.2.{host}", "malformed") is not None
    # The table is full and nobody's window has passed: the next sources share one entry.
    shared = refusals.refused("access_token", "192.0.2.50", "malformed")
    assert shared is not None and shared.source == OTHER_SOURCES
    for host in range(51, 60):
        assert refusals.refused("access_token", f"192.0.2.{host}", "expired") is None
    assert untracked("access_token") == before + 10
    assert len(refusals._entries) == 3

    # A tracked source held one back; once the window passed, the full table forgets
    # the sources whose window is over to make room (all three here), and what they held
    # back goes out with the shared entry's next event.
    clock.now += 1.0
    assert refusals.refused("access_token", "192.0.2.0", "bad-signature") is None
    clock.now += 60.0
    fresh = refusals.refused("access_token", "192.0.2.77", "malformed")
    assert fresh is not None and fresh.source == "192.0.2.77" and fresh.refusals == 1
    assert list(refusals._entries) == [("access_token", "192.0.2.77")]
    for host in (78, 79):
        assert refusals.refused("access_token", f"192.0.2.{host}", "malformed") is not None
    shared = refusals.refused("access_token", "192.0.2.80", "malformed")  # full again
    assert shared is not None and shared.source == OTHER_SOURCES
    assert shared.reasons == {"bad-signature": 1, "expired": 9, "malformed": 1}
    assert shared.refusals == 11


def test_sources_are_addresses_and_ipv6_counts_by_its_64() -> None:
    assert source_key("203.0.113.9") == "203.0.113.9"
    assert source_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert source_key("2001:db8:1:2:bbbb::7") == "2001:db8:1:2::/64"
    assert source_key("::ffff:203.0.113.9") == "203.0.113.9"
    assert source_key("") == "unknown" and source_key(None) == "unknown"
    assert source_key("evil text, 1.2.3.4") == "unknown"


def test_reasons_are_categories_never_free_text() -> None:
    assert category("unknown-key") == "unknown-key"
    for text in ("Evil Text", "x" * 41, "a;b", "", None, "über"):
        assert category(text) == "other"
    assert reason_of(InvalidToken("The access token has expired", "expired")) == "expired"
    assert reason_of(InsufficientScope("decisions:check")) == "insufficient-scope"
    assert reason_of(Unauthorized("no")) == "invalid"
    assert reason_of(with_reason(Unauthorized("no"), "unknown-code")) == "unknown-code"
    assert reason_of(with_reason(Unauthorized("no"), "Caller's Words")) == "other"


def test_only_audited_kinds_are_sampled() -> None:
    refusals, _ = sampler()
    with pytest.raises(ValueError, match="not audited"):
        refusals.refused("decision_token", "203.0.113.5", "malformed")
