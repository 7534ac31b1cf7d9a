"""A role's scope (``scope: installation`` in policies/: granted in every workspace only)
through the real commands: ``policy plan`` shows a change that flips it, against the
applied policy and against a git ref, ``apply`` records it, and ``policy test`` refuses
a principal holding such a role in one workspace."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from gateway.config import Settings
from tests.helpers import edited_policies, run_cli


def _unmark(roles: dict[str, Any]) -> None:
    roles["superadmin"].pop("scope")


def test_plan_shows_a_role_whose_scope_flips_and_apply_records_it(
    settings: Settings, admin_password: str, tmp_path: Path
) -> None:
    candidate = edited_policies(settings, tmp_path, _unmark)
    text = run_cli(settings, "policy", "plan", "--policies", str(candidate))
    assert text.exit_code == 2, text.output  # a change, though no rule changes
    assert "Where roles may be granted:" in text.output
    assert "superadmin may be granted in one workspace again" in text.output
    assert "0 rules to add, 0 to remove; 1 roles change scope." in text.output
    markdown = run_cli(
        settings, "policy", "plan", "--policies", str(candidate), "--format", "markdown"
    )
    assert "### Where roles may be granted" in markdown.output
    assert "- `superadmin`: may be granted in one workspace again" in markdown.output
    data = json.loads(
        run_cli(settings, "policy", "plan", "--policies", str(candidate), "--format", "json").output
    )
    assert data["scopes"] == [
        {"role": "superadmin", "before": "installation", "after": "workspace"}
    ]

    # Applied, the flip is recorded: the shipped files now mark it again.
    unmarked = replace(settings, policies_dir=candidate)
    applied = run_cli(unmarked, "policy", "apply", "--yes")
    assert applied.exit_code == 0, applied.output
    assert run_cli(unmarked, "policy", "plan").exit_code == 0
    back = run_cli(settings, "policy", "plan")
    assert back.exit_code == 2, back.output
    assert "superadmin becomes installation-wide only" in back.output


def test_plan_against_a_git_ref_compares_the_scopes_of_both(
    settings: Settings, admin_password: str, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(settings.policies_dir, repo / "policies")

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)

    git("init", "-q")
    git("-c", "user.email=t@example.com", "-c", "user.name=T", "add", ".")
    git("-c", "user.email=t@example.com", "-c", "user.name=T", "commit", "-qm", "policies")
    roles_file = repo / "policies" / "roles.yaml"
    data = yaml.safe_load(roles_file.read_text())
    _unmark(data["roles"])
    roles_file.write_text(yaml.safe_dump(data, sort_keys=False))
    in_repo = replace(settings, policies_dir=repo / "policies")
    result = run_cli(in_repo, "policy", "plan", "--against", "HEAD")
    assert result.exit_code == 2, result.output
    assert "superadmin may be granted in one workspace again" in result.output


def test_policy_tests_grant_an_installation_wide_role_only_everywhere(
    settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "policies"
    shutil.copytree(settings.policies_dir, folder)
    (folder / "tests" / "scope_test.yaml").write_text(
        "name: scope\n"
        "principals: {rita: {roles: {acme: [superadmin]}}}\n"
        "tests: [{name: t, principal: rita, workspace: acme, resource: documents, "
        "actions: {read: allow}}]\n"
    )
    result = run_cli(replace(settings, policies_dir=folder), "policy", "test")
    assert result.exit_code == 1, result.output
    assert (
        "role 'superadmin' is installation-wide (scope: installation) and is granted only in "
        "every workspace ('*'), not in 'acme'"
    ) in result.output
