"""Access reviews through HTTP: campaigns freeze the grants, reviewers keep or revoke
(revocations deny at once), nobody reviews their own access, reviewers of one workspace
see nothing of another, and deadlines flag or revoke what is left undecided."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.db.models import AuditEvent, ReviewItem, utcnow
from gateway.db.session import make_engine
from tests.helpers import (
    LiveServer,
    assert_problem,
    cli_env,
    create_workspaces,
    invite_and_accept,
    post_check,
    run_cli,
)


@dataclass
class World:
    root: httpx.Client
    alice: httpx.Client  # admin of acme
    gina: httpx.Client  # admin of globex
    ids: dict[str, int]


@pytest.fixture
def world(server: LiveServer) -> World:
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    ids: dict[str, int] = {}
    clients: dict[str, httpx.Client] = {}
    for name, roles in {
        "alice": [("acme", "admin")],
        "bob": [("acme", "editor")],
        "carol": [("acme", "viewer"), ("globex", "viewer")],
        "gina": [("globex", "admin")],
    }.items():
        ids[name], clients[name] = invite_and_accept(
            server, root, f"{name}@example.com", name.title(), roles
        )
    return World(root, clients["alice"], clients["gina"], ids)


def start(client: httpx.Client, workspace: str, **extra: Any) -> httpx.Response:
    body = {
        "name": f"Review of {workspace}",
        "workspace": workspace,
        "deadline": (utcnow() + timedelta(hours=1)).isoformat(),
        **extra,
    }
    return client.post("/reviews/campaigns", json=body)


def started(client: httpx.Client, workspace: str, **extra: Any) -> dict[str, Any]:
    response = start(client, workspace, **extra)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def items_of(client: httpx.Client, campaign_id: int) -> dict[tuple[str, str], dict[str, Any]]:
    response = client.get(f"/reviews/campaigns/{campaign_id}/items", params={"page_size": 100})
    assert response.status_code == 200, response.text
    return {(i["user"]["email"].split("@")[0], i["role"]): i for i in response.json()}


def allowed(server: LiveServer, who: str, workspace: str = "acme", action: str = "read") -> bool:
    with server.client() as anyone:
        decision = post_check(anyone, f"{who}@example.com", workspace, "documents", action)
    return bool(decision.json()["allowed"])


def audit_actions(server: LiveServer) -> list[str]:
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with Session(db) as session:
            return list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))
    finally:
        db.dispose()


def test_a_campaign_freezes_grants_and_reviewers_keep_or_revoke_at_once(
    server: LiveServer, world: World
) -> None:
    campaign = started(world.root, "acme")
    assert campaign["status"] == "open" and campaign["workspace"] == "acme"
    assert campaign["progress"]["total"] == 3  # alice admin, bob editor, carol viewer
    items = items_of(world.root, campaign["id"])
    assert set(items) == {("alice", "admin"), ("bob", "editor"), ("carol", "viewer")}
    # Reviewers: those who could revoke it there, never its holder. The super admin
    # (id 1) reviews everything; Alice reviews the others but not her own grant.
    assert sorted(items[("bob", "editor")]["reviewer_ids"]) == [1, world.ids["alice"]]
    assert items[("alice", "admin")]["reviewer_ids"] == [1]

    mine = world.alice.get("/reviews/items").json()
    assert {(i["user"]["name"], i["role"]) for i in mine} == {
        ("Bob", "editor"),
        ("Carol", "viewer"),
    }

    # Nobody reviews their own access: refused, and nothing changes.
    own = items[("alice", "admin")]["id"]
    assert_problem(
        world.alice.post(f"/reviews/items/{own}/decision", json={"decision": "keep"}),
        403,
        "forbidden",
        "your own access",
    )

    keep = world.alice.post(
        f"/reviews/items/{items[('bob', 'editor')]['id']}/decision",
        json={"decision": "keep", "comment": "still on the team"},
    )
    assert keep.status_code == 200, keep.text
    assert keep.json()["decision"] == "keep"
    assert keep.json()["decided_by"]["id"] == world.ids["alice"]
    assert allowed(server, "bob")

    assert allowed(server, "carol")
    revision = server.client().get("/healthz").json()["revision"]
    revoke = world.alice.post(
        f"/reviews/items/{items[('carol', 'viewer')]['id']}/decision",
        json={"decision": "revoke", "comment": "left the project"},
    )
    assert revoke.status_code == 200, revoke.text
    # At once: the very next check denies, at a newer revision; globex is untouched.
    with server.client() as anyone:
        decision = post_check(anyone, "carol@example.com", "acme", "documents", "read").json()
    assert decision["allowed"] is False and decision["revision"] > revision
    assert allowed(server, "carol", "globex")
    carol = world.root.get(f"/users/{world.ids['carol']}").json()
    assert carol["roles"] == {"globex": ["viewer"]}

    # Decisions are final.
    assert_problem(
        world.alice.post(
            f"/reviews/items/{items[('carol', 'viewer')]['id']}/decision",
            json={"decision": "keep"},
        ),
        409,
        "conflict",
    )

    progress = world.root.get(f"/reviews/campaigns/{campaign['id']}").json()
    assert progress["progress"] | {} == {
        "total": 3,
        "decided": 2,
        "undecided": 1,
        "kept": 1,
        "revoked": 1,
        "flagged": 0,
        "unassigned": 0,
    }
    by_reviewer = {r["user_id"]: r for r in progress["reviewers"]}
    assert by_reviewer[world.ids["alice"]] | {} == {
        "user_id": world.ids["alice"],
        "name": "Alice",
        "assigned": 2,
        "decided": 2,
        "undecided": 0,
        "decided_by_them": 2,
    }
    assert by_reviewer[1]["assigned"] == 3 and by_reviewer[1]["undecided"] == 1

    actions = audit_actions(server)
    assert actions.count("review.decided") == 2
    assert "review.started" in actions
    assert actions[-2:] == ["grant.removed", "review.decided"]


def test_a_reviewer_of_one_workspace_sees_and_decides_nothing_of_another(
    server: LiveServer, world: World
) -> None:
    acme = started(world.root, "acme")
    items = items_of(world.root, acme["id"])
    bob_item = items[("bob", "editor")]["id"]

    assert world.gina.get(f"/reviews/campaigns/{acme['id']}").status_code == 404
    assert world.gina.get(f"/reviews/campaigns/{acme['id']}/items").status_code == 404
    assert world.gina.get("/reviews/campaigns").json() == []
    assert world.gina.get("/reviews/items").json() == []
    assert_problem(
        world.gina.post(f"/reviews/items/{bob_item}/decision", json={"decision": "revoke"}),
        404,
        "not-found",
    )
    assert_problem(start(world.gina, "acme"), 403, "forbidden")
    assert_problem(start(world.gina, "*"), 403, "forbidden")
    assert world.gina.post(f"/reviews/campaigns/{acme['id']}/close").status_code == 404
    assert allowed(server, "bob", action="write")
    assert items_of(world.root, acme["id"])[("bob", "editor")]["decision"] == "undecided"

    # A campaign over every workspace: each admin sees only their workspace's part.
    everywhere = started(world.root, "*")
    seen = items_of(world.gina, everywhere["id"])
    assert {ws for ws in (i["workspace"] for i in seen.values())} == {"globex"}
    assert set(seen) == {("carol", "viewer"), ("gina", "admin")}
    assert world.gina.get(f"/reviews/campaigns/{everywhere['id']}").json()["progress"]["total"] == 2
    acme_part = items_of(world.root, everywhere["id"])[("bob", "editor")]["id"]
    assert (
        world.gina.post(
            f"/reviews/items/{acme_part}/decision", json={"decision": "revoke"}
        ).status_code
        == 404
    )
    # Someone without reviews:read anywhere gets nothing either.
    editor_id, bob = invite_and_accept(
        server, world.root, "eddie@example.com", "Eddie", [("globex", "editor")]
    )
    assert bob.get("/reviews/items").json() == []
    assert bob.get(f"/reviews/campaigns/{everywhere['id']}").status_code == 404
    assert editor_id


def wait_past(deadline: str) -> None:
    from datetime import datetime

    remaining = (datetime.fromisoformat(deadline) - utcnow()).total_seconds()
    time.sleep(max(0.0, remaining) + 0.2)


def test_at_the_deadline_undecided_grants_are_flagged(server: LiveServer, world: World) -> None:
    deadline = (utcnow() + timedelta(seconds=1.5)).isoformat()
    campaign = started(world.root, "acme", deadline=deadline, on_deadline="flag")
    items = items_of(world.root, campaign["id"])
    world.alice.post(
        f"/reviews/items/{items[('bob', 'editor')]['id']}/decision", json={"decision": "keep"}
    )
    assert run_cli(server.settings, "review", "close-due").output.strip() == (
        "Closed 0 review campaign(s)."
    )
    wait_past(deadline)
    # Too late to decide, even before the close task runs.
    assert_problem(
        world.alice.post(
            f"/reviews/items/{items[('carol', 'viewer')]['id']}/decision",
            json={"decision": "revoke"},
        ),
        409,
        "conflict",
        "deadline",
    )
    result = run_cli(server.settings, "review", "close-due")
    assert result.exit_code == 0 and "Closed 1 review campaign(s)." in result.output

    closed = world.root.get(f"/reviews/campaigns/{campaign['id']}").json()
    assert closed["status"] == "closed" and closed["closed_at"]
    assert closed["progress"]["flagged"] == 2 and closed["progress"]["kept"] == 1
    after = items_of(world.root, campaign["id"])
    assert after[("carol", "viewer")]["flagged"] is True
    assert after[("carol", "viewer")]["decision"] == "undecided"
    assert after[("bob", "editor")]["flagged"] is False
    assert allowed(server, "carol") and allowed(server, "alice")  # flagged, not revoked
    actions = audit_actions(server)
    assert actions.count("review.flagged") == 2 and "review.closed" in actions
    assert "grant.removed" not in actions


def test_at_the_deadline_undecided_grants_can_be_revoked(server: LiveServer, world: World) -> None:
    from mailer.housekeeping import close_due_reviews

    deadline = (utcnow() + timedelta(seconds=1.5)).isoformat()
    campaign = started(world.root, "acme", deadline=deadline, on_deadline="revoke")
    items = items_of(world.root, campaign["id"])
    world.alice.post(
        f"/reviews/items/{items[('bob', 'editor')]['id']}/decision", json={"decision": "keep"}
    )
    wait_past(deadline)
    # What beat runs: the task, through the gateway's housekeeping port of this app.
    assert close_due_reviews() == 1
    assert allowed(server, "bob")
    assert not allowed(server, "carol")  # at once, in this process
    assert not allowed(server, "alice")
    assert allowed(server, "carol", "globex")
    after = items_of(world.root, campaign["id"])
    assert after[("carol", "viewer")]["decision"] == "revoke"
    assert after[("carol", "viewer")]["decided_by"]["name"] == "system (review deadline)"
    assert close_due_reviews() == 0
    assert audit_actions(server).count("grant.removed") == 2
    # Closed campaigns take no more decisions.
    assert_problem(
        world.root.post(
            f"/reviews/items/{after[('alice', 'admin')]['id']}/decision",
            json={"decision": "keep"},
        ),
        409,
        "conflict",
    )


def test_closing_by_hand_and_input_validation(server: LiveServer, world: World) -> None:
    assert_problem(start(world.root, "nowhere"), 404, "not-found")
    assert_problem(
        start(world.root, "acme", deadline=(utcnow() - timedelta(minutes=1)).isoformat()),
        422,
        "invalid-input",
        "future",
    )
    assert_problem(start(world.root, "acme", on_deadline="delete"), 422, "invalid-input")
    assert_problem(start(world.root, "acme", extra="x"), 422, "invalid-input")
    campaign = started(world.alice, "acme", on_deadline="revoke")
    item = items_of(world.alice, campaign["id"])[("bob", "editor")]["id"]
    assert_problem(
        world.alice.post(f"/reviews/items/{item}/decision", json={"decision": "maybe"}),
        422,
        "invalid-input",
    )
    closed = world.alice.post(f"/reviews/campaigns/{campaign['id']}/close")
    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "closed"
    # Alice's own admin grant was undecided too: revoked by the close she asked for, so
    # she has lost the right over the items she reviewed and sees none of them any more
    # (security finding 7); the super admin sees all three revoked.
    assert closed.json()["progress"]["total"] == 0
    assert world.alice.get(f"/reviews/campaigns/{campaign['id']}").status_code == 404
    everything = world.root.get(f"/reviews/campaigns/{campaign['id']}").json()
    assert everything["progress"]["revoked"] == 3
    assert not allowed(server, "alice", action="write")
    assert not allowed(server, "bob", action="write")
    assert_problem(world.root.post(f"/reviews/campaigns/{campaign['id']}/close"), 409, "conflict")
    assert (
        world.root.get("/reviews/campaigns", params={"status": "closed"}).json()[0]["id"]
        == (campaign["id"])
    )


def test_periodic_campaigns_start_when_due(server: LiveServer, world: World) -> None:
    env = cli_env(server.settings) | {
        "RINGFENCE_REVIEW_EVERY_DAYS": "90",
        "RINGFENCE_REVIEW_ON_DEADLINE": "revoke",
    }
    from gateway.cli.main import main

    first = CliRunner().invoke(main, ["review", "start", "--if-due"], env=env)
    assert first.exit_code == 0 and "started: 6 grant(s)" in first.output, first.output
    again = CliRunner().invoke(main, ["review", "start", "--if-due"], env=env)
    assert "No periodic review is due." in again.output
    [campaign] = world.root.get("/reviews/campaigns").json()
    assert campaign["periodic"] is True and campaign["on_deadline"] == "revoke"
    assert campaign["workspace"] == "*"
    off = run_cli(server.settings, "review", "start", "--if-due")
    assert "No periodic review is due." in off.output  # the default: never


def test_reviewers_are_only_people_who_could_revoke(server: LiveServer, world: World) -> None:
    # Alice (admin) cannot revoke an owner grant (owner gives permissions she lacks):
    # she is no reviewer of it.
    owner_id, _ = invite_and_accept(
        server, world.root, "olga@example.com", "Olga", [("acme", "owner")]
    )
    campaign = started(world.root, "acme")
    items = items_of(world.root, campaign["id"])
    assert items[("olga", "owner")]["reviewer_ids"] == [1]
    assert world.ids["alice"] in items[("bob", "editor")]["reviewer_ids"]
    assert owner_id in items[("alice", "admin")]["reviewer_ids"]
    assert_problem(
        world.alice.post(
            f"/reviews/items/{items[('olga', 'owner')]['id']}/decision",
            json={"decision": "revoke"},
        ),
        403,
        "forbidden",
    )
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with Session(db) as session:
            assert session.get(ReviewItem, items[("olga", "owner")]["id"]).decision == "undecided"
    finally:
        db.dispose()
