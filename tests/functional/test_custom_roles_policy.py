"""Custom roles and policy as code (issue 20), through the real command on SQLite and
PostgreSQL: ``policy plan`` counts them on both sides, ``policy export`` writes them as a
policy file, and applying that file adopts them (grants kept); a file role colliding
with one elsewhere is refused."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select

from gateway.cli.main import open_services
from gateway.config import Settings
from gateway.db.models import AuditEvent, Grant
from gateway.services.base import SYSTEM
from gateway.services.custom_roles import CustomRoleDraft
from tests.helpers import edited_policies, run_cli

AUDITOR = CustomRoleDraft(
    "auditor", "Reads documents and the audit log", ["audit:read", "documents:read"]
)


def _setup(settings: Settings, *workspaces: str) -> int:
    """Workspaces, each with a custom role 'auditor'; Vera holds viewer and auditor in the
    first. Her id."""
    with open_services(settings) as services:
        for slug in workspaces:
            services.workspaces.create(SYSTEM, slug, slug.title())
            services.custom_roles.create(SYSTEM, slug, AUDITOR)
        vera = services.setup.create_superadmin("vera@example.com", "Vera").user.id
        services.grants.replace(SYSTEM, vera, "*", [])
        services.grants.replace(SYSTEM, vera, workspaces[0], ["viewer", "auditor"])
    return vera


def _plan(settings: Settings, folder: Path) -> Any:
    result = run_cli(settings, "policy", "plan", "--policies", str(folder), "--format", "json")
    return result.exit_code, json.loads(result.stdout)


def test_plan_counts_custom_roles_and_export_then_apply_adopts_them(
    settings: Settings, admin_password: str, tmp_path: Path
) -> None:
    vera = _setup(settings, "acme")
    with open_services(settings) as services:  # another viewer, who does lose it
        vic = services.setup.create_superadmin("vic@example.com", "Vic").user.id
        services.grants.replace(SYSTEM, vic, "*", [])
        services.grants.replace(SYSTEM, vic, "acme", ["viewer"])
    unchanged = run_cli(settings, "policy", "plan")
    assert unchanged.exit_code == 0, unchanged.output
    assert "1 custom roles of workspaces count on both sides" in unchanged.output

    # Viewers lose documents:read; Vera keeps it through her custom role, and her grant of
    # it is no orphan.
    def edit(roles: dict[str, Any]) -> None:
        roles["viewer"]["permissions"].remove("documents:read")

    code, plan = _plan(settings, edited_policies(settings, tmp_path, edit))
    assert code == 2, plan
    assert plan["orphaned_grants"] == [] and plan["collisions"] == []
    viewer = next(r for r in plan["roles"] if r["role"] == "viewer")
    assert viewer["role"] == "viewer" and viewer["removed"] == ["documents:read"]
    lost = {(i["workspace"], i["permission"]): i["lost"] for i in plan["impacts"]}
    assert lost == {("acme", "documents:read"): 1}  # Vic, not Vera

    # Export into a copy of policies/: the plan shows the adoption and nothing else.
    folder = tmp_path / "adopting"
    shutil.copytree(settings.policies_dir, folder)
    exported = run_cli(settings, "policy", "export", "--out", str(folder / "acme.yaml"))
    assert exported.exit_code == 0, exported.output
    written = yaml.safe_load((folder / "acme.yaml").read_text())
    assert written["roles"]["auditor"] == {
        "description": "Reads documents and the audit log",
        "workspace": "acme",
        "permissions": ["audit:read", "documents:read"],
    }
    code, plan = _plan(settings, folder)
    assert code == 2 and plan["rules_added"] == [] and plan["rules_removed"] == [], plan
    assert plan["adoptions"] == [
        "custom role 'auditor' of 'acme' is adopted by acme.yaml (the file defines it from "
        "now on; its grants stay)"
    ]

    adopting = replace(settings, policies_dir=folder)
    applied = run_cli(adopting, "policy", "apply", "--yes")
    assert applied.exit_code == 0, applied.output
    with open_services(adopting) as services:
        assert services.policies.custom_roles() == []
        assert services.session.scalar(select(Grant).where(Grant.role == "auditor"))
        assert services.engine.permits(vera, "acme", "audit", "read")
        roles = {r.name: r for r in services.roles.in_workspace(SYSTEM, "acme")}
        assert roles["auditor"].source == "acme.yaml" and not roles["auditor"].custom
        event = services.session.scalar(
            select(AuditEvent).where(AuditEvent.action == "role.adopted")
        )
        assert event is not None and event.after == {"source": "acme.yaml"}
    assert run_cli(adopting, "policy", "plan").exit_code == 0


def test_a_file_role_colliding_with_a_custom_role_is_refused(
    settings: Settings, admin_password: str, tmp_path: Path
) -> None:
    _setup(settings, "acme")

    def edit(roles: dict[str, Any]) -> None:
        roles["auditor"] = {"description": "Shared auditor", "permissions": ["audit:read"]}

    folder = edited_policies(settings, tmp_path, edit)
    code, plan = _plan(settings, folder)
    assert code == 3, plan
    [collision] = plan["collisions"]
    assert "role 'auditor' of roles.yaml collides with the custom role 'auditor' of 'acme'" in (
        collision
    )
    text = run_cli(settings, "policy", "plan", "--policies", str(folder))
    assert "COLLISION" in text.output
    refused = run_cli(replace(settings, policies_dir=folder), "policy", "apply", "--yes")
    assert refused.exit_code != 0
    assert "collide with custom roles" in refused.output
    with open_services(settings) as services:
        assert [r.name for r in services.policies.custom_roles()] == ["auditor"]
        assert "role:auditor" not in {r.values[0] for r in services.policies.current_rules()}


def test_export_names_each_role_once(
    settings: Settings, admin_password: str, tmp_path: Path
) -> None:
    _setup(settings, "acme", "globex")
    both = run_cli(settings, "policy", "export")
    assert both.exit_code == 1
    assert "'auditor' in acme, globex" in both.output
    one = run_cli(settings, "policy", "export", "--workspace", "globex")
    assert one.exit_code == 0, one.output
    assert yaml.safe_load(one.stdout)["roles"]["auditor"]["workspace"] == "globex"
    none = run_cli(settings, "policy", "export", "--workspace", "initech")
    assert none.exit_code == 1 and "No custom roles in 'initech'" in none.output
