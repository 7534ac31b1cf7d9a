"""DecisionEngine on its own: who is known and active, which workspaces exist, how
changes apply (atomically for readers), and that errors on the decision path deny."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import casbin
import pytest

from gateway.engine.engine import (
    Decision,
    DecisionEngine,
    RuleAdded,
    RuleRemoved,
    SubjectChanged,
    SubjectRemoved,
    WorkspaceAdded,
    WorkspaceRemoved,
)
from gateway.engine.rules import GrantKey, Rule, grant_rule, inheritance_rule, permission_rule
from gateway.services.decisions import DecisionService
from tests.casbin_reference import MODEL, reference

JOHN = 1
MARY = 2

BASE_RULES = [
    permission_rule("viewer", "documents:read"),
    permission_rule("editor", "documents:write"),
    inheritance_rule("editor", "viewer"),
    permission_rule("superadmin", "*"),
    permission_rule("auditor", "audit:read", "acme"),
]


@pytest.fixture
def engine() -> DecisionEngine:
    engine = DecisionEngine(MODEL)
    engine.apply(
        [
            WorkspaceAdded("acme"),
            WorkspaceAdded("globex"),
            SubjectChanged(JOHN, "john@example.com", active=True),
            SubjectChanged(MARY, "mary@example.com", active=True),
            *(RuleAdded(rule) for rule in BASE_RULES),
            RuleAdded(grant_rule(GrantKey(JOHN, "editor", "acme"))),
        ],
        revision=1,
    )
    return engine


# -- who and where ----------------------------------------------------------------------


def test_granted_active_user_is_allowed(engine: DecisionEngine) -> None:
    decision = engine.check(JOHN, "acme", "documents", "write")
    assert decision == Decision(True, 1, "allowed by policy")
    assert engine.check(JOHN, "acme", "documents", "read").allowed  # inherited from viewer
    assert engine.check(JOHN, "acme", "documents", "delete") == Decision(False, 1, "no rule allows")
    assert not engine.check(JOHN, "globex", "documents", "read").allowed  # other workspace


def test_unknown_subject_is_denied(engine: DecisionEngine) -> None:
    assert engine.check(None, "acme", "documents", "read") == Decision(False, 1, "unknown subject")
    # An id the engine never heard of, even with a rule for it, is not active.
    engine.apply([RuleAdded(grant_rule(GrantKey(99, "editor", "acme")))], revision=2)
    assert engine.check(99, "acme", "documents", "read") == Decision(
        False, 2, "subject is not active"
    )
    assert not engine.permits(99, "acme", "documents", "read")


def test_inactive_subject_is_denied_whatever_the_rules(engine: DecisionEngine) -> None:
    engine.apply([SubjectChanged(JOHN, "john@example.com", active=False)], revision=2)
    assert engine.check(JOHN, "acme", "documents", "write") == Decision(
        False, 2, "subject is not active"
    )
    assert not engine.permits(JOHN, "acme", "documents", "write")
    # Deactivation keeps the identity (the id still resolves) and the grants.
    assert engine.resolve_subject("john@example.com") == JOHN
    engine.apply([SubjectChanged(JOHN, "john@example.com", active=True)], revision=3)
    assert engine.check(JOHN, "acme", "documents", "write").allowed


def test_unknown_workspace_is_denied_even_for_a_super_admin(engine: DecisionEngine) -> None:
    engine.apply([RuleAdded(grant_rule(GrantKey(MARY, "superadmin", "*")))], revision=2)
    assert engine.check(MARY, "acme", "anything", "at-all").allowed
    assert engine.check(MARY, "umbrella", "documents", "read") == Decision(
        False, 2, "unknown workspace"
    )
    # The domain pattern itself is not a workspace a caller may ask about.
    assert engine.check(MARY, "*", "documents", "read") == Decision(False, 2, "unknown workspace")


def test_permits_takes_the_every_workspace_domain(engine: DecisionEngine) -> None:
    assert engine.permits(JOHN, "acme", "documents", "write")
    assert not engine.permits(JOHN, "*", "documents", "write")  # only granted in acme
    engine.apply([RuleAdded(grant_rule(GrantKey(MARY, "superadmin", "*")))], revision=2)
    assert engine.permits(MARY, "*", "workspaces", "create")
    assert engine.permits(MARY, "not-yet-created", "workspaces", "update")


# -- resolving subjects -----------------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    ["john@example.com", "John@Example.COM", "JOHN@EXAMPLE.COM"],
)
def test_resolve_subject_by_email_ignores_case(engine: DecisionEngine, subject: str) -> None:
    # Services store addresses lower-case (invitations, setup); the engine lower-cases
    # the address it is asked about.
    assert engine.resolve_subject(subject) == JOHN


@pytest.mark.parametrize("subject", ["user:1", "1"])
def test_resolve_subject_by_id(engine: DecisionEngine, subject: str) -> None:
    assert engine.resolve_subject(subject) == JOHN


@pytest.mark.parametrize(
    "subject",
    [
        "nobody@example.com",
        "john@example.org",
        "user:99",
        "99",
        "user:",
        "",
        "john",
        "role:viewer",
        "user:user:1",
        "user:-1",
        "user:1.0",
        "User:1",
    ],
)
def test_resolve_unknown_subject_is_none(engine: DecisionEngine, subject: str) -> None:
    assert engine.resolve_subject(subject) is None


def test_removed_subject_no_longer_resolves_or_passes(engine: DecisionEngine) -> None:
    engine.apply([SubjectRemoved(JOHN, "john@example.com")], revision=2)
    assert engine.resolve_subject("john@example.com") is None
    assert engine.resolve_subject("user:1") is None
    assert engine.resolve_subject("1") is None
    assert engine.check(JOHN, "acme", "documents", "write") == Decision(
        False, 2, "subject is not active"
    )
    assert engine.resolve_subject("mary@example.com") == MARY  # others untouched


# -- applying changes -------------------------------------------------------------------


def test_rule_added_and_removed_permission(engine: DecisionEngine) -> None:
    rule = permission_rule("viewer", "reports:read")
    assert not engine.check(JOHN, "acme", "reports", "read").allowed
    engine.apply([RuleAdded(rule)], revision=2)
    assert engine.check(JOHN, "acme", "reports", "read").allowed  # through editor → viewer
    engine.apply([RuleRemoved(rule)], revision=3)
    assert not engine.check(JOHN, "acme", "reports", "read").allowed


def test_rule_added_and_removed_grant(engine: DecisionEngine) -> None:
    grant = grant_rule(GrantKey(MARY, "viewer", "globex"))
    assert not engine.check(MARY, "globex", "documents", "read").allowed
    engine.apply([RuleAdded(grant)], revision=2)
    assert engine.check(MARY, "globex", "documents", "read").allowed
    assert not engine.check(MARY, "acme", "documents", "read").allowed
    engine.apply([RuleRemoved(grant)], revision=3)
    assert not engine.check(MARY, "globex", "documents", "read").allowed


def test_rule_added_and_removed_inheritance(engine: DecisionEngine) -> None:
    engine.apply([RuleRemoved(inheritance_rule("editor", "viewer"))], revision=2)
    assert not engine.check(JOHN, "acme", "documents", "read").allowed
    assert engine.check(JOHN, "acme", "documents", "write").allowed
    engine.apply([RuleAdded(inheritance_rule("editor", "viewer"))], revision=3)
    assert engine.check(JOHN, "acme", "documents", "read").allowed


def test_star_grant_holds_in_every_known_workspace(engine: DecisionEngine) -> None:
    grant = grant_rule(GrantKey(MARY, "viewer", "*"))
    engine.apply([RuleAdded(grant)], revision=2)
    assert engine.check(MARY, "acme", "documents", "read").allowed
    assert engine.check(MARY, "globex", "documents", "read").allowed
    engine.apply([RuleRemoved(grant)], revision=3)
    assert not engine.check(MARY, "acme", "documents", "read").allowed
    assert not engine.check(MARY, "globex", "documents", "read").allowed


def test_workspace_added_and_removed(engine: DecisionEngine) -> None:
    engine.apply([RuleAdded(grant_rule(GrantKey(MARY, "viewer", "*")))], revision=2)
    assert engine.check(MARY, "initech", "documents", "read").reason == "unknown workspace"
    engine.apply([WorkspaceAdded("initech")], revision=3)
    assert engine.check(MARY, "initech", "documents", "read").allowed
    engine.apply([WorkspaceRemoved("initech")], revision=4)
    assert engine.check(MARY, "initech", "documents", "read") == Decision(
        False, 4, "unknown workspace"
    )
    assert engine.check(MARY, "acme", "documents", "read").allowed


def test_subject_changed_adds_a_new_user(engine: DecisionEngine) -> None:
    engine.apply(
        [
            SubjectChanged(3, "new@example.com", active=True),
            RuleAdded(grant_rule(GrantKey(3, "viewer", "acme"))),
        ],
        revision=2,
    )
    assert engine.resolve_subject("new@example.com") == 3
    assert engine.check(3, "acme", "documents", "read").allowed
    # A pending user (created inactive) resolves but is denied.
    engine.apply([SubjectChanged(4, "pending@example.com", active=False)], revision=3)
    assert engine.resolve_subject("user:4") == 4
    assert engine.check(4, "acme", "documents", "read").reason == "subject is not active"


def test_adding_an_existing_or_removing_a_missing_rule_is_harmless(engine: DecisionEngine) -> None:
    existing = grant_rule(GrantKey(JOHN, "editor", "acme"))
    missing = grant_rule(GrantKey(MARY, "editor", "acme"))
    engine.apply([RuleAdded(existing), RuleRemoved(missing)], revision=2)
    assert engine.check(JOHN, "acme", "documents", "write").allowed
    assert not engine.check(MARY, "acme", "documents", "write").allowed
    assert engine.revision == 2


def test_revision_only_grows(engine: DecisionEngine) -> None:
    assert engine.revision == 1
    engine.apply([], revision=5)
    assert engine.revision == 5
    engine.apply([WorkspaceAdded("late")], revision=3)
    assert engine.revision == 5
    assert engine.check(JOHN, "acme", "documents", "read").revision == 5
    engine.apply([], revision=6)
    assert engine.check(JOHN, "acme", "documents", "read").revision == 6


def test_load_replaces_everything(engine: DecisionEngine, tmp_path: Path) -> None:
    policy = tmp_path / "policy.csv"
    policy.write_text(
        "p, role:viewer, *, documents, read, \ng, user:7, role:viewer, globex\n",
        encoding="utf-8",
    )
    adapter = casbin.persist.adapters.FileAdapter(str(policy))
    engine.load(adapter, [SubjectChanged(7, "seven@example.com", True)], ["globex"], revision=3)
    assert engine.revision == 3
    assert engine.check(7, "globex", "documents", "read").allowed
    assert engine.resolve_subject("john@example.com") is None
    assert engine.check(JOHN, "acme", "documents", "write").reason == "subject is not active"
    assert engine.check(7, "acme", "documents", "read").reason == "unknown workspace"


# -- roles_in ---------------------------------------------------------------------------


def test_roles_in_lists_shared_and_own_roles_only(engine: DecisionEngine) -> None:
    engine.apply(
        [
            RuleAdded(permission_rule("globex-lead", "reports:read", "globex")),
            RuleAdded(inheritance_rule("reader", "viewer")),  # no permission of its own
            RuleAdded(inheritance_rule("acme-helper", "viewer", "acme")),
            # A grant of a role nobody defined must not make it grantable.
            RuleAdded(grant_rule(GrantKey(MARY, "ghost", "acme"))),
        ],
        revision=2,
    )
    shared = {"viewer", "editor", "superadmin", "reader"}
    assert engine.roles_in("acme") == shared | {"auditor", "acme-helper"}
    assert engine.roles_in("globex") == shared | {"globex-lead"}
    assert engine.roles_in("*") == shared
    assert engine.roles_in("initech") == shared


# -- concurrency --------------------------------------------------------------------------


def test_readers_never_see_half_a_change(engine: DecisionEngine) -> None:
    # Both roles read documents; the change swaps one for the other, removing first.
    # Between the two halves John would hold neither, so a single check exposes it.
    engine.apply(
        [
            RuleAdded(permission_rule("reader-a", "reports:read")),
            RuleAdded(permission_rule("reader-b", "reports:read")),
            RuleAdded(grant_rule(GrantKey(JOHN, "reader-a", "acme"))),
        ],
        revision=2,
    )
    a = grant_rule(GrantKey(JOHN, "reader-a", "acme"))
    b = grant_rule(GrantKey(JOHN, "reader-b", "acme"))
    done = threading.Event()
    seen: list[Decision] = []

    def read() -> None:
        while not done.is_set():
            seen.append(engine.check(JOHN, "acme", "reports", "read"))

    reader = threading.Thread(target=read)
    reader.start()
    revision = 2
    try:
        for _ in range(1500):
            revision += 1
            engine.apply([RuleRemoved(a), RuleAdded(b)], revision)
            revision += 1
            engine.apply([RuleRemoved(b), RuleAdded(a)], revision)
    finally:
        done.set()
        reader.join(timeout=30)
    assert not reader.is_alive()
    assert seen, "the reader never ran"
    denied = [d for d in seen if not d.allowed]
    assert not denied, f"{len(denied)} of {len(seen)} checks saw half a change: {denied[0]}"
    revisions = [d.revision for d in seen]
    assert revisions == sorted(revisions)  # a reader never goes back in time
    assert engine.check(JOHN, "acme", "reports", "read").allowed


# -- failing closed -----------------------------------------------------------------------


def test_an_error_inside_enforce_denies(engine: DecisionEngine) -> None:
    # A malformed rule (three values for a four-field `p`), e.g. written to the table by
    # hand, makes Casbin raise while matching; the engine must deny, not allow or crash.
    malformed = Rule("p", ("role:editor", "*", "documents"))
    engine.apply([RuleRemoved(rule) for rule in BASE_RULES], revision=2)
    engine.apply([RuleAdded(malformed), *(RuleAdded(rule) for rule in BASE_RULES)], revision=3)
    raw = reference([malformed, *BASE_RULES, grant_rule(GrantKey(JOHN, "editor", "acme"))])
    with pytest.raises(RuntimeError, match="invalid policy size"):
        raw.enforce("user:1", "acme", "documents", "write", "")
    assert engine.check(JOHN, "acme", "documents", "write").allowed is False
    assert engine.permits(JOHN, "acme", "documents", "write") is False
    engine.apply([RuleRemoved(malformed)], revision=4)
    assert engine.check(JOHN, "acme", "documents", "write").allowed


# -- regressions: pycasbin's incremental domain role manager ---------------------------


def test_removing_the_star_grant_keeps_the_workspace_grant(engine: DecisionEngine) -> None:
    engine.apply([RuleAdded(grant_rule(GrantKey(MARY, "viewer", "*")))], revision=2)
    engine.apply([RuleAdded(grant_rule(GrantKey(MARY, "viewer", "acme")))], revision=3)
    assert engine.check(MARY, "acme", "documents", "read").allowed  # caches acme's links
    engine.apply([RuleRemoved(grant_rule(GrantKey(MARY, "viewer", "*")))], revision=4)
    expected = reference([*BASE_RULES, grant_rule(GrantKey(MARY, "viewer", "acme"))])
    assert expected.enforce("user:2", "acme", "documents", "read", "") is True
    assert engine.check(MARY, "acme", "documents", "read").allowed


def test_a_failing_change_never_leaves_a_removed_grant_allowed(engine: DecisionEngine) -> None:
    engine.apply(
        [
            RuleAdded(grant_rule(GrantKey(MARY, "editor", "*"))),
            RuleAdded(grant_rule(GrantKey(MARY, "editor", "acme"))),
            RuleAdded(grant_rule(GrantKey(MARY, "viewer", "acme"))),
        ],
        revision=2,
    )
    assert engine.check(MARY, "acme", "documents", "read").allowed  # caches acme's links
    engine.apply([RuleRemoved(grant_rule(GrantKey(MARY, "editor", "*")))], revision=3)
    # The admin now takes every role in acme away (as PUT .../roles [] or removal does):
    # a committed change must apply without error, and Mary, holding no role anywhere,
    # must be denied.
    engine.apply(
        [
            RuleRemoved(grant_rule(GrantKey(MARY, "editor", "acme"))),
            RuleRemoved(grant_rule(GrantKey(MARY, "viewer", "acme"))),
        ],
        revision=4,
    )
    assert engine.revision == 4
    assert not engine.check(MARY, "acme", "documents", "read").allowed


# -- the owner condition ------------------------------------------------------------------


@pytest.fixture
def todo_engine(engine: DecisionEngine) -> DecisionEngine:
    """John edits his own documents only; Mary, a reviewer, deletes any."""
    engine.apply(
        [
            RuleAdded(permission_rule("author", "documents:update:own")),
            RuleAdded(inheritance_rule("author", "viewer")),
            RuleAdded(permission_rule("reviewer", "documents:delete")),
            RuleAdded(permission_rule("reviewer", "documents:*:own")),
            RuleAdded(grant_rule(GrantKey(JOHN, "author", "acme"))),
            RuleAdded(grant_rule(GrantKey(MARY, "reviewer", "acme"))),
        ],
        revision=2,
    )
    return engine


def test_owner_only_permissions_hold_on_own_resources_only(todo_engine: DecisionEngine) -> None:
    engine = todo_engine
    assert engine.check(JOHN, "acme", "documents", "update", owner=JOHN).allowed
    assert not engine.check(JOHN, "acme", "documents", "update", owner=MARY).allowed
    assert not engine.check(JOHN, "acme", "documents", "update").allowed  # no owner known
    assert engine.check(JOHN, "acme", "documents", "read", owner=MARY).allowed  # unconditional
    assert not engine.check(JOHN, "globex", "documents", "update", owner=JOHN).allowed
    assert engine.check(MARY, "acme", "documents", "delete", owner=JOHN).allowed
    assert engine.check(MARY, "acme", "documents", "archive", owner=MARY).allowed  # *:own
    assert not engine.check(MARY, "acme", "documents", "archive", owner=JOHN).allowed
    rules = [
        *BASE_RULES,
        permission_rule("author", "documents:update:own"),
        inheritance_rule("author", "viewer"),
        grant_rule(GrantKey(JOHN, "author", "acme")),
    ]
    raw = reference(rules)
    assert raw.enforce("user:1", "acme", "documents", "update", "user:1")
    assert not raw.enforce("user:1", "acme", "documents", "update", "user:2")


def test_explain_names_the_rule_and_the_role_path(todo_engine: DecisionEngine) -> None:
    decision = todo_engine.check(JOHN, "acme", "documents", "read", explain=True)
    assert decision.allowed
    assert decision.explanation is not None
    assert decision.explanation["rule"] == ["role:viewer", "*", "documents", "read", ""]
    # John holds editor and author in acme; both lead to viewer in one step.
    assert decision.explanation["path"][0][0] == "user:1"
    assert decision.explanation["path"][0][2] == "acme"
    assert decision.explanation["path"][-1][1] == "role:viewer"
    assert len(decision.explanation["path"]) == 2
    owned = todo_engine.check(JOHN, "acme", "documents", "update", owner=JOHN, explain=True)
    assert owned.explanation == {
        "rule": ["role:author", "*", "documents", "update", "owner"],
        "path": [["user:1", "role:author", "acme"]],
    }
    denied = todo_engine.check(JOHN, "acme", "documents", "update", owner=MARY, explain=True)
    assert denied.explanation == {"rule": None, "path": [], "reason": "no rule allows"}
    unknown = todo_engine.check(JOHN, "umbrella", "documents", "read", explain=True)
    assert unknown.explanation == {"rule": None, "path": [], "reason": "unknown workspace"}
    assert todo_engine.check(JOHN, "acme", "documents", "read").explanation is None


def test_permissions_list_patterns_and_owner_only_actions(todo_engine: DecisionEngine) -> None:
    assert todo_engine.permissions(JOHN, "acme") == {
        ("documents", "read"),
        ("documents", "write"),
        ("documents", "update:own"),
    }
    assert todo_engine.permissions(MARY, "acme") == {
        ("documents", "delete"),
        ("documents", "*:own"),
    }
    assert todo_engine.permissions(JOHN, "globex") == set()
    assert todo_engine.permissions(None, "acme") == set()
    assert todo_engine.permissions(JOHN, "umbrella") == set()
    # Held on every resource: the owner-only form is not listed beside it.
    todo_engine.apply([RuleAdded(permission_rule("author", "documents:update"))], revision=3)
    assert ("documents", "update:own") not in todo_engine.permissions(JOHN, "acme")
    assert ("documents", "update") in todo_engine.permissions(JOHN, "acme")


def test_workspaces_where_and_subjects_who_may(todo_engine: DecisionEngine) -> None:
    engine = todo_engine
    assert engine.workspaces_where(JOHN, "documents", "read") == {"acme"}
    assert engine.workspaces_where(JOHN, "documents", "update") == set()
    assert engine.workspaces_where(JOHN, "documents", "update", owner=JOHN) == {"acme"}
    engine.apply([RuleAdded(grant_rule(GrantKey(MARY, "viewer", "*")))], revision=3)
    assert engine.workspaces_where(MARY, "documents", "read") == {"acme", "globex"}
    assert engine.workspaces_where(None, "documents", "read") == set()
    assert engine.subjects_who_may("acme", "documents", "read") == {JOHN, MARY}
    assert engine.subjects_who_may("acme", "documents", "update") == set()
    assert engine.subjects_who_may("acme", "documents", "update", owner=JOHN) == {JOHN}
    assert engine.subjects_who_may("globex", "documents", "read") == {MARY}
    assert engine.subjects_who_may("umbrella", "documents", "read") == set()
    engine.apply([SubjectChanged(MARY, "mary@example.com", active=False)], revision=4)
    assert engine.subjects_who_may("globex", "documents", "read") == set()


def test_holds_owner_only_permissions_as_role_permissions_name_them(
    todo_engine: DecisionEngine,
) -> None:
    assert ("documents", "update:own") in todo_engine.role_permissions("author", "acme")
    assert todo_engine.holds(JOHN, "acme", "documents", "update:own")
    assert not todo_engine.holds(JOHN, "acme", "documents", "update")
    assert todo_engine.holds(MARY, "acme", "documents", "update:own")  # through *:own
    assert not todo_engine.holds(MARY, "globex", "documents", "update:own")


def test_a_rule_without_the_condition_field_fails_closed(engine: DecisionEngine) -> None:
    # A p rule of four values (written before the owner condition existed) makes Casbin
    # raise "invalid policy size"; `ringfence policy apply` rewrites such rules.
    old = Rule("p", ("role:editor", "*", "documents", "write"))
    engine.apply([RuleRemoved(permission_rule("editor", "documents:write")), RuleAdded(old)], 2)
    assert not engine.check(JOHN, "acme", "documents", "write").allowed


def test_decision_service_resolves_subject_and_owner(todo_engine: DecisionEngine) -> None:
    service = DecisionService(todo_engine)
    assert service.check("john@example.com", "acme", "documents", "update", owner="user:1").allowed
    assert service.check("1", "acme", "documents", "update", owner="JOHN@example.com").allowed
    assert not service.check(
        "user:1", "acme", "documents", "update", owner="mary@example.com"
    ).allowed
    assert not service.check(
        "user:1", "acme", "documents", "update", owner="ghost@example.com"
    ).allowed
    decision = service.check("user:1", "acme", "documents", "read", explain=True)
    assert decision.explanation is not None and decision.explanation["rule"] is not None
    assert ("documents", "update:own") in service.permissions("john@example.com", "acme")
    assert service.permissions("ghost@example.com", "acme") == set()
    assert service.workspaces_where("mary@example.com", "documents", "delete") == {"acme"}
    assert service.workspaces_where("nobody", "documents", "delete") == set()
    assert service.subjects_who_may("acme", "documents", "update", owner="john@example.com") == {
        JOHN
    }
    assert service.subjects_who_may("acme", "documents", "delete") == {MARY}


def test_readers_never_see_half_a_change_across_roles_and_grants(engine: DecisionEngine) -> None:
    # One change takes documents:read away from viewer (the role layer, rebuilt) and
    # gives John a grant of another role holding it (the grants, changed in place); the
    # next puts it back. Several readers must never find John without it.
    reader_rule = permission_rule("reader", "documents:read")
    viewer_rule = permission_rule("viewer", "documents:read")
    grant = grant_rule(GrantKey(JOHN, "reader", "acme"))
    engine.apply([RuleAdded(reader_rule)], revision=2)
    done = threading.Event()
    denied: list[Decision] = []
    counts: list[int] = []

    def read() -> None:
        seen = 0
        while not done.is_set():
            decision = engine.check(JOHN, "acme", "documents", "read")
            seen += 1
            if not decision.allowed:
                denied.append(decision)
            if JOHN not in engine.subjects_who_may("acme", "documents", "read"):
                denied.append(decision)
        counts.append(seen)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for reader in readers:
        reader.start()
    revision = 2
    try:
        for _ in range(400):
            revision += 1
            engine.apply([RuleRemoved(viewer_rule), RuleAdded(grant)], revision)
            revision += 1
            engine.apply([RuleRemoved(grant), RuleAdded(viewer_rule)], revision)
    finally:
        done.set()
        for reader in readers:
            reader.join(timeout=30)
    assert all(count > 0 for count in counts) and len(counts) == 4
    assert not denied, f"{len(denied)} answers saw half a change: {denied[0]}"


# -- recent answers -----------------------------------------------------------------------


def test_a_remembered_answer_never_outlives_a_change(engine: DecisionEngine) -> None:
    grant = grant_rule(GrantKey(JOHN, "editor", "acme"))
    assert engine.check(JOHN, "acme", "documents", "write").allowed
    assert engine.check(JOHN, "acme", "documents", "write").allowed  # from the memo
    assert (JOHN, "acme", "documents", "write") in engine._memo.answers

    engine.apply([RuleRemoved(grant)], revision=2)
    assert engine.check(JOHN, "acme", "documents", "write") == Decision(False, 2, "no rule allows")
    engine.apply([RuleAdded(grant)], revision=3)
    assert engine.check(JOHN, "acme", "documents", "write") == Decision(
        True, 3, "allowed by policy"
    )
    engine.apply([SubjectChanged(JOHN, "john@example.com", active=False)], revision=4)
    assert not engine.check(JOHN, "acme", "documents", "write").allowed
    engine.apply([SubjectChanged(JOHN, "john@example.com", active=True)], revision=5)
    assert engine.check(JOHN, "acme", "documents", "write").allowed
    engine.load_rules([("p", *permission_rule("viewer", "documents:read").values)], [], [], 6)
    assert not engine.check(JOHN, "acme", "documents", "write").allowed


def test_the_memo_is_empty_before_a_writer_changes_anything(
    engine: DecisionEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # check() trusts any answer it finds in the memo, so a writer must have emptied it
    # before its first change (a reader scheduled mid-change would otherwise get an
    # answer about a state that no longer exists once the writer ends).
    assert engine.check(JOHN, "acme", "documents", "write").allowed
    assert engine._memo.answers
    memo_sizes: list[int] = []
    apply_one = engine._apply_one

    def spy(change: Any) -> bool:
        memo_sizes.append(len(engine._memo.answers))
        return apply_one(change)

    monkeypatch.setattr(engine, "_apply_one", spy)
    engine.apply([RuleRemoved(grant_rule(GrantKey(JOHN, "editor", "acme")))], revision=2)
    assert memo_sizes == [0]
    assert not engine.check(JOHN, "acme", "documents", "write").allowed


def test_the_memo_is_bounded_and_keeps_only_ordinary_answers(
    engine: DecisionEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.engine.engine.MAX_REMEMBERED", 8)
    for n in range(100):
        engine.check(JOHN, "acme", f"resource-{n}", "read")
        assert len(engine._memo.answers) <= 8
    engine._memo.answers.clear()
    engine.check(99, "acme", "documents", "read")  # unknown user
    engine.check(JOHN, "nowhere", "documents", "read")  # unknown workspace
    engine.check(JOHN, "acme", "documents", "read", owner=JOHN)  # owner-dependent
    engine.check(JOHN, "acme", "documents", "read", explain=True)
    assert engine._memo.answers == {}


def test_a_derived_memo_is_forgotten_by_every_writer(engine: DecisionEngine) -> None:
    # The SDK's in-process replica remembers its own answers through engine.memo():
    # the same Memo, forgotten by every writer (apply, load) before it changes anything.
    memo = engine.memo()
    key = ("john@example.com", "acme", "documents", "write")
    seen: list[dict[Any, Any]] = []

    def answer() -> bool:
        return engine.check(JOHN, "acme", "documents", "write").allowed

    assert engine.remembered(memo, key, answer, lambda _: True) is True
    assert memo.answers == {key: True}
    apply_one = engine._apply_one

    def spy(change: Any) -> bool:
        seen.append(dict(memo.answers))
        return apply_one(change)

    engine._apply_one = spy  # type: ignore[method-assign]
    engine.apply([RuleRemoved(grant_rule(GrantKey(JOHN, "editor", "acme")))], revision=2)
    assert seen == [{}] and memo.answers == {}
    assert engine.remembered(memo, key, answer, lambda _: True) is False
    assert memo.answers == {key: False}
    engine.load_rules([], [], [], 3)
    assert memo.answers == {}
    # keep() says no: computed, returned, not remembered.
    assert engine.remembered(memo, key, answer, lambda _: False) is False
    assert memo.answers == {}


def test_a_derived_answer_is_not_remembered_if_a_writer_ran_meanwhile(
    engine: DecisionEngine,
) -> None:
    memo = engine.memo()

    def answer_while_a_writer_runs() -> bool:
        allowed = engine.check(JOHN, "acme", "documents", "write").allowed
        engine.apply([RuleRemoved(grant_rule(GrantKey(JOHN, "editor", "acme")))], revision=2)
        return allowed

    # The answer (computed before the change) is returned, but never stored: neither in
    # the memo of the old state (gone) nor in the new state's.
    assert engine.remembered(memo, "k", answer_while_a_writer_runs, lambda _: True) is True
    assert memo.answers == {}


def test_concurrent_readers_never_get_an_answer_older_than_asked(
    engine: DecisionEngine,
) -> None:
    # Odd revisions hold the grant, even ones don't. A reader notes the revision before
    # asking: the answer must be at least that recent and right for its own revision.
    grant = grant_rule(GrantKey(MARY, "viewer", "globex"))
    engine.apply([RuleAdded(grant)], revision=3)
    done = threading.Event()
    wrong: list[tuple[int, Decision]] = []
    counts: list[int] = []

    def read() -> None:
        seen = 0
        while not done.is_set():
            asked_at = engine.revision
            decision = engine.check(MARY, "globex", "documents", "read")
            seen += 1
            if decision.revision < asked_at or decision.allowed != (decision.revision % 2 == 1):
                wrong.append((asked_at, decision))
        counts.append(seen)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for reader in readers:
        reader.start()
    revision = 3
    try:
        for _ in range(1000):
            revision += 1
            engine.apply([RuleRemoved(grant)], revision)
            revision += 1
            engine.apply([RuleAdded(grant)], revision)
    finally:
        done.set()
        for reader in readers:
            reader.join(timeout=30)
    assert len(counts) == 4 and all(count > 0 for count in counts)
    assert not wrong, f"{len(wrong)} stale or wrong answers, first: {wrong[0]}"
