"""The decision log of the check endpoints, over real HTTP: one JSON line per decision
(request id included), sampling, a log that cannot be written never failing a
decision, and what it costs a decision (measured, printed)."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import decision_log
from gateway.audit.decision_log import DecisionLog
from gateway.config import Settings
from gateway.engine.engine import Decision
from gateway.services.decisions import DecisionService
from gateway.web.state import gateway_state
from tests.helpers import (
    ADMIN_EMAIL,
    LiveServer,
    close_app,
    create_workspaces,
    post_check,
    post_decision,
)

# The log does not depend on the database: SQLite is enough.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "decisions.jsonl"


@pytest.fixture
def settings(settings: Settings, log_path: Path) -> Settings:
    return replace(settings, decision_log=str(log_path))


def lines(server: LiveServer, path: Path) -> list[dict[str, Any]]:
    current = gateway_state(server.app).decision_log
    assert current is not None and current.flush()
    return [json.loads(line) for line in path.read_text().splitlines()]


@sqlite_only
def test_each_decision_is_one_json_line(server: LiveServer, log_path: Path) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    with server.client() as caller:
        allowed = post_check(caller, ADMIN_EMAIL, "acme", "documents", "read")
        denied = post_check(caller, "nobody@example.com", "acme", "documents", "read")
        evaluation = post_decision(
            caller,
            "/access/v1/evaluation",
            {
                "subject": {"type": "user", "id": ADMIN_EMAIL},
                "resource": {"type": "documents", "id": "1", "properties": {"workspace": "acme"}},
                "action": {"name": "write"},
            },
            headers={"X-Request-ID": "req-evaluation-1"},
        )
    assert evaluation.status_code == 200
    logged = lines(server, log_path)
    assert [(e["subject"], e["decision"]) for e in logged] == [
        (ADMIN_EMAIL, "allow"),
        ("nobody@example.com", "deny"),
        (ADMIN_EMAIL, "allow"),
    ]
    first, second, third = logged
    assert first["workspace"] == "acme" and first["resource"] == "documents"
    assert first["action"] == "read" and first["revision"] == allowed.json()["revision"]
    assert first["request_id"] == allowed.headers["X-Request-ID"]
    assert second["reason"] == "unknown subject"
    assert second["request_id"] == denied.headers["X-Request-ID"]
    assert third["request_id"] == "req-evaluation-1" and third["action"] == "write"
    assert first["time"].endswith("+00:00")


def test_sampling_keeps_about_that_share(tmp_path: Path) -> None:
    path = tmp_path / "sampled.jsonl"
    sampled = DecisionLog(str(path), sample=0.25)
    decision = Decision(True, 7, "allowed by policy")
    for n in range(4000):
        sampled.record(f"user:{n}", "acme", "documents", "read", decision)
    assert sampled.flush()
    count = len(path.read_text().splitlines())
    sampled.close()
    # Binomial(4000, 0.25): mean 1000, standard deviation about 27.
    assert 850 < count < 1150, count
    assert decision_log.from_settings("off", 1.0, lambda: None) is None
    assert decision_log.from_settings(str(path), 0.0, lambda: None) is None


def test_a_forked_worker_writes_its_own_decisions(tmp_path: Path) -> None:
    # `ringfence serve` preloads the app, so the log is made in the master and its writer thread
    # does not survive the fork: the worker must start its own.
    path = tmp_path / "forked.jsonl"
    shared = DecisionLog(str(path))
    decision = Decision(False, 3, "no rule allows")
    shared.record("user:1", "acme", "documents", "read", decision)
    assert shared.flush()
    pid = os.fork()
    if pid == 0:  # the worker: exit code 0 only if its line was written
        try:
            shared.record("user:2", "acme", "documents", "write", decision)
            os._exit(0 if shared.flush(timeout=5) else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    shared.close()
    subjects = [json.loads(line)["subject"] for line in path.read_text().splitlines()]
    assert subjects == ["user:1", "user:2"]


@sqlite_only
def test_a_log_that_cannot_be_written_never_fails_a_decision(
    server: LiveServer, log_path: Path
) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    # The log's folder becomes a plain file before its first line: every write fails.
    assert not log_path.parent.exists()
    log_path.parent.write_text("not a folder")
    broken = gateway_state(server.app).decision_log
    assert broken is not None
    with server.client() as caller:
        for _ in range(20):
            response = post_check(caller, ADMIN_EMAIL, "acme", "documents", "read")
            assert response.json()["allowed"] is True
        assert not post_check(caller, "nobody@example.com", "acme", "documents", "read").json()[
            "allowed"
        ]
    assert broken.flush()
    assert broken.failures == 21 and broken.written == 0


@sqlite_only
def test_a_burst_of_decisions_is_logged_whole(settings: Settings, admin_password: str) -> None:
    """Decisions straight through the service as fast as it answers: every one is written,
    none dropped. What the log costs a decision is measured by `make bench` (bench/run.py
    holds its budget), not asserted here under the suite's load."""
    from gateway.app import create_app

    app = create_app(settings)
    try:
        state = gateway_state(app)
        active = state.decision_log
        assert active is not None
        service = DecisionService(state.engine, activity=state.activity, decision_log=active)
        decisions = 5000
        for _ in range(decisions):
            service.check(ADMIN_EMAIL, "acme", "documents", "read")
        assert active.flush(60)
        assert active.written == decisions and active.dropped == 0
    finally:
        close_app(app)
