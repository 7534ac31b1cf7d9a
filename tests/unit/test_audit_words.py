"""An audit event's change in words (gateway.services.audit_words): roles per workspace,
status, names and settings as "from → to", never a repr, a secret or a server path."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.db.models import AuditEvent
from gateway.services.audit_words import describe


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
