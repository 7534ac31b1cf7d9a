"""``ringfence policy replay``: a decision log written by the live gateway's real checks
(over HTTP, RINGFENCE_DECISION_LOG set), replayed through the real command against a
changed copy of policies/, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.main import open_services
from gateway.config import Settings
from gateway.services.base import SYSTEM
from gateway.web.state import gateway_state
from tests.helpers import LiveServer, edited_policies, post_check, run_cli


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "decisions.jsonl"


@pytest.fixture
def settings(settings: Settings, log_path: Path) -> Settings:
    return replace(settings, decision_log=str(log_path))


def _person(settings: Settings, email: str, workspace: str, roles: list[str]) -> None:
    """An active person holding exactly ``roles`` in ``workspace`` (made if missing)."""
    with open_services(settings) as services:
        user_id = services.setup.create_superadmin(email, email.split("@")[0].title()).user.id
        if workspace not in {w.slug for w in services.workspaces.list(SYSTEM, 0, 100).items}:
            services.workspaces.create(SYSTEM, workspace, workspace.title())
        services.grants.replace(SYSTEM, user_id, workspace, roles)
        services.grants.replace(SYSTEM, user_id, "*", [])


@pytest.fixture
def logged(
    request: pytest.FixtureRequest, settings: Settings, admin_password: str, log_path: Path
) -> Path:
    """A decision log of real checks: the people exist before the gateway starts, so its
    engine holds them from the first check."""
    _person(settings, "ann@example.com", "acme", ["editor"])
    _person(settings, "bob@example.com", "acme", ["viewer"])
    server: LiveServer = request.getfixturevalue("server")
    with server.client() as caller:
        for subject, resource, action, allowed in [
            ("bob@example.com", "reports", "read", True),
            ("bob@example.com", "reports", "read", True),  # the same question twice
            ("ann@example.com", "documents", "write", True),
            ("ann@example.com", "users", "read", False),
            ("bob@example.com", "documents", "write", False),
            ("nobody@example.com", "documents", "read", False),
        ]:
            answer = post_check(caller, subject, "acme", resource, action).json()
            assert answer["allowed"] is allowed, (subject, resource, action, answer)
        post_check(caller, "ann@example.com", "gone", "documents", "read")
    current = gateway_state(server.app).decision_log
    assert current is not None and current.flush()
    with log_path.open("a") as log:  # what replay cannot judge is counted, not fatal
        log.write("not json\n{}\n[1, 2]\n")
        log.write(json.dumps({"subject": "ann@example.com", "decision": "maybe"}) + "\n")
    assert len(log_path.read_text().splitlines()) == 11
    return log_path


def _replay(settings: Settings, log: Path, *args: str) -> Any:
    return run_cli(settings, "policy", "replay", "--decision-log", str(log), *args)


def test_flips_both_ways_in_three_formats(settings: Settings, logged: Path, tmp_path: Path) -> None:
    def edit(roles: dict[str, Any]) -> None:
        roles["viewer"]["permissions"].remove("reports:read")  # bob's reads: allow -> deny
        roles["editor"]["permissions"].append("users:read")  # ann's read: deny -> allow

    folder = edited_policies(settings, tmp_path, edit, "candidate")

    text = _replay(settings, logged, "--policies", str(folder))
    assert text.exit_code == 3, text.output
    assert "!!! DENY -> ALLOW: 1 denied decisions would be ALLOWED !!!" in text.output
    assert "  !!! ann@example.com in 'acme': users:read (1 line, first 20" in text.output
    assert "allow -> deny: 2 allowed decisions would be denied" in text.output
    assert "  bob@example.com in 'acme': reports:read (2 lines, first 20" in text.output
    assert "bob@example.com in 'acme': documents:write" not in text.output  # denied both ways
    assert "Not judged: 4 not a decision line, 1 unknown subject" in text.output
    assert "1 unknown workspace" in text.output
    assert "3 of 5 decisions flip; 1 DENY -> ALLOW; 2 allow -> deny." in text.output

    data = json.loads(
        _replay(settings, logged, "--policies", str(folder), "--format", "json").stdout
    )
    assert data["exit_code"] == 3 and data["lines"] == 11 and data["judged"] == 5
    assert (data["deny_to_allow"], data["allow_to_deny"], data["flips"]) == (1, 2, 3)
    assert [
        (f["subject"], f["resource"], f["action"], f["lines"])
        for f in data["examples_allow_to_deny"]
    ] == [("bob@example.com", "reports", "read", 2)]
    assert [(f["subject"], f["resource"], f["action"]) for f in data["examples_deny_to_allow"]] == [
        ("ann@example.com", "users", "read")
    ]
    assert data["not_judged"] == {
        "not a decision line": 4,
        "unknown subject (no such person, or one holding no grant now)": 1,
        "unknown workspace": 1,
    }
    assert data["answered_differently"] == 0  # nothing changed since the log was written

    markdown = _replay(settings, logged, "--policies", str(folder), "--format", "markdown")
    assert markdown.exit_code == 3
    assert "> **Deny -> allow**: 1 denied decisions would be allowed." in markdown.output
    assert "### Allow -> deny: 2" in markdown.output
    assert "| bob@example.com | acme | `reports:read` | 2 |" in markdown.output

    # --examples bounds the requests listed, never the counts.
    none_listed = json.loads(
        _replay(
            settings, logged, "--policies", str(folder), "--format", "json", "--examples", "0"
        ).stdout
    )
    assert none_listed["examples_allow_to_deny"] == [] and none_listed["allow_to_deny"] == 2


def test_exit_codes_0_and_2(settings: Settings, logged: Path, tmp_path: Path) -> None:
    unchanged = _replay(settings, logged)
    assert unchanged.exit_code == 0, unchanged.output
    assert "No decision flips (5 judged)." in unchanged.output

    def losses_only(roles: dict[str, Any]) -> None:
        roles["viewer"]["permissions"].remove("reports:read")

    folder = edited_policies(settings, tmp_path, losses_only, "losses")
    result = _replay(settings, logged, "--policies", str(folder))
    assert result.exit_code == 2, result.output
    assert "DENY -> ALLOW" not in result.output
    assert "2 of 5 decisions flip; 2 allow -> deny." in result.output


def test_grants_changed_since_the_log_are_counted_not_flipped(
    settings: Settings, logged: Path, tmp_path: Path
) -> None:
    # Bob is now an editor: his logged documents:write denial is allowed today by the
    # applied policy too, so it is no flip of the candidate's, only answered differently.
    with open_services(settings) as services:
        bob = services.policies.live_grants()[1]
        bob_id = next(p.user_id for p in bob.values() if p.email == "bob@example.com")
        services.grants.replace(SYSTEM, bob_id, "acme", ["editor"])
    result = _replay(settings, logged, "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["flips"] == 0 and data["answered_differently"] == 1


def test_refuses_both_sources_and_a_missing_log(settings: Settings, tmp_path: Path) -> None:
    missing = _replay(settings, tmp_path / "x.jsonl")
    assert missing.exit_code == 2 and "does not exist" in missing.output
    log = tmp_path / "empty.jsonl"
    log.write_text("")
    both = _replay(settings, log, "--policies", ".", "--against", "HEAD")
    assert both.exit_code == 2 and "give --policies or --against, not both" in both.output
