"""The ``ringfence`` command as a newcomer and an operator use it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import yaml

from gateway.config import Settings
from tests.helpers import run_cli


def test_init_is_idempotent_and_prints_the_password_once(settings: Settings) -> None:
    first = run_cli(settings, "init")
    assert first.exit_code == 0, first.output
    assert "Super admin created" in first.output and "password: " in first.output

    second = run_cli(settings, "init")
    assert second.exit_code == 0, second.output
    assert "password" not in second.output
    assert "A super admin exists already" in second.output
    assert "nothing changed" in second.output

    doctor = run_cli(settings, "doctor")
    assert doctor.exit_code == 0, doctor.output
    assert "agree" in doctor.output


def test_create_admin_refuses_a_duplicate_and_takes_a_password_from_stdin(
    settings: Settings, admin_password: str
) -> None:
    result = run_cli(
        settings,
        "create-admin",
        "--email",
        "second@example.com",
        "--name",
        "Second",
        "--password-stdin",
        input="a very long password\n",
    )
    assert result.exit_code == 0, result.output
    assert "a very long password" not in result.output

    again = run_cli(settings, "create-admin", "--email", "SECOND@example.com", "--name", "X")
    assert again.exit_code == 1
    assert "already has an account" in again.output


def test_policy_commands(settings: Settings, admin_password: str) -> None:
    validate = run_cli(settings, "policy", "validate")
    assert validate.exit_code == 0, validate.output
    assert "valid" in validate.output

    tested = run_cli(settings, "policy", "test")
    assert tested.exit_code == 0, tested.output
    assert " 0 failed" in tested.output


def test_policy_validate_names_the_file_entry_and_problem(
    settings: Settings, tmp_path: Path
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "roles.yaml").write_text(
        yaml.safe_dump(
            {
                "permissions": {"documents:read": "Read documents"},
                "roles": {"viewer": {"description": "Reads", "permissions": ["documnts:read"]}},
            }
        )
    )
    broken = replace(settings, policies_dir=policies)
    result = run_cli(broken, "policy", "validate")
    assert result.exit_code == 1
    assert "roles.yaml" in result.output
    assert "roles.viewer" in result.output
    assert "documnts:read" in result.output


def test_policy_apply_changes_only_what_changed(settings: Settings, admin_password: str) -> None:
    result = run_cli(settings, "policy", "apply")
    assert result.exit_code == 0, result.output
    assert "nothing changed" in result.output


def test_doctor_reports_a_grant_without_its_rule(settings: Settings, admin_password: str) -> None:
    from sqlalchemy import delete

    from gateway.db.models import CasbinRule
    from gateway.db.session import make_engine, make_session_factory

    engine = make_engine(settings.sqlalchemy_url)
    with make_session_factory(engine)() as session:
        # Simulate damage done outside Ringfence: the super admin's rule disappears.
        session.execute(
            delete(CasbinRule).where(
                CasbinRule.v1 == "role:superadmin", CasbinRule.v0.like("user:%")
            )
        )
        session.commit()
    engine.dispose()
    result = run_cli(settings, "doctor")
    assert result.exit_code == 1
    assert "grant without its rule: g, user:1, role:superadmin, *" in result.output
