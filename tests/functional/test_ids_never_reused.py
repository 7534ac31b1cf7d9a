"""Ids are never reused (security finding 3): a removed person's id, a deleted workspace's
or invitation's, is never given to the next one, on SQLite as on PostgreSQL. Other
services hold ``user:<id>``, review assignments and the audit trail name people by id:
a reissued id would make them mean somebody else."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.db.models import Invitation, ReviewItem, ReviewItemReviewer, Workspace, utcnow
from gateway.db.session import make_engine
from tests.helpers import (
    LiveServer,
    assert_problem,
    create_workspaces,
    invite,
    invite_and_accept,
    onboard,
    run_cli,
)


def remove(root: httpx.Client, user_id: int) -> None:
    response = root.delete(f"/users/{user_id}")
    assert response.status_code == 200, response.text


def start_review(root: httpx.Client, workspace: str) -> dict[str, Any]:
    response = root.post(
        "/reviews/campaigns",
        json={
            "name": f"Review of {workspace}",
            "workspace": workspace,
            "deadline": (utcnow() + timedelta(hours=1)).isoformat(),
        },
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def doctor_is_clean(server: LiveServer) -> None:
    result = run_cli(server.settings, "doctor")
    assert result.exit_code == 0, result.output
    assert "grants and Casbin rules agree" in result.output


def test_a_removed_persons_id_is_never_given_to_the_next_person(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    ann = onboard(server, root, "ann@example.com", "Ann", [("acme", "viewer")])
    remove(root, ann)  # the newest id: the one SQLite's rowid would hand out again

    bea = onboard(server, root, "bea@example.com", "Bea", [("acme", "viewer")])

    assert bea > ann
    assert root.get(f"/users/{ann}").status_code == 404
    # The audit trail's filter by the removed person's id still finds only Ann.
    events = root.get("/audit", params={"target_type": "user", "target_id": str(ann)})
    assert events.status_code == 200, events.text
    assert {e["target_name"] for e in events.json()} == {"Ann"}
    doctor_is_clean(server)


def test_a_deleted_workspaces_id_is_never_reused(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme", "old")

    def workspace_id(slug: str) -> int:
        db = make_engine(server.settings.sqlalchemy_url)
        try:
            with Session(db) as session:
                found = session.scalar(select(Workspace.id).where(Workspace.slug == slug))
                assert found is not None
                return found
        finally:
            db.dispose()

    old = workspace_id("old")
    assert root.delete("/workspaces/old").status_code == 200
    create_workspaces(root, "new")

    assert workspace_id("new") > old


def test_a_deleted_invitations_id_is_never_reused(server: LiveServer) -> None:
    """Invitations are kept, not deleted, by the API; should one row ever go (by hand, by
    a cleanup), the next invitation still gets a new id, never the old link's."""
    root = server.admin()
    create_workspaces(root, "acme")
    first = invite(root, "cid@example.com", [("acme", "viewer")], "Cid")["id"]
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with Session(db) as session, session.begin():
            session.delete(session.get(Invitation, first))
    finally:
        db.dispose()

    second = invite(root, "dee@example.com", [("acme", "viewer")], "Dee")["id"]

    assert second > first


def test_a_removed_reviewers_assignments_go_to_nobody(server: LiveServer) -> None:
    """The leak: Alice reviewed acme's grants; she is removed and Mallory, an outsider
    with a viewer role in globex, signs up next. Mallory sees none of acme's review."""
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    alice, _ = invite_and_accept(server, root, "alice@example.com", "Alice", [("acme", "admin")])
    invite_and_accept(server, root, "bob@example.com", "Bob", [("acme", "editor")])
    campaign = start_review(root, "acme")
    items = root.get(f"/reviews/campaigns/{campaign['id']}/items").json()
    [bobs] = [i for i in items if i["user"]["email"] == "bob@example.com"]
    assert alice in bobs["reviewer_ids"]

    remove(root, alice)
    mallory_id, mallory = invite_and_accept(
        server, root, "mallory@example.com", "Mallory", [("globex", "viewer")]
    )

    assert mallory_id != alice
    assert mallory.get("/reviews/items").json() == []
    assert mallory.get("/reviews/campaigns").json() == []
    assert_problem(
        mallory.post(f"/reviews/items/{bobs['id']}/decision", json={"decision": "revoke"}),
        404,
        "not-found",
    )
    # Removing Alice removed her assignments: no row names her id any more.
    after = root.get(f"/reviews/campaigns/{campaign['id']}/items").json()
    assert all(alice not in i["reviewer_ids"] for i in after)
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with Session(db) as session:
            left = session.scalar(select(func.count()).where(ReviewItemReviewer.user_id == alice))
        assert left == 0
    finally:
        db.dispose()
    doctor_is_clean(server)


def bob_reviewed_removed_then_cleo(
    server: LiveServer, root: httpx.Client
) -> tuple[dict[str, Any], int]:
    """acme; Bob's editor grant under review (his item), Bob removed, then Cleo made
    editor of acme: (Bob's review item, Cleo's id)."""
    create_workspaces(root, "acme")
    bob = onboard(server, root, "bob@example.com", "Bob", [("acme", "editor")])
    campaign = start_review(root, "acme")
    [item] = [
        i
        for i in root.get(f"/reviews/campaigns/{campaign['id']}/items").json()
        if i["user"]["id"] == bob
    ]
    remove(root, bob)
    return item, onboard(server, root, "cleo@example.com", "Cleo", [("acme", "editor")])


def test_a_decision_on_a_removed_persons_item_touches_nobody_elses_grant(
    server: LiveServer,
) -> None:
    """Bob's editor grant is under review; Bob is removed and Cleo, the next person, is
    made editor of acme too. Revoking Bob's item must not revoke Cleo's grant."""
    root = server.admin()
    item, cleo = bob_reviewed_removed_then_cleo(server, root)

    decided = root.post(f"/reviews/items/{item['id']}/decision", json={"decision": "revoke"})

    assert decided.status_code == 200, decided.text
    cleo_now = root.get(f"/users/{cleo}").json()
    assert cleo_now["roles"] == {"acme": ["editor"]}
    doctor_is_clean(server)


def test_an_item_whose_holder_id_was_reissued_before_the_upgrade_revokes_nothing(
    server: LiveServer,
) -> None:
    """Data from before migration 0011: the item froze a removed holder's grant, and
    SQLite gave the holder's id to Cleo since. The item names Cleo's id, but Cleo was
    created after the campaign started, so she is not its holder: revoking it (or its
    deadline) leaves her grant alone."""
    root = server.admin()
    item, cleo = bob_reviewed_removed_then_cleo(server, root)
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with Session(db) as session, session.begin():
            frozen = session.get(ReviewItem, item["id"])
            assert frozen is not None
            frozen.user_id = cleo  # what the reused id amounted to
    finally:
        db.dispose()

    decided = root.post(f"/reviews/items/{item['id']}/decision", json={"decision": "revoke"})

    assert decided.status_code == 200, decided.text
    assert root.get(f"/users/{cleo}").json()["roles"] == {"acme": ["editor"]}
    doctor_is_clean(server)
