"""Sampled decision events in event streams (issue 24), through the live gateway: the
check endpoints' decisions kept off the request (gateway.audit.decision_feed), written in
batches, and delivered by the streams' task after the audit events, to a webhook on
loopback that verifies every request with the ``standardwebhooks`` library."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.orm import sessionmaker

from gateway.audit.decision_feed import DecisionFeed
from gateway.config import Settings
from gateway.db.models import DecisionEvent
from gateway.web.state import gateway_state
from tests.cluster import wait_until
from tests.helpers import LiveServer, assert_problem, create_workspaces, post_check, post_decision
from tests.stream_support import TlsFiles, make_tls_files, webhook_receiver

NO_AUDIT = ["workspace.deleted"]  # audit actions these tests do not cause


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("decision-tls"))


@pytest.fixture
def settings(settings: Settings, tls_files: TlsFiles) -> Settings:
    return replace(
        settings,
        stream_allow_private_destinations=True,
        stream_ca_file=tls_files.cert,
        stream_retry_backoff_seconds=0.02,
        stream_retry_backoff_max_seconds=0.05,
    )


def new_stream(admin: httpx.Client, url: str, workspace: str, rate: float | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": f"decisions of {workspace} at {rate}",
        "workspace": workspace,
        "kind": "webhook",
        "target": url,
        "event_types": NO_AUDIT,
    }
    if rate is not None:
        body["decision_sample"] = rate
    response = admin.post("/event-streams", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_streams_get_the_sampled_decisions_of_their_workspace(
    server: LiveServer, tls_files: TlsFiles
) -> None:
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    feed = gateway_state(server.app).decision_feed
    assert feed is not None
    with (
        webhook_receiver(tls_files) as acme_hook,
        webhook_receiver(tls_files) as zero_hook,
        webhook_receiver(tls_files) as all_hook,
    ):
        acme = new_stream(root, acme_hook.url, "acme", 1)
        zero = new_stream(root, zero_hook.url, "acme", None)  # the default: no decisions
        everything = new_stream(root, all_hook.url, "*", 1.0)
        assert acme["stream"]["decision_sample"] == 1.0
        assert zero["stream"]["decision_sample"] == 0.0
        acme_hook.secrets = [acme["secret"]]
        zero_hook.secrets = [zero["secret"]]
        all_hook.secrets = [everything["secret"]]
        feed.refresh()  # as the writer does every second: which streams want decisions

        with server.client() as caller:
            for subject in ("ann@example.com", "ben@example.com"):
                post_check(caller, subject, "acme", "documents", "read")  # Flask, then lane
            post_check(caller, "cat@example.com", "globex", "documents", "read")
            post_check(caller, "dan@example.com", "globex", "documents", "write")
        evaluation = post_decision(
            server,
            "/pdp/acme/access/v1/evaluation",
            {
                "subject": {"type": "user", "id": "eve@example.com"},
                "action": {"name": "read"},
                "resource": {"type": "documents", "id": "doc-1"},
            },
        )
        assert evaluation.status_code == 200, evaluation.text

        wait_until(lambda: len(all_hook.events) >= 5, "every decision at the installation's")
        wait_until(lambda: len(acme_hook.events) >= 3, "acme's decisions at acme's stream")
        wait_until(
            lambda: (
                root.get(f"/event-streams/{everything['stream']['id']}").json()["delivered"] == 5
            ),
            "the installation stream's deliveries recorded",
        )

    # Only acme's, in order, each once: the two checks and the AuthZEN evaluation.
    events = acme_hook.events
    assert [e["data"]["subject"] for e in events] == [
        "ann@example.com",
        "ben@example.com",
        "eve@example.com",
    ]
    assert {e["data"]["workspace"] for e in events} == {"acme"}
    ids = [e["decisionid"] for e in events]
    assert ids == sorted(set(ids))
    for event, headers in zip(events, acme_hook.headers, strict=True):
        data = event["data"]
        assert event["specversion"] == "1.0"
        assert event["type"] == f"com.ringfence.decision.{data['decision']}"
        assert event["id"] == f"decision-{data['id']}"
        assert event["source"] == "http://ringfence.test"
        assert event["time"] == data["at"]
        assert headers["webhook-id"] == f"ringfence-{acme['stream']['id']}-decision-{data['id']}"
        assert set(data) == {
            "id",
            "at",
            "subject",
            "workspace",
            "resource",
            "action",
            "decision",
            "reason",
            "revision",
            "request_id",
        }
        assert data["decision"] == "deny" and data["resource"] == "documents"
        assert isinstance(data["revision"], int) and data["request_id"]
    assert "Bearer" not in json.dumps(events) and "eyJ" not in json.dumps(events)
    assert acme_hook.refused == 0 and all_hook.refused == 0
    # The installation-wide stream: both workspaces'.
    assert sorted(e["data"]["workspace"] for e in all_hook.events) == ["acme"] * 3 + ["globex"] * 2
    # Rate 0: none, and the stream's audit lane alone.
    assert zero_hook.events == []
    # The receiver answers before the worker records the delivery: wait for the record.
    shown = wait_until(
        lambda: (
            (s := root.get(f"/event-streams/{acme['stream']['id']}").json())["delivered"] == 3 and s
        ),
        "acme's deliveries recorded",
    )
    assert shown["decision_cursor"] >= ids[-1]
    assert shown["failures"] == 0


def test_the_rate_is_validated_and_changed_by_patch(
    server: LiveServer, tls_files: TlsFiles
) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    for bad in (1.5, -0.1, "often"):
        refused = root.post(
            "/event-streams",
            json={
                "name": "x",
                "workspace": "acme",
                "kind": "file",
                "target": "x.jsonl",
                "event_types": ["*"],
                "decision_sample": bad,
            },
        )
        problem = assert_problem(refused, 422, "invalid-input")
        assert "decision_sample" in json.dumps(problem)
    created = root.post(
        "/event-streams",
        json={
            "name": "file",
            "workspace": "acme",
            "kind": "file",
            "target": "decisions.jsonl",
            "event_types": NO_AUDIT,
        },
    )
    assert created.status_code == 201, created.text
    url = f"/event-streams/{created.json()['stream']['id']}"
    changed = root.patch(url, json={"decision_sample": 0.25})
    assert changed.status_code == 200, changed.text
    assert root.get(url).json()["decision_sample"] == 0.25
    assert_problem(root.patch(url, json={"decision_sample": 2}), 422, "invalid-input")
    audited = root.get("/audit", params={"action": "event_stream.updated"}).json()
    items = audited["items"] if isinstance(audited, dict) else audited
    assert any(e["after"]["decision_sample"] == 0.25 for e in items)


def test_a_full_queue_drops_and_counts_rather_than_waiting(server: LiveServer) -> None:
    """The writer stopped (as a slow database would leave it behind): a decision is
    kept while the bound allows, then dropped and counted, and the caller goes on."""
    factory = sessionmaker(bind=gateway_state(server.app).db)
    feed = DecisionFeed(factory, limit=2)
    feed.close()  # no writer from here on: nothing empties the queue
    feed.wants = ({"acme": 1.0}, 0.0)

    def dropped() -> float:
        value = REGISTRY.get_sample_value(
            "ringfence_decision_events_dropped_total", {"reason": "queue_full"}
        )
        return value or 0.0

    before = dropped()
    for _ in range(5):
        feed.record("ann@example.com", "acme", "documents", "read", None)
    feed.record("ann@example.com", "globex", "documents", "read", None)  # not wanted
    assert len(feed._buffer) == 2
    assert feed.dropped == 3 and dropped() - before == 3
    with server.client() as anonymous:
        scraped = anonymous.get("/metrics")
    if scraped.status_code == 200:
        assert "ringfence_decision_events_dropped_total" in scraped.text


def test_rate_zero_keeps_nothing_and_costs_a_lookup(server: LiveServer) -> None:
    factory = sessionmaker(bind=gateway_state(server.app).db)
    feed = DecisionFeed(factory, limit=2)
    try:
        feed.wants = ({"acme": 0.0}, 0.0)
        feed.record("ann@example.com", "acme", "documents", "read", None)
        assert len(feed._buffer) == 0 and feed.dropped == 0
        assert feed.flush()
        with factory() as session:
            assert session.query(DecisionEvent).count() == 0
    finally:
        feed.close()


def test_a_preloading_parent_runs_no_writer_and_each_forked_worker_its_own(
    server: LiveServer,
) -> None:
    """Under `ringfence serve` (START_THREADS_AFTER_FORK) the app is built in the parent, then
    forked. A writer there queried the database every second, and a fork at the wrong
    moment could copy a lock it held into a worker, held for ever (a worker's first
    request once hung). The parent's feed has no writer; the fork hook starts one."""
    factory = sessionmaker(bind=gateway_state(server.app).db)
    feed = DecisionFeed(factory, limit=2, start_after_fork=True)
    try:
        assert not feed._thread.is_alive()
        feed._after_fork()  # what os.register_at_fork runs in the child
        assert feed._thread.is_alive() and feed._thread.name == "decision-log"
        feed.wants = ({"acme": 1.0}, 0.0)
        feed.record("ann@example.com", "acme", "documents", "read", None)
        assert feed.flush()
        with factory() as session:
            assert session.query(DecisionEvent).count() == 1
    finally:
        feed.close()
