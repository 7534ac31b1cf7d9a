"""Two real gateway replicas (`ringfence serve` processes on loopback ports) on one PostgreSQL
schema, with change notices on a private Redis; TCP proxies the test controls stand in
front of Redis and of PostgreSQL, so the links can be cut and restored.

The checks: a change made on A reaches B within milliseconds through the watcher and
is applied incrementally; without Redis B catches up by polling and resubscribes when
it is back; without the database both keep deciding from memory and say so, writes
fail with 503 and leave nothing behind, and everything recovers by itself;
``X-Min-Revision`` waits or refuses; and no decision ever contradicts a revision
committed longer ago than the staleness the replica states.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import Settings
from tests.cluster import (
    OPS,
    REDIS_SERVER,
    Cluster,
    Replica,
    start_cluster,
    stop_all,
    wait_until,
)
from tests.helpers import assert_problem

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed"),
    # The replicas need a database several processes share: PostgreSQL only.
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]


def check_body(subject: str) -> dict[str, str]:
    return {"subject": subject, "workspace": "acme", "resource": "users", "action": "read"}


def metric(replica: Replica, name: str) -> float:
    text = httpx.get(f"{replica.url}/metrics", timeout=5).text
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


@pytest.fixture
def make_cluster(
    settings: Settings, admin_password: str, tmp_path: Path
) -> Iterator[Callable[..., Cluster]]:
    """A :class:`tests.cluster.Cluster` maker (poll_seconds, wait_ms, replica settings)."""
    started: list[Any] = []

    def make(poll_seconds: float = 1.0, wait_ms: int = 200, **overrides: Any) -> Cluster:
        return start_cluster(
            settings, admin_password, tmp_path, started, poll_seconds, wait_ms, **overrides
        )

    yield make
    stop_all(started)


def wait_for_answer(
    cluster: Cluster, replica: Replica, allowed: bool, timeout: float = 10.0
) -> tuple[float, dict[str, Any]]:
    """Seconds until ``replica`` answers ``allowed`` for ops, and that answer."""
    started = time.monotonic()

    def probe() -> dict[str, Any] | None:
        response = cluster.check(replica)
        assert response.status_code == 200, response.text
        body = response.json()
        return body if body["allowed"] is allowed else None

    body = wait_until(probe, f"replica {replica.name} to answer allowed={allowed}", timeout)
    return time.monotonic() - started, body


def test_a_change_on_a_reaches_b_through_the_watcher_incrementally(
    make_cluster: Callable[..., Cluster],
) -> None:
    # A long poll interval: anything arriving within a second came through Redis.
    cluster = make_cluster(poll_seconds=30)
    assert cluster.check(cluster.b).json()["allowed"] is True
    reloads_before = metric(cluster.b, "ringfence_full_reloads_total")

    delays = []
    for i in range(10):
        active = i % 2 == 1
        revision = cluster.set_ops_active(cluster.a, active)
        delay, body = wait_for_answer(cluster, cluster.b, active, timeout=5)
        assert body["revision"] >= revision
        delays.append(delay)
    delays.sort()
    assert delays[len(delays) // 2] < 0.5, delays  # median well under the poll interval

    # Incremental: revisions came from the change log, not from reloads.
    assert metric(cluster.b, "ringfence_full_reloads_total") == reloads_before
    assert metric(cluster.b, "ringfence_incremental_applies_total") >= 10
    assert metric(cluster.b, "ringfence_watcher_connected") == 1
    ready = cluster.b.ready()
    assert ready is not None and ready["revision_lag"] == 0 and ready["stale"] is False

    # A replica started while changes keep coming is ready only at the latest revision.
    stop = threading.Event()

    def churn() -> None:
        active = True
        while not stop.is_set():
            active = not active
            cluster.set_ops_active(cluster.a, active)

    churner = threading.Thread(target=churn, daemon=True)
    churner.start()
    try:
        c = Replica("c", cluster.settings, cluster.a.log_path.parent).start(wait=False)
        try:
            with cluster.a.client() as client:
                committed_before_ready = int(client.get("/readyz").json()["database_revision"])
            ready_c = c.wait_ready()
            assert ready_c["revision"] >= committed_before_ready
            assert ready_c["revision_lag"] == 0
        finally:
            c.stop()
    finally:
        stop.set()
        churner.join(timeout=30)


def test_without_redis_b_catches_up_by_polling_and_resubscribes(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(poll_seconds=1.5)
    cluster.redis_proxy.cut()
    wait_until(lambda: cluster.b.watcher() == "disconnected", "B to notice")
    assert metric(cluster.b, "ringfence_watcher_connected") == 0

    # Decisions keep coming from memory; changes arrive by the revision check.
    revision = cluster.set_ops_active(cluster.a, False)
    delay, body = wait_for_answer(cluster, cluster.b, False, timeout=10)
    assert body["revision"] >= revision
    assert delay < 1.5 + 1.0, delay

    cluster.redis_proxy.restore()
    wait_until(lambda: cluster.b.watcher() == "connected", "B to resubscribe", 20)
    wait_until(lambda: cluster.a.watcher() == "connected", "A to resubscribe", 20)
    # Through Redis again: faster than the poll interval, every time.
    for active in (True, False, True):
        cluster.set_ops_active(cluster.a, active)
        delay, _ = wait_for_answer(cluster, cluster.b, active, timeout=5)
        assert delay < 0.75, delay


def test_a_frozen_redis_is_noticed_and_changes_arrive_by_polling(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Redis stops answering without closing anything (the link stalls): the watcher's
    PING goes unanswered, so B reports the watcher disconnected and polling, instead of
    "connected" for as long as the freeze lasts; changes still arrive by the revision
    check, and notices again once Redis answers."""
    cluster = make_cluster(poll_seconds=1.0, watcher_health_seconds=0.5)
    cluster.redis_proxy.pause()
    try:
        wait_until(lambda: cluster.b.watcher() == "disconnected", "B to notice", 10)
        assert cluster.b.ready()["propagation"] == "polling"  # type: ignore[index]
        assert metric(cluster.b, "ringfence_watcher_connected") == 0
        revision = cluster.set_ops_active(cluster.a, False)
        delay, body = wait_for_answer(cluster, cluster.b, False, timeout=10)
        assert body["revision"] >= revision and delay < 1.0 + 1.0, delay
    finally:
        cluster.redis_proxy.resume()
    wait_until(lambda: cluster.b.watcher() == "connected", "B to resubscribe", 20)
    assert cluster.b.ready()["propagation"] == "notices"  # type: ignore[index]


def service_client(cluster: Cluster) -> tuple[str, str]:
    """A new service client with ``decisions:check``, made through A: (id, secret)."""
    with cluster.admin(cluster.a) as admin:
        created = admin.post("/clients", json={"name": "svc", "scopes": ["decisions:check"]})
        assert created.status_code == 201, created.text
    return created.json()["client"]["client_id"], created.json()["client_secret"]


def service_token(cluster: Cluster, client: tuple[str, str] | None = None) -> str:
    """A ``decisions:check`` token of ``client`` (default: a new one), issued by A."""
    client_id, secret = client or service_client(cluster)
    with cluster.a.client() as anonymous:
        issued = anonymous.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": "decisions:check"},
            auth=(client_id, secret),
        )
    assert issued.status_code == 200, issued.text
    return str(issued.json()["access_token"])


def test_without_the_database_decisions_continue_stale_and_writes_fail_cleanly(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(poll_seconds=0.5)
    before = cluster.check(cluster.b)
    assert before.json()["allowed"] is True and before.headers["X-Ringfence-Stale"] == "false"
    # Two service tokens; B has checked (and remembers) only the first one.
    used, unused = service_token(cluster), service_token(cluster)
    assert cluster.check(cluster.b, Authorization=f"Bearer {used}").status_code == 200

    cluster.db_proxy.cut()
    for replica in (cluster.a, cluster.b):
        wait_until(
            lambda r=replica: cluster.check(r).headers["X-Ringfence-Stale"] == "true", "stale"
        )  # type: ignore[misc]
        response = cluster.check(replica)
        assert response.status_code == 200 and response.json()["allowed"] is True
        assert float(response.headers["X-Ringfence-Staleness"]) > 0
        assert metric(replica, "ringfence_stale") == 1
        ready = httpx.get(f"{replica.url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text  # serving from memory
        assert ready.json()["stale"] is True and ready.json()["database"] == "unreachable"

    # A service token B accepted before keeps working; one it never saw cannot be checked.
    remembered = cluster.check(cluster.b, Authorization=f"Bearer {used}")
    assert remembered.status_code == 200 and remembered.json()["allowed"] is True
    assert remembered.headers["X-Ringfence-Stale"] == "true"
    unknown = cluster.check(cluster.b, Authorization=f"Bearer {unused}")
    assert_problem(unknown, 503, "database-unavailable")

    # Writes fail with a clear 503 and change nothing.
    with cluster.admin(cluster.a) as admin:
        refused = admin.post(f"/users/{cluster.ops_id}/deactivate")
        assert_problem(refused, 503, "database-unavailable", "nothing was changed")
        assert refused.headers["Retry-After"]
        refused = admin.post("/workspaces", json={"slug": "globex", "name": "Globex"})
        assert_problem(refused, 503, "database-unavailable")
    # A caller asking for a revision the replica cannot reach gets 503, not a stale answer.
    far = cluster.check(cluster.b, **{"X-Min-Revision": "1000000"})
    assert_problem(far, 503, "replica-stale", "cannot reach the database")

    cluster.db_proxy.restore()
    for replica in (cluster.a, cluster.b):
        wait_until(
            lambda r=replica: cluster.check(r).headers["X-Ringfence-Stale"] == "false",  # type: ignore[misc]
            "recovery",
        )
        assert metric(replica, "ringfence_stale") == 0
    # Nothing of the refused writes happened; writes work again and propagate.
    assert cluster.check(cluster.b).json()["allowed"] is True
    with cluster.admin(cluster.a) as admin:
        assert admin.get("/workspaces/globex").status_code == 404
    revision = cluster.set_ops_active(cluster.a, False)
    _, body = wait_for_answer(cluster, cluster.b, False, timeout=5)
    assert body["revision"] >= revision


def test_the_other_replica_refuses_ended_tokens_as_soon_as_the_notice_arrives(
    make_cluster: Callable[..., Cluster],
) -> None:
    """B remembers tokens for ten minutes and checks revisions every 30 s: a client
    deleted or a token revoked on A is refused by B within the notice's delay."""
    cluster = make_cluster(poll_seconds=30, decision_token_cache_seconds=600)
    doomed, kept = service_client(cluster), service_client(cluster)
    of_doomed, revoked, other = (
        service_token(cluster, doomed),
        service_token(cluster, kept),
        service_token(cluster, kept),
    )

    def status(token: str) -> int:
        return cluster.check(cluster.b, Authorization=f"Bearer {token}").status_code

    for token in (of_doomed, revoked, other):
        assert status(token) == 200 and status(token) == 200  # checked, then remembered
    reloads_before = metric(cluster.b, "ringfence_full_reloads_total")

    with cluster.admin(cluster.a) as admin:
        started = time.monotonic()
        assert admin.delete(f"/clients/{doomed[0]}").status_code == 200
    wait_until(lambda: status(of_doomed) == 401, "B to refuse the deleted client's token", 5)
    assert time.monotonic() - started < 1.0
    problem = assert_problem(
        cluster.check(cluster.b, Authorization=f"Bearer {of_doomed}"), 401, "unauthorized"
    )
    assert problem["reason"] == "client-deleted"
    assert status(other) == 200

    with cluster.a.client() as anonymous:
        started = time.monotonic()
        answer = anonymous.post("/oauth/revoke", data={"token": revoked}, auth=kept)
    assert answer.status_code == 200, answer.text
    wait_until(lambda: status(revoked) == 401, "B to refuse the revoked token", 5)
    assert time.monotonic() - started < 1.0
    assert status(other) == 200
    # Applied from the change log, not by reloading.
    assert metric(cluster.b, "ringfence_full_reloads_total") == reloads_before


def test_min_revision_waits_for_the_revision_or_refuses(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(poll_seconds=30, wait_ms=300)
    # Without notices and with a long poll interval, only the wait's own check helps.
    cluster.redis_proxy.cut()
    wait_until(lambda: cluster.b.watcher() == "disconnected", "B to notice")
    # (readyz itself checks the database; make a change after it.)
    revision = cluster.set_ops_active(cluster.a, False)

    response = cluster.check(cluster.b, **{"X-Min-Revision": str(revision)})
    assert response.status_code == 200, response.text
    assert response.json()["revision"] >= revision and response.json()["allowed"] is False

    started = time.monotonic()
    refused = cluster.check(cluster.b, **{"X-Min-Revision": str(revision + 1000)})
    waited = time.monotonic() - started
    problem = assert_problem(refused, 409, "revision-not-reached", "did not arrive within 300 ms")
    assert problem["min_revision"] == revision + 1000 and problem["revision"] >= revision
    assert 0.25 < waited < 3, waited
    assert metric(cluster.b, 'ringfence_min_revision_refusals_total{status="409"}') == 1

    bad = cluster.check(cluster.b, **{"X-Min-Revision": "soon"})
    assert_problem(bad, 400, "bad-request", "X-Min-Revision")
    # AuthZEN's evaluation honours the same header.
    with cluster.b.client() as client:
        evaluation = client.post(
            "/access/v1/evaluation",
            json={
                "subject": {"type": "user", "id": OPS},
                "resource": {"type": "users", "id": "x", "properties": {"workspace": "acme"}},
                "action": {"name": "read"},
            },
            headers={"X-Min-Revision": str(revision + 1000)},
        )
    assert_problem(evaluation, 409, "revision-not-reached")


def test_no_decision_contradicts_a_revision_older_than_the_stated_staleness(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Churn on A (ops toggled), readers on B; Redis is cut for a while in the middle.
    Every answer must (1) match ops' state at the revision it reports and (2) include
    every toggle whose commit A confirmed before (request start - stated staleness)."""
    cluster = make_cluster(poll_seconds=1.0)
    commits: list[tuple[float, int, bool]] = []  # (confirmed at, revision, active)
    lock = threading.Lock()
    stop = threading.Event()
    answers: list[tuple[float, int, bool, float]] = []  # (sent at, revision, allowed, stale s)
    errors: list[str] = []

    def churn() -> None:
        active = True
        while not stop.is_set():
            active = not active
            revision = cluster.set_ops_active(cluster.a, active)
            with lock:
                commits.append((time.monotonic(), revision, active))
            time.sleep(0.02)

    def read() -> None:
        with cluster.b.client() as client:
            while not stop.is_set():
                sent = time.monotonic()
                response = client.post(
                    "/v1/check",
                    json={
                        "subject": OPS,
                        "workspace": "acme",
                        "resource": "users",
                        "action": "read",
                    },
                )
                if response.status_code != 200:
                    errors.append(response.text)
                    continue
                body = response.json()
                staleness = float(response.headers["X-Ringfence-Staleness"])
                answers.append((sent, body["revision"], body["allowed"], staleness))

    threads = [threading.Thread(target=churn)] + [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        cluster.redis_proxy.cut()
        time.sleep(3)
        cluster.redis_proxy.restore()
        time.sleep(2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    assert not errors, errors[:3]
    assert len(commits) >= 5 and len(answers) >= 50, (len(commits), len(answers))
    state_at = {revision: active for _, revision, active in commits}
    revisions = sorted(state_at)
    for sent, revision, allowed, staleness in answers:
        # (1) the answer is ops' state at the revision it names
        known = [r for r in revisions if r <= revision]
        if known:
            assert allowed is state_at[known[-1]], (sent, revision, allowed)
        # (2) nothing confirmed committed before (sent - staleness) is missing
        older = [r for at, r, _ in commits if at < sent - staleness]
        if older:
            assert revision >= max(older), (sent, revision, staleness, max(older))
