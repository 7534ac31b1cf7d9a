"""``ringfence policy plan`` and the confirmed apply, through the real command, on real
grants made through the services, on SQLite and PostgreSQL; the plan on the grants a
running gateway's admin API gives a token."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import update

from gateway.cli.main import main, open_services
from gateway.config import Settings
from gateway.db.models import Grant
from gateway.services.base import SYSTEM
from tests.helpers import (
    LiveServer,
    cli_env,
    create_workspaces,
    edited_policies,
    invite_and_accept,
    run_cli,
)


def _person(settings: Settings, email: str, roles: dict[str, list[str]]) -> int:
    """An active person holding exactly ``roles`` (workspace -> roles), granted by the
    services; workspaces are created when missing."""
    with open_services(settings) as services:
        user_id = services.setup.create_superadmin(email, email.split("@")[0].title()).user.id
        for workspace in roles:
            if workspace != "*" and workspace not in {
                w.slug for w in services.workspaces.list(SYSTEM, 0, 100).items
            }:
                services.workspaces.create(SYSTEM, workspace, workspace.title())
        for workspace, names in roles.items():
            services.grants.replace(SYSTEM, user_id, workspace, names)
        if "*" not in roles:
            services.grants.replace(SYSTEM, user_id, "*", [])
    return user_id


def _plan(settings: Settings, *args: str) -> Any:
    return run_cli(settings, "policy", "plan", *args)


def test_no_change_exits_0(settings: Settings, admin_password: str) -> None:
    result = _plan(settings)
    assert result.exit_code == 0, result.output
    assert "No changes." in result.output


def test_gains_and_losses_per_workspace_in_three_formats(
    settings: Settings, admin_password: str, tmp_path: Path
) -> None:
    _person(settings, "ann@example.com", {"acme": ["editor"]})
    _person(settings, "bob@example.com", {"acme": ["viewer"], "globex": ["editor"]})
    # Gus's editor grant in acme has ended: it gives nothing, so he neither gains nor loses.
    gus = _person(settings, "gus@example.com", {})
    with open_services(settings) as services:
        ends = datetime.now(UTC) + timedelta(hours=1)
        services.grants.add(SYSTEM, gus, "acme", "editor", expires_at=ends)
        services.session.execute(
            update(Grant).where(Grant.user_id == gus).values(expires_at=ends - timedelta(days=1))
        )
        services.session.commit()

    def edit(roles: dict[str, Any]) -> None:
        roles["editor"]["permissions"].append("users:read")  # ann gains; bob in globex
        roles["viewer"]["permissions"].remove("reports:read")  # everyone but admins loses

    folder = edited_policies(settings, tmp_path, edit)

    text = _plan(settings, "--policies", str(folder))
    assert text.exit_code == 2, text.output
    assert "~ editor (every workspace, changed)" in text.output
    assert "'acme': users:read: 1 gain" in text.output
    assert "'acme': reports:read: 2 lose" in text.output
    assert "ann@example.com" not in text.output  # counts only without --details

    detailed = _plan(settings, "--policies", str(folder), "--details")
    assert "gain: Ann <ann@example.com>" in detailed.output
    assert "lose: Ann <ann@example.com>, Bob <bob@example.com>" in detailed.output

    data = json.loads(_plan(settings, "--policies", str(folder), "--format", "json").stdout)
    assert data["exit_code"] == 2 and data["changed"] is True
    editor = next(r for r in data["roles"] if r["role"] == "editor")
    assert editor["added"] == ["users:read"] and editor["removed"] == ["reports:read"]
    viewer = next(r for r in data["roles"] if r["role"] == "viewer")
    assert viewer == {
        "role": "viewer",
        "workspace": "*",
        "status": "changed",
        "added": [],
        "removed": ["reports:read"],
    }
    impacts = {(i["workspace"], i["permission"]): (i["gained"], i["lost"]) for i in data["impacts"]}
    assert impacts[("acme", "users:read")] == (1, 0)
    assert impacts[("acme", "reports:read")] == (0, 2)
    assert impacts[("globex", "users:read")] == (1, 0)
    # The super admin holds "*": nothing changes for them anywhere.
    assert ("*", "reports:read") not in impacts
    assert data["orphaned_grants"] == [] and data["escalations"] == []
    assert "p, role:editor, *, users, read, " in data["rules_added"]

    markdown = _plan(settings, "--policies", str(folder), "--format", "markdown", "--details")
    assert markdown.exit_code == 2
    assert "| workspace | permission | gain | lose |" in markdown.output
    assert "| 'acme' | `reports:read` | 0 | 2 (Ann <ann@example.com>, Bob <bob@example.com>) |" in (
        markdown.output
    )


def test_an_escalation_path_is_flagged_and_exits_3(
    settings: Settings, admin_password: str, tmp_path: Path
) -> None:
    _person(settings, "eve@example.com", {"acme": ["editor"]})

    def edit(roles: dict[str, Any]) -> None:
        # Editors may now manage roles: they can grant viewer and editor (all they hold).
        roles["editor"]["permissions"].append("role_management:write")

    folder = edited_policies(settings, tmp_path, edit)
    text = _plan(settings, "--policies", str(folder))
    assert text.exit_code == 3, text.output
    assert "!!! ESCALATION" in text.output
    assert "!!! editor can now grant viewer in every workspace (1 holders of editor)" in (
        text.output
    )
    data = json.loads(_plan(settings, "--policies", str(folder), "--format", "json").stdout)
    paths = {(e["role"], e["can_now_grant"]) for e in data["escalations"]}
    assert paths == {("editor", "editor"), ("editor", "viewer")}
    markdown = _plan(settings, "--policies", str(folder), "--format", "markdown")
    assert "**Escalation paths**" in markdown.output
    assert "| `editor` | `viewer` | every workspace | 1 |" in markdown.output

    # Admins already could grant editors: a change they could always make is no path.
    def admin_only(roles: dict[str, Any]) -> None:
        roles["editor"]["permissions"].append("users:read")

    quiet = _plan(settings, "--policies", str(edited_policies(settings, tmp_path, admin_only, "b")))
    assert quiet.exit_code == 2 and "ESCALATION" not in quiet.output


def test_grants_of_a_role_that_goes_are_orphans(
    settings: Settings, admin_password: str, tmp_path: Path
) -> None:
    def add_auditor(roles: dict[str, Any]) -> None:
        roles["auditor"] = {"description": "Reads the audit trail", "permissions": ["audit:read"]}

    with_auditor = edited_policies(settings, tmp_path, add_auditor)
    applied = run_cli(replace(settings, policies_dir=with_auditor), "policy", "apply", "--yes")
    assert applied.exit_code == 0 and "Policy applied" in applied.output, applied.output
    dana = _person(settings, "dana@example.com", {"acme": ["auditor"]})

    result = _plan(settings, "--details")  # the shipped files: no auditor
    assert result.exit_code == 3, result.output
    assert "- auditor (every workspace, removed)" in result.output
    assert "dana@example.com: role 'auditor' in 'acme'" in result.output
    assert "'acme': audit:read: 1 lose" in result.output
    data = json.loads(_plan(settings, "--format", "json").stdout)
    assert data["orphaned_grants"] == [{"user_id": dana, "role": "auditor", "workspace": "acme"}]


def test_against_a_git_ref_compares_files_with_or_without_the_database(
    settings: Settings, admin_password: str, tmp_path: Path
) -> None:
    _person(settings, "ann@example.com", {"acme": ["viewer"]})
    repo = tmp_path / "repo"
    shutil.copytree(settings.policies_dir, repo / "policies")

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-C", str(repo), "-c", "user.name=T", "-c", "user.email=t@example.com", *args],
            check=True,
            capture_output=True,
        )

    git("init", "-q", "-b", "main")
    git("add", ".")
    git("commit", "-q", "-m", "policies")
    roles_file = repo / "policies" / "roles.yaml"
    roles_file.write_text(
        roles_file.read_text().replace("      - reports:read\n", "", 1)
    )  # viewers no longer read reports, in the working files only
    working = replace(settings, policies_dir=repo / "policies")

    result = run_cli(working, "policy", "plan", "--against", "main", "--details")
    assert result.exit_code == 2, result.output
    assert "against git main" in result.output
    assert "- reports:read" in result.output
    assert "lose: Ann <ann@example.com>" in result.output

    unreachable = replace(working, database_url=f"sqlite:///{tmp_path / 'nowhere' / 'x.db'}")
    offline = run_cli(unreachable, "policy", "plan", "--against", "main", "--format", "json")
    assert offline.exit_code == 2, offline.output
    data = json.loads(offline.stdout)
    assert data["grants_read"] is False and "database did not answer" in data["grants_note"]
    assert data["impacts"] == []
    assert [r["role"] for r in data["roles"]] == ["admin", "editor", "owner", "viewer"]

    bad = run_cli(working, "policy", "plan", "--against", "no-such-ref")
    assert bad.exit_code == 1 and "git cannot read" in bad.output


def test_apply_asks_and_refuses_without_a_terminal(
    settings: Settings, admin_password: str, tmp_path: Path
) -> None:
    def edit(roles: dict[str, Any]) -> None:
        roles["viewer"]["permissions"].remove("reports:read")

    changed = replace(settings, policies_dir=edited_policies(settings, tmp_path, edit))
    refused = run_cli(changed, "policy", "apply")
    assert refused.exit_code == 1
    assert "- reports:read" in refused.output  # the plan is shown first
    assert "Not applied: confirmation needs a terminal. Pass --yes" in refused.output
    assert _plan(changed).exit_code == 2  # still to do

    applied = run_cli(changed, "policy", "apply", "--yes")
    assert applied.exit_code == 0 and "Policy applied" in applied.output, applied.output
    assert _plan(changed).exit_code == 0


def test_apply_at_a_terminal_applies_only_when_confirmed(
    settings: Settings, admin_password: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def edit(roles: dict[str, Any]) -> None:
        roles["viewer"]["permissions"].remove("reports:read")

    changed = replace(settings, policies_dir=edited_policies(settings, tmp_path, edit))
    monkeypatch.setattr("gateway.cli.main._interactive", lambda: True)
    declined = run_cli(changed, "policy", "apply", input="n\n")
    assert declined.exit_code == 1 and "Apply this plan? [y/N]" in declined.output
    assert "Not applied." in declined.output
    assert _plan(changed).exit_code == 2
    confirmed = run_cli(changed, "policy", "apply", input="y\n")
    assert confirmed.exit_code == 0 and "Policy applied" in confirmed.output, confirmed.output
    assert _plan(changed).exit_code == 0


def test_a_saved_plan_applies_only_while_nothing_changed(
    settings: Settings, admin_password: str, tmp_path: Path
) -> None:
    def edit(roles: dict[str, Any]) -> None:
        roles["editor"]["permissions"].append("users:read")

    changed = replace(settings, policies_dir=edited_policies(settings, tmp_path, edit))
    saved = tmp_path / "plan.json"
    made = run_cli(changed, "policy", "plan", "--out", str(saved))
    assert made.exit_code == 2, made.output
    assert json.loads(saved.read_text())["digests"]["grants"]

    _person(settings, "fay@example.com", {"acme": ["editor"]})  # the grants move on
    stale = run_cli(changed, "policy", "apply", "--plan-file", str(saved))
    assert stale.exit_code == 1
    assert "is stale: the grants changed since it was made" in stale.output
    assert _plan(changed).exit_code == 2  # nothing was applied

    assert run_cli(changed, "policy", "plan", "--out", str(saved)).exit_code == 2
    (changed.policies_dir / "permissions.yaml").write_text(
        (changed.policies_dir / "permissions.yaml").read_text() + "\n"
    )
    files_moved = run_cli(changed, "policy", "apply", "--plan-file", str(saved))
    assert files_moved.exit_code == 1 and "the policy files changed" in files_moved.output

    assert run_cli(changed, "policy", "plan", "--out", str(saved)).exit_code == 2
    fresh = run_cli(changed, "policy", "apply", "--plan-file", str(saved))
    assert fresh.exit_code == 0 and "Policy applied" in fresh.output, fresh.output
    assert _plan(changed).exit_code == 0


def test_plan_through_a_running_gateway_reads_what_the_token_may(
    server: LiveServer, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--gateway URL --token T``: the applied policy and the grants from the admin API
    (``GET /policy/applied``, the pages of ``GET /policy/grants``), with no database at
    hand; the same plan as from the database for a token that reads everything, and
    the plan of her workspace alone for a workspace admin's."""
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    _person(settings, "ann@example.com", {"acme": ["editor"]})
    _person(settings, "bob@example.com", {"acme": ["viewer"], "globex": ["editor"]})
    _, gina = invite_and_accept(server, root, "gina@example.com", "Gina", [("globex", "admin")])
    _, vic = invite_and_accept(server, root, "vic@example.com", "Vic", [("globex", "viewer")])
    auditor = {"name": "auditor", "permissions": ["audit:read"]}
    assert root.post("/workspaces/acme/custom-roles", json=auditor).status_code == 201

    def edit(roles: dict[str, Any]) -> None:
        roles["editor"]["permissions"].append("users:read")
        roles["viewer"]["permissions"].remove("reports:read")

    folder = str(edited_policies(settings, tmp_path, edit))
    # No database: whatever the plan knows of grants came through the gateway.
    offline = replace(settings, database_url=f"sqlite:///{tmp_path / 'nowhere' / 'x.db'}")
    monkeypatch.setattr("gateway.cli.live_gateway.PAGE_SIZE", 2)  # several pages

    def plan(token: str, *args: str) -> Any:
        env = {**cli_env(offline), "RINGFENCE_GATEWAY_TOKEN": token}
        command = ["policy", "plan", "--policies", folder, "--gateway", server.url, *args]
        return CliRunner().invoke(main, command, env=env)

    def token(client: httpx.Client) -> str:
        return client.headers["Authorization"].removeprefix("Bearer ")

    from_db = json.loads(_plan(settings, "--policies", folder, "--format", "json").stdout)
    through = plan(token(root), "--format", "json", "--details")
    assert through.exit_code == 2, through.output
    data = json.loads(through.stdout)
    assert data["baseline"] == f"the applied policy at {server.url}"
    assert data["extra"]["gateway"] == server.url
    # Every grant read: the digests of the applied rules and of the grants are the
    # database's, and so is every part of the plan.
    assert data["digests"] == from_db["digests"]
    for key in ("roles", "orphaned_grants", "escalations", "rules_added", "rules_removed"):
        assert data[key] == from_db[key], key
    for key in ("custom_roles", "adoptions", "collisions"):  # acme's custom role counts
        assert data[key] == from_db[key], key
    assert data["custom_roles"] == 1
    counts = {
        (i["workspace"], i["permission"]): (len(i["gained"]), len(i["lost"]))
        for i in data["impacts"]
    }
    assert counts == {
        (i["workspace"], i["permission"]): (i["gained"], i["lost"]) for i in from_db["impacts"]
    }
    assert counts[("acme", "reports:read")] == (0, 2)

    # Gina administers globex: her plan is globex's, and says nothing of acme or Ann.
    hers = plan(token(gina), "--details")
    assert hers.exit_code == 2, hers.output
    assert "the token may read roles in 1 workspace: only there" in hers.output
    assert "'globex': reports:read: 3 lose" in hers.output  # Bob, Gina and Vic
    assert "acme" not in hers.output and "ann@example.com" not in hers.output

    refused = plan(token(vic))  # a viewer may not read roles
    assert refused.exit_code == 1
    assert "answered 403" in refused.output and "role_management:read" in refused.output
    assert "answered 401" in plan("not-a-token").output
    missing = CliRunner().invoke(
        main, ["policy", "plan", "--gateway", server.url], env=cli_env(offline)
    )
    assert missing.exit_code == 2 and "--gateway needs --token" in missing.output

    # A file role named like acme's custom role: the collision is seen through the
    # gateway too (exit 3).
    def clash(roles: dict[str, Any]) -> None:
        roles["auditor"] = {"description": "Shared", "permissions": ["audit:read"]}

    clashing = str(edited_policies(settings, tmp_path, clash, "clashing"))
    env = {**cli_env(offline), "RINGFENCE_GATEWAY_TOKEN": token(root)}
    command = ["policy", "plan", "--policies", clashing, "--gateway", server.url]
    collided = CliRunner().invoke(main, command, env=env)
    assert collided.exit_code == 3 and "COLLISION" in collided.output, collided.output

    bad_cursor = root.get("/policy/grants", params={"cursor": "nonsense"})
    assert bad_cursor.status_code == 422 and "cursor" in bad_cursor.json()["errors"]
