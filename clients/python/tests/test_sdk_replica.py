"""The in-process replica (``ringfence_client.replica.LocalDecider``) against the real
gateway: a differential test (random grants and changes made through the admin API; once
the replica holds the gateway's revision, every answer of the grid is the gateway's own,
at that revision), following the feed on its thread, and the fallbacks when stale."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from itertools import product

import httpx
import pytest
from conftest import JOHN, MARY, Gateway
from ringfence_client import Question, RingfenceClient
from ringfence_client import replica as replica_module
from ringfence_client.replica import NOT_HELD, STALE, LocalDecider, ReplicaStale

from gateway.engine.engine import RuleAdded, RuleRemoved, SubjectChanged
from gateway.engine.rules import GrantKey, grant_rule, inheritance_rule, permission_rule
from tests.cluster import wait_until
from tests.helpers import ADMIN_EMAIL, create_client, onboard

ZOE = "zoe@example.com"
ROLES = ["viewer", "editor", "admin", "owner"]
PERMISSIONS = [
    ("documents", "read"),
    ("documents", "write"),
    ("documents", "delete"),
    ("users", "invite"),
    ("users", "remove"),
    ("settings", "write"),
]


def replicating(gateway: Gateway) -> RingfenceClient:
    """A client whose token has decisions:replicate and decisions:check."""
    client_id, secret = create_client(
        gateway.server.settings, "decisions:check", "decisions:replicate", name="replica"
    )
    return RingfenceClient(gateway.url, client_id=client_id, client_secret=secret, scope=None)


def ok(response: httpx.Response) -> None:
    assert response.status_code in (200, 201), response.text


def test_the_local_replica_answers_as_the_gateway(gateway: Gateway) -> None:
    admin = gateway.admin
    people = {
        JOHN: gateway.john_id,
        ZOE: onboard(gateway.server, admin, ZOE, "Zoe", [("globex", "viewer")]),
    }
    people[MARY] = next(
        u["id"] for u in admin.get("/users", params={"q": MARY}).json() if u["email"] == MARY
    )
    workspaces = ["acme", "globex"]
    inactive: set[int] = set()
    rng = random.Random(21)
    kinds: set[str] = set()
    answers: set[tuple[bool, str]] = set()
    subjects = [*people, ADMIN_EMAIL, "nobody@example.com", f"user:{gateway.john_id}"]

    with replicating(gateway) as client:
        replica = LocalDecider(client, max_staleness=3600)
        replica.load()
        # One that holds acme's rules only (and every workspace's, *): the same answers there.
        acme = LocalDecider(client, max_staleness=3600, workspaces=["acme"])
        acme.load()
        for step in range(12):
            user = rng.choice(list(people.values()))
            kind = rng.choice(["roles", "roles", "grant", "status", "workspace"])
            kinds.add(kind)
            if kind == "roles":
                ws = rng.choice(workspaces)
                roles = rng.sample(ROLES, rng.randint(0, 2))
                ok(admin.put(f"/users/{user}/workspaces/{ws}/roles", json={"roles": roles}))
            elif kind == "grant":  # time-limited: its end time travels in the feed too
                ends = (datetime.now(UTC) + timedelta(days=1)).isoformat()
                ws, role = rng.choice(workspaces), rng.choice(ROLES)
                response = admin.post(
                    f"/users/{user}/grants",
                    json={"workspace": ws, "role": role, "expires_at": ends},
                )
                assert response.status_code in (201, 409), response.text
            elif kind == "status":
                verb = "reactivate" if user in inactive else "deactivate"
                ok(admin.post(f"/users/{user}/{verb}"))
                inactive ^= {user}
            else:
                slug = f"space{step}"
                ok(admin.post("/workspaces", json={"slug": slug, "name": slug}))
                workspaces.append(slug)

            revision = replica.sync()
            assert acme.sync() == revision
            grid = [
                Question(s, w, r, a, owner)
                for s, w, (r, a), owner in product(
                    subjects, [*workspaces, "nowhere"], PERMISSIONS, [None]
                )
            ]
            for start in range(0, len(grid), 100):
                remote = client.check_many(grid[start : start + 100])
                for question, answer in zip(grid[start : start + 100], remote, strict=True):
                    assert answer.revision == revision, (step, question)
                    local = replica.check(
                        question.subject, question.workspace, question.resource, question.action
                    )
                    assert (local.allowed, local.reason, local.revision) == (
                        answer.allowed,
                        answer.reason,
                        answer.revision,
                    ), (step, kind, question)
                    answers.add((local.allowed, local.reason))
                    if question.workspace == "acme":
                        scoped = acme.check(
                            question.subject, "acme", question.resource, question.action
                        )
                        assert scoped == local, (step, kind, question)
        assert kinds == {"roles", "grant", "status", "workspace"}
        assert {reason for _, reason in answers} >= {
            "allowed by policy",
            "no rule allows",
            "unknown subject",
            "subject is not active",
            "unknown workspace",
        }
        # The explanation is the engine's too.
        why = replica.check(JOHN, "acme", "documents", "read", explain=True)
        assert why.explanation == client.explain(JOHN, "acme", "documents", "read").explanation


def test_it_follows_the_feed_and_falls_back_when_stale(gateway: Gateway) -> None:
    admin = gateway.admin
    with replicating(gateway) as client:
        with LocalDecider(client, max_staleness=3600, poll_timeout=5) as replica:
            assert not replica.check(JOHN, "globex", "documents", "read").allowed
            response = admin.post(
                f"/users/{gateway.john_id}/grants", json={"workspace": "globex", "role": "viewer"}
            )
            ok(response)
            revision = int(response.headers["X-Ringfence-Revision"])
            wait_until(lambda: replica.revision >= revision or None, "the replica to follow")
            decision = replica.check(JOHN, "globex", "documents", "read")
            assert decision.allowed and decision.revision == revision and not decision.stale

        # More stale than its bound (0 s: at once), never an answer from old memory.
        stale = LocalDecider(client, max_staleness=0, fallback="deny")
        stale.load()
        denied = stale.check(JOHN, "globex", "documents", "read")
        assert (denied.allowed, denied.reason, denied.stale) == (False, STALE, True)
        stale.fallback = "remote"
        remote = stale.check(JOHN, "globex", "documents", "read")
        assert remote.allowed and remote.revision == revision
        stale.fallback = "raise"
        with pytest.raises(ReplicaStale):
            stale.check(JOHN, "globex", "documents", "read")
        unloaded = LocalDecider(client, fallback="deny")
        assert unloaded.check(JOHN, "acme", "documents", "read").reason == STALE

        # A replica of some workspaces: other workspaces go to the fallback.
        acme = LocalDecider(client, fallback="deny", workspaces=["acme"])
        acme.sync()
        assert acme.check(JOHN, "acme", "documents", "write").allowed
        assert acme.check(JOHN, "globex", "documents", "read").reason == NOT_HELD
        acme.fallback = "remote"
        assert acme.check(JOHN, "globex", "documents", "read").allowed


# -- repeated questions: the replica's memo ---------------------------------------------


def loaded(expiries: list[dict[str, object]] | None = None) -> LocalDecider:
    """A replica loaded from a snapshot document by hand (no gateway): john (id 1) an
    editor in acme, mary (2) nothing, both active."""
    rules = [
        permission_rule("viewer", "documents:read"),
        permission_rule("editor", "documents:write"),
        inheritance_rule("editor", "viewer"),
        grant_rule(GrantKey(1, "editor", "acme")),
    ]
    state = {
        "revision": 1,
        "rules": [[rule.ptype, *rule.values] for rule in rules],
        "subjects": [
            {"user_id": 1, "email": JOHN, "active": True},
            {"user_id": 2, "email": MARY, "active": True},
        ],
        "workspaces": ["acme"],
        "expiries": expiries or [],
    }
    replica = LocalDecider(None, max_staleness=3600, fallback="deny")  # type: ignore[arg-type]
    replica._load(state, time.monotonic())
    return replica


def test_a_remembered_answer_never_outlives_an_applied_change() -> None:
    replica = loaded()
    question = (JOHN, "acme", "documents", "write")
    first = replica.check(*question)
    assert first.allowed and first.revision == 1
    assert replica._memo.answers[question] is first
    assert replica.check(*question) is first  # from the memo
    # Every writer of the engine forgets the replica's answers before it changes anything.
    grant = grant_rule(GrantKey(1, "editor", "acme"))
    assert replica.engine.apply([RuleRemoved(grant)], 2)
    assert replica._memo.answers == {}
    assert (replica.check(*question).allowed, replica.revision) == (False, 2)
    assert replica.engine.apply([SubjectChanged(1, JOHN, False)], 3)
    assert replica.check(*question).reason == "subject is not active"
    assert replica.engine.apply([SubjectChanged(1, JOHN, True), RuleAdded(grant)], 4)
    assert replica.check(*question).allowed
    # The subject as asked is the key: another spelling is a question of its own.
    assert replica.check(JOHN.upper(), "acme", "documents", "write").allowed
    assert len(replica._memo.answers) == 2
    empty = {"revision": 5, "rules": [], "subjects": [], "workspaces": [], "expiries": []}
    replica._load(empty, time.monotonic())
    assert replica._memo.answers == {}
    assert replica.check(*question).reason == "unknown subject"


def test_a_remembered_answer_is_never_given_past_the_staleness_bound() -> None:
    replica = loaded()
    assert replica.check(JOHN, "acme", "documents", "read").allowed
    assert replica._memo.answers
    replica.max_staleness = 0  # more stale than its bound from now on
    denied = replica.check(JOHN, "acme", "documents", "read")
    assert (denied.allowed, denied.reason, denied.stale) == (False, STALE, True)
    replica.fallback = "raise"
    with pytest.raises(ReplicaStale):
        replica.check(JOHN, "acme", "documents", "read")
    replica.max_staleness = 3600
    assert replica.check(JOHN, "acme", "documents", "read").allowed


def test_a_remembered_allow_ends_with_its_time_limited_grant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ends = datetime.now(UTC) + timedelta(hours=1)
    replica = loaded(
        [
            {
                "type": "expiry",
                "ptype": "g",
                "values": list(grant_rule(GrantKey(1, "editor", "acme")).values),
                "at": ends.isoformat(),
            }
        ]
    )
    question = (JOHN, "acme", "documents", "write")
    assert replica.check(*question).allowed
    assert question in replica._memo.answers
    # The wall clock passes the end: the remembered allow is not given, the grant leaves
    # memory (a writer: the memo is forgotten) and the answer is the gateway's deny.
    monkeypatch.setattr(replica_module, "_time", lambda: ends.timestamp() + 1)
    assert replica.check(*question).reason == "no rule allows"
    assert replica.revision == 1


def test_owner_and_explain_questions_are_not_answered_from_the_memo() -> None:
    replica = loaded()
    assert replica.check(JOHN, "acme", "documents", "read").allowed
    why = replica.check(JOHN, "acme", "documents", "read", explain=True)
    assert why.explanation is not None and why.explanation.rule is not None
    assert list(replica._memo.answers) == [(JOHN, "acme", "documents", "read")]


def test_a_failed_decision_denies_and_is_not_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    replica = loaded()

    def broken(*_: object) -> bool:
        raise RuntimeError("index broken")

    monkeypatch.setattr(replica.engine._index, "allows", broken)
    failed = replica.check(JOHN, "acme", "documents", "read")
    assert (failed.allowed, failed.reason) == (False, "the decision failed")
    assert replica._memo.answers == {}


def test_on_a_quiet_gateway_it_stays_fresh_within_its_bound(gateway: Gateway) -> None:
    """With nothing changing, the feed's long poll answers only at its timeout, and an
    answer confirms the head as of when the poll began. A poll longer than the bound
    (the default 25 s against 5 s) left the replica stale most of the time, every check
    going to the fallback. The follower's polls are a third of the bound at most, so it
    stays fresh. (A bound of 0.9 s, watched for 2 s: a few polls' worth.)"""
    with (
        replicating(gateway) as client,
        LocalDecider(client, max_staleness=0.9, fallback="deny") as replica,
    ):
        seen_stale = []
        until = time.monotonic() + 2.0
        while time.monotonic() < until:
            decision = replica.check(JOHN, "acme", "documents", "read")
            seen_stale.append(decision.stale)
            time.sleep(0.05)
        assert replica.poll_timeout == 25.0  # the default, unchanged
        assert not any(seen_stale), f"stale in {sum(seen_stale)} of {len(seen_stale)}"
        assert decision.allowed
