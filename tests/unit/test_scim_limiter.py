"""The SCIM connections' request budget in memory (gateway.web.scim.MovingWindow): the
limits library's moving window, counted without its expiry thread."""

from __future__ import annotations

import threading

import pytest

from gateway.errors import TooManyRequests
from gateway.web.scim import ConnectionLimiter, MovingWindow


def test_a_moving_window_counts_the_last_seconds_of_each_key() -> None:
    window = MovingWindow(3, 60)
    now = [1000.0]
    window.clock = lambda: now[0]
    for _ in range(3):
        assert window.hit("a") is None
        now[0] += 10
    assert window.hit("a") == pytest.approx(30.0)  # the first hit (at 1000) leaves at 1060
    assert window.hit("b") is None  # another key has a window of its own
    now[0] = 1060.0  # the first hit is out: room for one
    assert window.hit("a") is None
    assert window.hit("a") == pytest.approx(10.0)  # the next leaves at 1070


def test_refused_hits_are_not_counted() -> None:
    window = MovingWindow(1, 1)
    now = [0.0]
    window.clock = lambda: now[0]
    assert window.hit("a") is None
    for _ in range(5):
        now[0] += 0.1
        assert window.hit("a") is not None
    now[0] = 1.0  # one second after the only counted hit
    assert window.hit("a") is None


def test_the_limiter_answers_429_with_retry_after_and_starts_no_thread() -> None:
    limiter = ConnectionLimiter("memory://", "2 per minute")
    before = threading.active_count()
    limiter.hit(7)
    limiter.hit(7)
    with pytest.raises(TooManyRequests) as refused:
        limiter.hit(7)
    assert 1 <= refused.value.extensions["retry_after"] <= 61
    limiter.hit(8)  # another connection
    assert threading.active_count() == before
