"""Differential, property-based: the decision engine answers exactly as a plain
``casbin.Enforcer`` on ``model.conf`` and the same rules (DESIGN.md, "Decisions").

Role definitions, grants and requests are generated; the reference is built fresh from
the rules, with nothing but what any Casbin library offers (key_match as the domain
matching function of ``g``). The engine gets the same rules through ``apply``, in any
order, or reaches them through a random sequence of incremental changes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import casbin
from casbin.util import key_match
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.engine.engine import (
    Change,
    Decision,
    DecisionEngine,
    RuleAdded,
    RuleRemoved,
    SubjectChanged,
    WorkspaceAdded,
    WorkspaceRemoved,
)
from gateway.engine.rules import (
    ALL_WORKSPACES,
    GrantKey,
    Rule,
    grant_rule,
    is_policy_rule,
    rule_to_grant,
    user_subject,
)
from gateway.policy.validation import PolicySet, RoleDefinition
from tests.casbin_reference import MODEL, owner_value, reference

WORKSPACES = ("acme", "globex", "initech")
UNKNOWN_WORKSPACES = ("umbrella", "*", "ACME", "acme ", "")
ROLE_NAMES = ("viewer", "editor", "admin", "owner", "auditor")
# A small catalogue with both kinds of wildcard, and owner-only permissions.
PERMISSIONS = (
    "documents:read",
    "documents:write",
    "reports:read",
    "documents:*",
    "*",
    "documents:write:own",
    "documents:*:own",
)
# Requests also name a resource and an action no role mentions, and the wildcard itself.
RESOURCES = ("documents", "reports", "billing", "*")
ACTIONS = ("read", "write", "delete", "*")
# Few users keep the full grid of requests affordable (Casbin takes ~0.1 ms a decision).
USERS = (1, 2, 3)
UNGRANTED_USER = 5  # active, but never granted anything
ALL_USERS = (*USERS, UNGRANTED_USER)
# The owner of the resource a request is about: nobody, user 1 or user 2 (for user 1 its
# own resource and somebody else's; for user 3 both somebody else's).
OWNERS = (None, 1, 2)

# As many examples as the profile gives (tests/conftest.py: `make test` 60, `make
# test-thorough` 600); the case they found (a chain of user-to-user links) is pinned below.
PROPERTY = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Properties whose failure would be plain to see after a few examples.
SMALL_PROPERTY = settings(PROPERTY, max_examples=max(20, settings.default.max_examples // 4))


# -- strategies ---------------------------------------------------------------------------


@st.composite
def policy_sets(draw: st.DrawFn) -> PolicySet:
    """A few roles; inheritance only from roles drawn earlier (a DAG); some roles exist
    in one workspace only."""
    names = draw(st.lists(st.sampled_from(ROLE_NAMES), min_size=1, max_size=5, unique=True))
    roles: dict[str, RoleDefinition] = {}
    for index, name in enumerate(names):
        permissions = draw(st.lists(st.sampled_from(PERMISSIONS), max_size=3, unique=True))
        earlier = names[:index]
        inherits = (
            draw(st.lists(st.sampled_from(earlier), max_size=2, unique=True)) if earlier else []
        )
        workspace = draw(st.one_of(st.none(), st.none(), st.sampled_from(WORKSPACES)))
        roles[name] = RoleDefinition(
            name=name,
            description=f"The {name}",
            permissions=tuple(permissions),
            inherits=tuple(inherits),
            workspace=workspace,
            source="generated.yaml",
        )
    catalogue = {p: p for p in PERMISSIONS if "*" not in p and not p.endswith(":own")}
    return PolicySet(permissions=catalogue, roles=roles)


def grants_for(
    policy: PolicySet, min_size: int = 0, max_size: int = 10
) -> st.SearchStrategy[list[GrantKey]]:
    """Grants of the defined roles (and one undefined role) in workspaces or ``*``."""
    return st.lists(
        st.builds(
            GrantKey,
            st.sampled_from(USERS),
            st.sampled_from([*sorted(policy.roles), "ghost"]),
            st.sampled_from([*WORKSPACES, ALL_WORKSPACES]),
        ),
        min_size=min_size,
        max_size=max_size,
    )


# -- the two sides ----------------------------------------------------------------------


def fresh_engine() -> DecisionEngine:
    engine = DecisionEngine(MODEL)
    engine.apply(
        [
            *(WorkspaceAdded(slug) for slug in WORKSPACES),
            *(SubjectChanged(u, f"user{u}@example.com", active=True) for u in ALL_USERS),
        ],
        revision=1,
    )
    return engine


def warm(engine: DecisionEngine) -> None:
    """Ask once in every workspace and in ``*``, so that Casbin's per-domain caches exist
    before the next changes (they are where incremental updates can go wrong)."""
    for workspace in WORKSPACES:
        engine.check(USERS[0], workspace, "documents", "read")
    engine.permits(USERS[0], ALL_WORKSPACES, "documents", "read")


def grid() -> Iterable[tuple[int, str, str, str, int | None]]:
    return itertools.product(USERS, WORKSPACES, RESOURCES, ACTIONS, OWNERS)


def casbin_allows(
    enforcer: casbin.Enforcer,
    user: int,
    workspace: str,
    resource: str,
    action: str,
    owner: int | None = None,
) -> bool:
    """Casbin's answer, remembered on the enforcer (the grid and the queries ask the same
    questions; Casbin takes ~0.1 ms each)."""
    answers: dict[tuple[int, str, str, str, int | None], bool]
    answers = enforcer.__dict__.setdefault("_remembered_answers", {})
    key = (user, workspace, resource, action, owner)
    if key not in answers:
        answers[key] = bool(
            enforcer.enforce(user_subject(user), workspace, resource, action, owner_value(owner))
        )
    return answers[key]


def assert_same_decisions(engine: DecisionEngine, rules: Iterable[Rule]) -> None:
    rules = sorted(set(rules))
    expected = reference(rules)
    mismatches = []
    for user, workspace, resource, action, owner in grid():
        want = casbin_allows(expected, user, workspace, resource, action, owner)
        decision = engine.check(user, workspace, resource, action, owner=owner, explain=True)
        if decision.allowed != want:
            mismatches.append((user, workspace, resource, action, owner, want, decision.allowed))
        assert_explains(decision, rules, user, workspace, resource, action, owner)
    for user, resource, action, owner in itertools.product(USERS, RESOURCES, ACTIONS, OWNERS):
        # The admin API asks about the whole installation with the "*" domain.
        want = casbin_allows(expected, user, ALL_WORKSPACES, resource, action, owner)
        if engine.permits(user, ALL_WORKSPACES, resource, action, owner=owner) != want:
            mismatches.append((user, ALL_WORKSPACES, resource, action, owner, want, not want))
    for workspace in WORKSPACES:
        # An active user without grants: nothing, not even through the wildcards.
        assert not engine.check(UNGRANTED_USER, workspace, "*", "*", owner=UNGRANTED_USER).allowed
        assert not casbin_allows(expected, UNGRANTED_USER, workspace, "*", "*", UNGRANTED_USER)
    assert not mismatches, (
        "engine differs from Casbin (user, workspace, resource, action, owner, casbin, engine):\n"
        + "\n".join(map(str, mismatches[:10]))
        + "\nrules:\n"
        + "\n".join(map(str, rules))
    )
    assert_same_query_answers(engine, expected)


def assert_explains(
    decision: Decision,
    rules: Sequence[Rule],
    user: int,
    workspace: str,
    resource: str,
    action: str,
    owner: int | None,
) -> None:
    """An explanation names a rule that exists and matches the request, reached from the
    user through existing ``g`` links valid in the workspace; a deny names no rule."""
    explanation = decision.explanation
    assert explanation is not None
    if not decision.allowed:
        assert explanation["rule"] is None
        assert explanation["reason"] == decision.reason
        return
    rule = Rule("p", tuple(explanation["rule"]))
    assert rule in rules
    role, domain, obj, act, cond = rule.values
    assert key_match(workspace, domain) and key_match(resource, obj) and key_match(action, act)
    assert cond == "" or (cond == "owner" and owner == user)
    holder = user_subject(user)
    for link in explanation["path"]:
        assert Rule("g", tuple(link)) in rules
        assert link[0] == holder and key_match(workspace, link[2])
        holder = link[1]
    assert holder == role


def assert_same_query_answers(engine: DecisionEngine, expected: casbin.Enforcer) -> None:
    """The three queries agree with asking Casbin about every user, workspace, resource
    and action (brute force)."""
    for user, resource, action, owner in itertools.product(ALL_USERS, RESOURCES, ACTIONS, OWNERS):
        want = {w for w in WORKSPACES if casbin_allows(expected, user, w, resource, action, owner)}
        got = engine.workspaces_where(user, resource, action, owner=owner)
        assert got == want, ("workspaces_where", user, resource, action, owner)
    for workspace, resource, action, owner in itertools.product(
        WORKSPACES, RESOURCES, ACTIONS, OWNERS
    ):
        want_users = {
            u for u in ALL_USERS if casbin_allows(expected, u, workspace, resource, action, owner)
        }
        got_users = engine.subjects_who_may(workspace, resource, action, owner=owner)
        assert got_users == want_users, ("subjects_who_may", workspace, resource, action, owner)
    for user, workspace in itertools.product(ALL_USERS, WORKSPACES):
        pairs = engine.permissions(user, workspace)
        for resource, action in itertools.product(RESOURCES, ACTIONS):
            # The pairs are patterns: a request is allowed exactly when one covers it
            # (owner-only ones only on the user's own resources).
            for owner in (None, user):
                covered = any(
                    key_match(resource, r)
                    and key_match(action, a.removesuffix(":own"))
                    and (owner == user or not a.endswith(":own"))
                    for r, a in pairs
                )
                want = casbin_allows(expected, user, workspace, resource, action, owner)
                assert covered == want, ("permissions", user, workspace, resource, action, owner)


def additions(rules: Sequence[Rule]) -> list[Change]:
    return [RuleAdded(rule) for rule in rules]


# -- properties ---------------------------------------------------------------------------


@PROPERTY
@given(data=st.data())
def test_engine_decides_as_casbin(data: st.DataObject) -> None:
    policy = data.draw(policy_sets(), label="policy")
    grants = data.draw(grants_for(policy), label="grants")
    rules = policy.rules() + [grant_rule(g) for g in grants]
    ordered = data.draw(st.permutations(rules), label="order")
    # Optionally ask questions while the rules arrive, in several changes.
    cut = data.draw(st.integers(0, len(ordered)), label="cut")
    warm_between = data.draw(st.booleans(), label="warm")

    engine = fresh_engine()
    engine.apply(additions(ordered[:cut]), revision=2)
    if warm_between:
        warm(engine)
    engine.apply(additions(ordered[cut:]), revision=3)

    assert engine.revision == 3
    assert_same_decisions(engine, rules)


@st.composite
def rule_pools(draw: st.DrawFn) -> tuple[PolicySet, list[Rule]]:
    """A policy and every rule a change sequence may add or remove: its rules and grants."""
    policy = draw(policy_sets())
    grants = draw(grants_for(policy, min_size=1, max_size=12))
    pool = sorted(set(policy.rules()) | {grant_rule(g) for g in grants})
    return policy, pool


@PROPERTY
@given(data=st.data())
def test_incremental_changes_end_where_a_fresh_enforcer_starts(data: st.DataObject) -> None:
    _, pool = data.draw(rule_pools(), label="pool")
    initial = data.draw(st.sets(st.sampled_from(pool)), label="initial")
    batches = data.draw(
        st.lists(
            st.lists(st.tuples(st.booleans(), st.sampled_from(pool)), min_size=1, max_size=4),
            max_size=8,
        ),
        label="batches",
    )
    probes = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from(ALL_USERS),
                st.sampled_from(WORKSPACES),
                st.sampled_from(RESOURCES),
                st.sampled_from(ACTIONS),
            ),
            min_size=len(batches),
            max_size=len(batches),
        ),
        label="probes",
    )

    engine = fresh_engine()
    engine.apply(additions(sorted(initial)), revision=2)
    warm(engine)
    current = set(initial)
    revision = 2
    for batch, probe in zip(batches, probes, strict=True):
        changes: list[Change] = []
        for add, rule in batch:
            if add:
                changes.append(RuleAdded(rule))
                current.add(rule)
            else:
                changes.append(RuleRemoved(rule))
                current.discard(rule)
        revision += 1
        engine.apply(changes, revision)
        engine.check(*probe)  # readers in between changes, as in production

    assert engine.revision == revision
    assert_same_decisions(engine, current)


@SMALL_PROPERTY
@given(data=st.data())
def test_deactivated_users_always_deny(data: st.DataObject) -> None:
    policy = data.draw(policy_sets(), label="policy")
    grants = data.draw(grants_for(policy), label="grants")
    # Make sure somebody would be allowed a lot: user 1 is a super admin.
    superadmin = RoleDefinition("root", "Everything", ("*",), (), None, "generated.yaml")
    rules = [*policy.rules(), *PolicySet({}, {"root": superadmin}).rules()]
    rules += [grant_rule(g) for g in grants] + [grant_rule(GrantKey(1, "root", "*"))]
    inactive = data.draw(st.sets(st.sampled_from(USERS), min_size=1), label="inactive")

    engine = fresh_engine()
    engine.apply(additions(rules), revision=2)
    warm(engine)
    engine.apply(
        [SubjectChanged(u, f"user{u}@example.com", active=False) for u in sorted(inactive)],
        revision=3,
    )

    expected = reference(rules)
    for user, workspace, resource, action, owner in grid():
        decision = engine.check(user, workspace, resource, action, owner=owner)
        if user in inactive:
            assert decision.allowed is False
            assert decision.reason == "subject is not active"
        else:
            want = casbin_allows(expected, user, workspace, resource, action, owner)
            assert decision.allowed == want
    for user in inactive:
        assert not engine.permits(user, ALL_WORKSPACES, "*", "*")
        assert engine.permissions(user, WORKSPACES[0]) == set()
        assert engine.workspaces_where(user, "*", "*") == set()
        assert user not in engine.subjects_who_may(WORKSPACES[0], "*", "*")
        assert not engine.permits(user, WORKSPACES[0], "documents", "read")


@SMALL_PROPERTY
@given(data=st.data())
def test_unknown_workspaces_always_deny(data: st.DataObject) -> None:
    policy = data.draw(policy_sets(), label="policy")
    grants = data.draw(grants_for(policy), label="grants")
    # Everybody holds every role everywhere: Casbin alone would allow in any domain.
    everywhere = [GrantKey(u, role, ALL_WORKSPACES) for u in USERS for role in policy.roles]
    rules = policy.rules() + [grant_rule(g) for g in [*grants, *everywhere]]
    removed = data.draw(st.sets(st.sampled_from(WORKSPACES)), label="removed")

    engine = fresh_engine()
    engine.apply(additions(rules), revision=2)
    warm(engine)
    engine.apply([WorkspaceRemoved(slug) for slug in sorted(removed)], revision=3)

    expected = reference(rules)
    for user, workspace, resource, action in itertools.product(
        ALL_USERS, (*UNKNOWN_WORKSPACES, *sorted(removed)), RESOURCES, ACTIONS
    ):
        decision = engine.check(user, workspace, resource, action, owner=user)
        assert decision.allowed is False, (user, workspace, resource, action)
        assert decision.reason == "unknown workspace"
        assert engine.permissions(user, workspace) == set()
        assert engine.subjects_who_may(workspace, resource, action) == set()
        assert workspace not in engine.workspaces_where(user, resource, action)
    # Workspaces that remain known still follow Casbin.
    for user, workspace, resource, action in itertools.product(
        ALL_USERS, sorted(set(WORKSPACES) - removed), RESOURCES, ACTIONS
    ):
        want = casbin_allows(expected, user, workspace, resource, action)
        assert engine.check(user, workspace, resource, action).allowed == want


# -- the generated rules themselves -------------------------------------------------------


@SMALL_PROPERTY
@given(data=st.data())
def test_generated_rules_split_into_policy_and_grants(data: st.DataObject) -> None:
    """The pool the properties draw from is what production has: policy rules from
    PolicySet and grants that translate back to themselves."""
    policy = data.draw(policy_sets(), label="policy")
    grants = data.draw(grants_for(policy), label="grants")
    for rule in policy.rules():
        assert is_policy_rule(rule)
        assert rule_to_grant(rule) is None
    for grant in grants:
        assert not is_policy_rule(grant_rule(grant))
        assert rule_to_grant(grant_rule(grant)) == grant


# -- rules of any shape (as a hand-edited table may hold) ----------------------------------

SUBJECTS = ("user:1", "user:2", "user:3", "role:a", "role:b", "role:c", "user:01", "x")
DOMAIN_PATTERNS = ("acme", "globex", "*", "ac*", "*x", "")
OBJECTS = ("documents", "reports", "doc*", "*", "")
ACTS = ("read", "write", "*", "re*")
CONDITIONS = ("", "", "owner", "other")


@st.composite
def any_rules(draw: st.DrawFn) -> list[Rule]:
    """Arbitrary p rules and g links among users and roles: links to users, user to user,
    cycles, chains longer than Casbin's 10 levels, domain and object patterns, rules of
    user subjects, unknown conditions."""
    p_rules = draw(
        st.lists(
            st.builds(
                lambda *values: Rule("p", values),
                st.sampled_from(SUBJECTS),
                st.sampled_from(DOMAIN_PATTERNS),
                st.sampled_from(OBJECTS),
                st.sampled_from(ACTS),
                st.sampled_from(CONDITIONS),
            ),
            max_size=6,
        )
    )
    links = draw(
        st.lists(
            st.builds(
                lambda *values: Rule("g", values),
                st.sampled_from(SUBJECTS),
                st.sampled_from(SUBJECTS),
                st.sampled_from(DOMAIN_PATTERNS),
            ),
            max_size=8,
        )
    )
    if draw(st.booleans(), label="long chain"):
        # user:1 -> c0 -> c1 -> ... -> c11, with a rule at some depth.
        length = draw(st.integers(1, 12), label="chain length")
        chain = ["user:1", *(f"role:c{i}" for i in range(length))]
        links += [Rule("g", (a, b, "*")) for a, b in itertools.pairwise(chain)]
        p_rules.append(Rule("p", (chain[-1], "*", "reports", "read", "")))
    return [*p_rules, *links]


def assert_same_on_any_rules(engine: DecisionEngine, rules: Sequence[Rule]) -> None:
    expected = reference(sorted(set(rules)))
    for user, domain, obj, act, owner in itertools.product(
        USERS, ("acme", "globex", "acx"), ("documents", "reports", "*"), ACTS, (None, 1)
    ):
        want = casbin_allows(expected, user, domain, obj, act, owner)
        decision = engine.check(user, domain, obj, act, owner=owner, explain=True)
        assert decision.allowed == want, (user, domain, obj, act, owner, sorted(set(rules)))
        assert engine.permits(user, domain, obj, act, owner=owner) == want
    for user, obj, act in itertools.product(USERS, ("documents", "*"), ("read", "*")):
        want = casbin_allows(expected, user, "*", obj, act)
        assert engine.permits(user, "*", obj, act) == want, (user, "*", obj, act)
    for obj, act, owner in itertools.product(("documents", "reports"), ("read", "write"), OWNERS):
        for domain in ("acme", "globex", "acx"):
            want_users = {
                u for u in ALL_USERS if casbin_allows(expected, u, domain, obj, act, owner)
            }
            assert engine.subjects_who_may(domain, obj, act, owner=owner) == want_users
        for user in USERS:
            want_spaces = {
                w for w in (*WORKSPACES, "acx") if casbin_allows(expected, user, w, obj, act, owner)
            }
            assert engine.workspaces_where(user, obj, act, owner=owner) == want_spaces


@PROPERTY
@given(data=st.data())
def test_rules_of_any_shape_decide_as_casbin(data: st.DataObject) -> None:
    rules = data.draw(any_rules(), label="rules")
    engine = fresh_engine()
    engine.apply([WorkspaceAdded("acx")], revision=2)
    engine.apply(additions(data.draw(st.permutations(rules), label="order")), revision=3)
    assert_same_on_any_rules(engine, rules)
    # And after removing some of them again, one by one.
    removed = data.draw(st.sets(st.sampled_from(rules)) if rules else st.just(set()))
    revision = 3
    for rule in sorted(removed):
        revision += 1
        engine.apply([RuleRemoved(rule)], revision)
    assert_same_on_any_rules(engine, [r for r in rules if r not in removed])


def test_a_chain_of_user_to_user_links_decides_as_casbin() -> None:
    """Found by hypothesis: user:1 → user:2 → user:3 (links Casbin allows, Ringfence never
    writes) reach user:3's rule; every link of a user is a grant in the index, so it must
    walk links as soon as one grant names a user."""
    rules = [
        Rule("p", ("user:3", "acme", "documents", "read", "")),
        Rule("g", ("user:1", "user:2", "acme")),
        Rule("g", ("user:2", "user:3", "acme")),
    ]
    engine = fresh_engine()
    engine.apply([WorkspaceAdded("acx")], revision=2)
    engine.apply(additions(rules), revision=3)
    assert_same_on_any_rules(engine, rules)
    engine.apply([RuleRemoved(rules[2])], revision=4)
    assert_same_on_any_rules(engine, rules[:2])
