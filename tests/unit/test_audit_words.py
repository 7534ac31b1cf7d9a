"""An audit event's change in words (gateway.services.audit_words): roles per workspace,
status, names and settings as "from → to", never a repr, a secret or a server path."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.db.models import AuditEvent
from gateway.services.audit_words import audit_lines, describe


def event(before: Any, after: Any, workspace: str | None = "acme") -> AuditEvent:
    return AuditEvent(
        action="x", target_type="user", workspace=workspace, before=before, after=after
    )


@pytest.mark.parametrize(
    ("before", "after", "workspace", "words"),
    [
        ({"roles": ["editor"]}, {"roles": ["viewer"]}, "acme", "roles in acme: editor → viewer"),
        (
            {"roles": {"acme": ["editor"], "globex": ["viewer"]}, "status": "active"},
            {"roles": {"acme": ["editor"], "globex": ["viewer"]}, "status": "deactivated"},
            "acme",
            "status: active → deactivated",
        ),
        (
            {"roles": {"acme": ["viewer"]}},
            {"roles": {}},
            None,
            "roles: acme: viewer → none",
        ),
        (
            None,
            {"roles": {"acme": ["admin"]}, "email": "a@example.com"},
            "acme",
            "roles in acme: admin; email: a@example.com",
        ),
        (
            {"name": "Globex"},
            {"name": "Globex Corporation"},
            "globex",
            "name: Globex → Globex Corporation",
        ),
        (
            {"smtp_password": "old", "smtp_host": "a"},
            {"smtp_password": "new", "smtp_host": "a"},
            None,
            "smtp password changed",
        ),
        (
            None,
            {"policies_dir": "/srv/ringfence/policies", "allowed": True},
            None,
            "allowed: yes; policies dir: a file on the server",
        ),
        ({"decision": "undecided"}, {"decision": "keep"}, "acme", "decision: undecided → keep"),
        ({"a": 1}, {"a": 1}, "acme", "—"),
    ],
)
def test_changes_in_words(before: Any, after: Any, workspace: str | None, words: str) -> None:
    assert describe(event(before, after, workspace)) == words


def test_no_repr_and_long_values_cut() -> None:
    words = describe(event(None, {"roles": {"acme": ["viewer"]}, "note": "x" * 500}, None))
    assert "{" not in words and "[" not in words and "'" not in words
    assert words.endswith("…") and len(words) < 200


def told(event_id: int, workspace: str | None, **fields: Any) -> AuditEvent:
    values: dict[str, Any] = {
        "actor_id": 1,
        "action": "invitation.created",
        "target_type": "invitation",
        "target_id": "7",
        "revision": 40,
        "request_id": "r1",
        "after": {"roles": {"acme": ["viewer"], "globex": ["editor"]}},
        **fields,
    }
    return AuditEvent(id=event_id, workspace=workspace, **values)


def test_one_change_told_per_workspace_reads_as_one_line() -> None:
    invitation = [told(1, "acme"), told(2, "globex")]
    [line] = audit_lines(invitation)
    assert line.workspaces == ["acme", "globex"] and line.first.id == 1
    assert line.change == "roles in acme: viewer; roles in globex: editor"


def test_other_changes_stay_apart_even_when_they_look_alike() -> None:
    lines = audit_lines(
        [
            told(1, "acme"),
            told(2, "globex", revision=41),  # another revision
            told(3, "acme", revision=41, target_id="8"),  # another target
            told(4, "globex", revision=41, target_id="8", actor_id=2),  # another actor
            told(5, "acme", revision=None, request_id=None),  # nothing says it is one change
            told(6, "globex", revision=None, request_id=None),
            # No revision (a sign-in), one request: one change.
            told(7, None, revision=None, action="user.login", after=None),
            told(8, None, revision=None, action="user.login", after=None),
        ]
    )
    assert [[e.id for e in line.events] for line in lines] == [[1], [2], [3], [4], [5], [6], [7, 8]]
    assert lines[-1].workspaces == [] and lines[-1].change == "—"
