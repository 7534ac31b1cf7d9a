"""The audit target types are one registry (``AuditTarget``) that every audit event is
written through, and the console's audit filter offers exactly it: a new kind of target
cannot be written without the filter offering it, nor offered without being written."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from gateway.audit import refusals
from gateway.services.base import SYSTEM, AuditTarget, ChangeSet

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [
    path
    for package in ("gateway", "admin_api", "console", "mailer")
    for path in sorted((ROOT / package).rglob("*.py"))
    if "migrations" not in path.parts
]


def _trees() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(), str(path))) for path in SOURCES]


def test_every_registered_target_type_is_written_somewhere() -> None:
    """Each member is used outside its definition (an audit call, or a sampled refusal's
    type): the filter offers no type that no event can have."""
    used: set[str] = {target for _, target in refusals.AUDITED.values()}
    for _, tree in _trees():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "AuditTarget"
            ):
                used.add(AuditTarget[node.attr].value)
    assert used == {t.value for t in AuditTarget}


def test_audit_events_are_written_only_through_the_registry() -> None:
    """Only ChangeSet.audit builds an AuditEvent (it takes an AuditTarget), and no audit
    call passes a target type as a bare string."""
    builders = []
    bare = []
    for path, tree in _trees():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", getattr(node.func, "id", None))
            if name == "AuditEvent":
                builders.append(path.relative_to(ROOT).as_posix())
            position = {"audit": 1, "audit_each": 2}.get(str(name))
            if str(name) == "record" and "services" in path.parts:
                position = 2  # UnitOfWork.record(actor, action, target_type, ...)
            if position is None:
                continue
            args = [*node.args, *(k.value for k in node.keywords if k.arg == "target_type")]
            if len(args) > position and isinstance(args[position], ast.Constant):
                bare.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert builders == ["gateway/services/base.py"]
    assert bare == []


def test_sampled_refusals_use_registered_types() -> None:
    for action, target in refusals.AUDITED.values():
        assert AuditTarget(target).value == target, action


def test_an_unregistered_target_type_is_refused() -> None:
    changes = ChangeSet(Session(), SYSTEM)
    with pytest.raises(ValueError, match="is not a valid AuditTarget"):
        changes.audit("thing.done", "thing")  # type: ignore[arg-type]
    changes.audit("thing.done", AuditTarget.POLICY)
    assert [e.target_type for e in changes.events] == ["policy"]
    assert type(changes.events[0].target_type) is str  # stored as the plain value
