"""The pure grant ↔ Casbin rule translation of ``gateway.engine.rules``: no database, no Casbin."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.engine.rules import (
    ALL_WORKSPACES,
    GrantKey,
    Rule,
    grant_rule,
    inheritance_rule,
    is_policy_rule,
    parse_permission,
    permission_name,
    permission_rule,
    role_subject,
    rule_to_grant,
    split_permission,
    user_subject,
)

user_ids = st.integers(min_value=0, max_value=2**63 - 1)
role_names = st.from_regex(r"[a-z0-9_-]{1,63}", fullmatch=True)
slugs = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
workspaces = st.one_of(st.just(ALL_WORKSPACES), slugs)
grants = st.builds(GrantKey, user_ids, role_names, workspaces)
# Parts of a permission: anything without the separator.
parts = st.text(min_size=1, max_size=20).filter(lambda s: ":" not in s)


# -- grants ----------------------------------------------------------------------------


def test_grant_rule_shape() -> None:
    rule = grant_rule(GrantKey(42, "editor", "acme"))
    assert rule == Rule("g", ("user:42", "role:editor", "acme"))
    assert str(rule) == "g, user:42, role:editor, acme"


def test_super_admin_grant_uses_the_domain_pattern() -> None:
    rule = grant_rule(GrantKey(1, "superadmin", ALL_WORKSPACES))
    assert rule.values == ("user:1", "role:superadmin", "*")
    assert rule_to_grant(rule) == GrantKey(1, "superadmin", "*")


@given(grants)
def test_grant_round_trip(grant: GrantKey) -> None:
    rule = grant_rule(grant)
    assert rule.ptype == "g"
    assert rule.values == (user_subject(grant.user_id), role_subject(grant.role), grant.workspace)
    assert rule_to_grant(rule) == grant
    assert not is_policy_rule(rule)


@given(user_ids, st.text(max_size=30), st.text(max_size=30))
def test_round_trip_holds_for_any_role_and_workspace_text(
    user_id: int, role: str, workspace: str
) -> None:
    grant = GrantKey(user_id, role, workspace)
    assert rule_to_grant(grant_rule(grant)) == grant


@given(grants, grants)
def test_distinct_grants_give_distinct_rules(a: GrantKey, b: GrantKey) -> None:
    assert (grant_rule(a) == grant_rule(b)) == (a == b)


@given(role_names, role_names, workspaces)
def test_role_inheritance_is_not_a_grant(role: str, parent: str, workspace: str) -> None:
    rule = inheritance_rule(role, parent, workspace)
    assert rule_to_grant(rule) is None
    assert is_policy_rule(rule)


@given(role_names, st.sampled_from(["documents:read", "users:*", "*"]), workspaces)
def test_permission_rules_are_not_grants(role: str, permission: str, workspace: str) -> None:
    rule = permission_rule(role, permission, workspace)
    assert rule_to_grant(rule) is None
    assert is_policy_rule(rule)


@pytest.mark.parametrize(
    "rule",
    [
        Rule("g", ("user:abc", "role:viewer", "acme")),  # id is not a number
        Rule("g", ("user:", "role:viewer", "acme")),  # no id at all
        Rule("g", ("user:1.5", "role:viewer", "acme")),
        Rule("g", ("1", "role:viewer", "acme")),  # no user: prefix
        Rule("g", ("group:1", "role:viewer", "acme")),
        Rule("g", ("User:1", "role:viewer", "acme")),  # prefixes are case-sensitive
        Rule("g", ("user:1", "viewer", "acme")),  # target is not a role
        Rule("g", ("user:1", "user:2", "acme")),
        Rule("g", ("user:1", "role:viewer")),  # wrong arity
        Rule("g", ("user:1", "role:viewer", "acme", "extra")),
        Rule("g", ()),
        Rule("g2", ("user:1", "role:viewer", "acme")),  # other grouping type
        Rule("p", ("user:1", "role:viewer", "acme")),
    ],
    ids=str,
)
def test_rule_to_grant_rejects_malformed_rules(rule: Rule) -> None:
    assert rule_to_grant(rule) is None


@pytest.mark.parametrize("subject", ["user:01", "user: 1", "user:1 ", "user:+1", "user:0_1"])
def test_rule_to_grant_only_accepts_canonical_subjects(subject: str) -> None:
    rule = Rule("g", (subject, "role:viewer", "acme"))
    grant = rule_to_grant(rule)
    # Whatever grant a rule stands for, it must be the rule that grant produces:
    # otherwise Casbin (which compares "user:1" as a string) and doctor disagree.
    assert grant is None or grant_rule(grant) == rule


# -- permissions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("permission", "expected"),
    [
        ("documents:read", ("documents", "read")),
        ("role_management:write", ("role_management", "write")),
        ("documents:*", ("documents", "*")),
        ("*", ("*", "*")),
    ],
)
def test_split_permission(permission: str, expected: tuple[str, str]) -> None:
    assert split_permission(permission) == expected


@given(parts, parts)
def test_split_permission_inverts_joining(resource: str, action: str) -> None:
    assert split_permission(f"{resource}:{action}") == (resource, action)


@pytest.mark.parametrize(
    "permission", ["", "documents", ":read", "documents:", ":", "**", " ", "documents read"]
)
def test_split_permission_rejects_malformed(permission: str) -> None:
    with pytest.raises(ValueError, match="resource:action"):
        split_permission(permission)


@given(parts)
def test_split_permission_rejects_text_without_separator(text: str) -> None:
    if text == "*":
        assert split_permission(text) == ("*", "*")
    else:
        with pytest.raises(ValueError):
            split_permission(text)


def test_permission_rule_shapes() -> None:
    assert permission_rule("viewer", "documents:read") == Rule(
        "p", ("role:viewer", "*", "documents", "read", "")
    )
    assert permission_rule("auditor", "audit:read", "acme") == Rule(
        "p", ("role:auditor", "acme", "audit", "read", "")
    )
    assert permission_rule("docs", "documents:*") == Rule(
        "p", ("role:docs", "*", "documents", "*", "")
    )
    assert permission_rule("superadmin", "*") == Rule("p", ("role:superadmin", "*", "*", "*", ""))
    # The empty condition keeps its place in the CSV form Casbin's adapters read.
    written = str(permission_rule("viewer", "documents:read"))
    assert written == "p, role:viewer, *, documents, read, "


def test_owner_only_permission_rules_carry_the_condition() -> None:
    assert permission_rule("editor", "todos:update:own") == Rule(
        "p", ("role:editor", "*", "todos", "update", "owner")
    )
    assert permission_rule("editor", "todos:*:own", "acme") == Rule(
        "p", ("role:editor", "acme", "todos", "*", "owner")
    )
    assert parse_permission("todos:update:own") == ("todos", "update", "owner")
    assert parse_permission("todos:own") == ("todos", "own", "")  # an action named own
    assert permission_name("todos", "update", "owner") == "todos:update:own"
    assert permission_name("todos", "update") == "todos:update"


@pytest.mark.parametrize(
    "permission", ["todos:update:mine", "todos:update:own:own", "todos:update:"]
)
def test_unknown_conditions_are_refused(permission: str) -> None:
    with pytest.raises(ValueError):
        permission_rule("editor", permission)


def test_permission_rule_refuses_malformed_permissions() -> None:
    with pytest.raises(ValueError):
        permission_rule("viewer", "documents")


def test_inheritance_rule_shapes() -> None:
    assert inheritance_rule("editor", "viewer") == Rule("g", ("role:editor", "role:viewer", "*"))
    assert inheritance_rule("auditor", "viewer", "acme") == Rule(
        "g", ("role:auditor", "role:viewer", "acme")
    )


def test_subjects_are_namespaced() -> None:
    assert user_subject(7) == "user:7"
    assert role_subject("viewer") == "role:viewer"
    # A role named like a number is never mistaken for a user.
    assert rule_to_grant(Rule("g", (role_subject("7"), role_subject("x"), "acme"))) is None


# -- policy rules vs grants -------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (Rule("p", ("role:viewer", "*", "documents", "read")), True),
        (Rule("p", ("role:auditor", "acme", "audit", "read")), True),
        (Rule("g", ("role:editor", "role:viewer", "*")), True),
        (Rule("g", ("role:local", "role:viewer", "acme")), True),
        (Rule("g", ("user:1", "role:viewer", "acme")), False),
        (Rule("g", ("user:1", "role:superadmin", "*")), False),
        (Rule("g", ()), False),
    ],
    ids=str,
)
def test_is_policy_rule(rule: Rule, expected: bool) -> None:
    assert is_policy_rule(rule) is expected


@given(grants)
def test_grants_and_policy_rules_partition_g_rules(grant: GrantKey) -> None:
    rule = grant_rule(grant)
    assert is_policy_rule(rule) is False
    assert rule_to_grant(rule) is not None


def test_rules_sort_deterministically() -> None:
    rules = [
        grant_rule(GrantKey(2, "viewer", "acme")),
        permission_rule("viewer", "documents:read"),
        inheritance_rule("editor", "viewer"),
        grant_rule(GrantKey(1, "viewer", "acme")),
    ]
    ordered = sorted(rules)
    assert [r.ptype for r in ordered] == ["g", "g", "g", "p"]
    assert ordered[0] == inheritance_rule("editor", "viewer")
    assert ordered[1:3] == [
        grant_rule(GrantKey(1, "viewer", "acme")),
        grant_rule(GrantKey(2, "viewer", "acme")),
    ]
