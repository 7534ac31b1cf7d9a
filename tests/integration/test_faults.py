"""Faults under load, judged by the revision oracle (tests/oracle.py): two replicas on
PostgreSQL through a pausable proxy answer checks while admin changes stream in through
both; the database link stalls (paused: nothing refused, nothing answered) and then
drops (cut) for a moment each. Every answer must be the state at the revision it
claims, no permission may come back after a replica denied it, an answer missing a
change must say it may (staleness), no committed change may be reported failed, and
both replicas must be fresh again soon after. ``make chaos`` runs the same with longer
faults and more of them (bench/chaos.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Settings
from tests.cluster import REDIS_SERVER, Cluster, start_cluster, stop_all, wait_until
from tests.load import (
    ChangeStream,
    CheckLoad,
    converged,
    latest_revision,
    make_subjects,
    questions_of,
)
from tests.oracle import Record, judge, read_log

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed"),
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]

POLL = 0.3  # revision_poll_seconds: stale after three silent intervals
FAULT = 1.5  # seconds each fault lasts


@pytest.fixture
def cluster(settings: Settings, admin_password: str, tmp_path: Path) -> Iterator[Cluster]:
    started: list[Any] = []
    try:
        yield start_cluster(
            settings,
            admin_password,
            tmp_path,
            started,
            poll_seconds=POLL,
            database_call_timeout_seconds=0.5,
        )
    finally:
        stop_all(started)


def test_answers_stay_true_to_their_revision_through_a_stalled_and_a_dropped_database(
    cluster: Cluster, settings: Settings
) -> None:
    with cluster.admin(cluster.a) as admin:
        subjects = make_subjects(settings, admin, 3)
    questions = questions_of(subjects)
    record = Record()
    checks = CheckLoad(cluster.replicas, questions, record, rate=100, timeout=5).start()
    changes = ChangeStream(cluster.replicas, cluster.token, subjects, record, timeout=30).start()
    convergence = {}
    try:
        wait_until(lambda: len(changes.writes) >= 5, "changes to flow", 10)
        for fault, start, end in (
            ("pause", cluster.db_proxy.pause, cluster.db_proxy.resume),
            ("cut", cluster.db_proxy.cut, cluster.db_proxy.restore),
        ):
            start()
            time.sleep(FAULT)  # the fault's length is the point: nothing to wait for
            end()
            ended = time.monotonic()
            target = latest_revision(settings.database_url)
            wait_until(
                lambda t=target: converged(cluster.replicas, questions[0], t),
                f"both replicas fresh after the {fault}",
                10,
            )
            convergence[fault] = time.monotonic() - ended
    finally:
        changes.stop()
        checks.stop()

    verdict = judge(
        read_log(settings.database_url), settings.model_path, record.answers, record.confirmed
    )
    assert verdict.ok, verdict.summary()
    assert verdict.judged >= 200, verdict.summary()
    # Both replicas said their answers came from memory while the database was away.
    assert {a.replica for a in record.answers if a.stale} == {"a", "b"}, verdict.summary()
    outcomes = changes.outcomes(settings.database_url)
    assert not outcomes.committed_reported_failed, outcomes.summary()
    assert not outcomes.other_errors, outcomes.summary()
    assert outcomes.ok >= 5 and outcomes.clean_503 >= 1, outcomes.summary()
    # Every write was answered, in time: none waited out the stall.
    assert all(w.status is not None for w in changes.writes), outcomes.summary()
    # Checks never stopped: every one answered (from memory while the database was away).
    failed = [s for s in checks.samples if s.status != 200]
    assert not failed, failed[:5]
    assert max(convergence.values()) < 2.0, convergence
