"""gateway.web.bounded.BoundedCalls: calls the decision path waits on for a bounded time."""

from __future__ import annotations

import threading
import time

import pytest

from gateway.web.bounded import BoundedCalls, DatabaseStalled


def test_callers_with_one_key_share_one_call_and_its_answer() -> None:
    calls = BoundedCalls(timeout=5, workers=1)
    runs: list[int] = []
    release = threading.Event()

    def read() -> str:
        runs.append(1)
        release.wait(5)
        return "claims"

    answers: list[str] = []
    callers = [
        threading.Thread(target=lambda: answers.append(calls.run_shared("token", read)))
        for _ in range(8)
    ]
    for caller in callers:
        caller.start()
    time.sleep(0.1)  # all eight waiting on the one call
    release.set()
    for caller in callers:
        caller.join(5)
    # One thread of one: with a call each, seven would have been refused as stalled.
    assert answers == ["claims"] * 8 and runs == [1]
    assert calls.run_shared("token", read) == "claims" and runs == [1, 1]  # done: asked anew


def test_a_shared_error_reaches_every_caller_and_is_not_remembered() -> None:
    calls = BoundedCalls(timeout=5, workers=1)
    release = threading.Event()

    def refused() -> str:
        release.wait(5)
        raise PermissionError("client deleted")

    errors: list[BaseException] = []

    def ask() -> None:
        try:
            calls.run_shared("token", refused)
        except PermissionError as error:
            errors.append(error)

    callers = [threading.Thread(target=ask) for _ in range(3)]
    for caller in callers:
        caller.start()
    time.sleep(0.1)
    release.set()
    for caller in callers:
        caller.join(5)
    assert [str(e) for e in errors] == ["client deleted"] * 3
    assert calls.run_shared("token", lambda: "claims") == "claims"


def test_other_keys_still_find_the_threads_taken_and_a_stall_is_bounded() -> None:
    calls = BoundedCalls(timeout=0.1, workers=1)
    release = threading.Event()
    with pytest.raises(DatabaseStalled, match=r"did not answer within 0\.1 s"):
        calls.run_shared("a", lambda: release.wait(5))
    with pytest.raises(DatabaseStalled, match="every database thread is waiting"):
        calls.run_shared("b", lambda: "never run")
    release.set()
    assert calls.recently_stalled()
