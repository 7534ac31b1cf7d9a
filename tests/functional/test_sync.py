"""Changes made by another process (here the real CLI) reach a running gateway through
the periodic revision check."""

from __future__ import annotations

import time

from gateway.engine.engine import DecisionEngine, RuleAdded, SubjectChanged, WorkspaceAdded
from gateway.engine.rules import GrantKey, grant_rule
from tests.helpers import LiveServer, decision_headers, run_cli


def check(server: LiveServer, subject: str) -> dict:
    with server.client() as client:
        response = client.post(
            "/v1/check",
            json={"subject": subject, "workspace": "acme", "resource": "users", "action": "remove"},
            headers=decision_headers(server),
        )
    assert response.status_code == 200
    return response.json()


def test_a_change_made_by_the_cli_reaches_the_running_gateway(server: LiveServer) -> None:
    admin = server.admin()
    assert admin.post("/workspaces", json={"slug": "acme", "name": "Acme"}).status_code == 201
    assert check(server, "ops@example.com")["reason"] == "unknown subject"

    result = run_cli(server.settings, "create-admin", "--email", "ops@example.com", "--name", "Ops")
    assert result.exit_code == 0, result.output

    deadline = time.monotonic() + 4 * server.settings.revision_poll_seconds + 5
    decision = check(server, "ops@example.com")
    while not decision["allowed"] and time.monotonic() < deadline:
        time.sleep(0.1)
        decision = check(server, "ops@example.com")
    assert decision["allowed"] is True, decision
    # The admin API of this process keeps working on top of the reloaded engine.
    assert admin.post("/workspaces", json={"slug": "globex", "name": "Globex"}).status_code == 201


def test_engine_notices_a_skipped_revision() -> None:
    from gateway.config import Settings

    engine = DecisionEngine(Settings().model_path)
    engine.apply([WorkspaceAdded("acme"), SubjectChanged(1, "a@example.com", True)], 1)
    assert not engine.is_behind(1)
    assert engine.is_behind(2)  # the database is ahead
    engine.apply([RuleAdded(grant_rule(GrantKey(1, "viewer", "acme")))], 3)  # 2 was skipped
    assert engine.is_behind(3)
