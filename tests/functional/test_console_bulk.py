"""Bulk work in the console, through real HTTP with two tenants: several people ticked,
one confirmation listing everyone affected (and why it cannot be done to anyone it
cannot), then one change and one audit event per person, or nothing at all."""

from __future__ import annotations

from tests.console_support import sign_in
from tests.functional.test_access_reviews import audit_actions
from tests.helpers import PASSWORD, LiveServer, create_workspaces, invite_and_accept


def test_bulk_changes_are_confirmed_for_everyone_and_done_to_all_or_none(
    server: LiveServer,
) -> None:
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    alice, _ = invite_and_accept(server, root, "alice@example.com", "Alice", [("acme", "admin")])
    bob, _ = invite_and_accept(server, root, "bob@example.com", "Bob", [("acme", "editor")])
    carol, _ = invite_and_accept(server, root, "carol@example.com", "Carol", [("acme", "viewer")])
    dave, _ = invite_and_accept(server, root, "dave@example.com", "Dave", [("globex", "viewer")])
    console = sign_in(server, "alice@example.com", PASSWORD)

    def status(user_id: int) -> str:
        return str(root.get(f"/users/{user_id}").json()["status"])

    users = console.get("/console/users").text
    assert 'form="bulk-form"' in users and f'id="tick-{bob}"' in users
    assert f'id="tick-{alice}"' not in users  # nobody ticks themselves

    # -- one confirmation listing everyone, then one change (and event) per person ------------
    confirm = console.get(
        "/console/users/bulk", params={"action": "deactivate", "user": [bob, carol]}
    )
    assert confirm.status_code == 200, confirm.text
    assert "Deactivate 2 people?" in confirm.text
    assert "bob@example.com" in confirm.text and "carol@example.com" in confirm.text
    before = audit_actions(server).count("user.deactivated")
    done = console.post("/console/users/bulk", {"action": "deactivate", "user": [bob, carol]})
    assert done.status_code == 200, done.text
    assert "Deactivated 2: Bob, Carol." in done.text
    assert status(bob) == status(carol) == "deactivated"
    assert audit_actions(server).count("user.deactivated") == before + 2
    console.post("/console/users/bulk", {"action": "reactivate", "user": [bob, carol]})
    assert status(bob) == status(carol) == "active"

    # -- roles: given to each, then taken --------------------------------------------------
    give = {"action": "add-role", "workspace": "acme", "role": "viewer", "user": [bob]}
    assert "Gave viewer in acme to 1: Bob." in console.post("/console/users/bulk", give).text
    assert root.get(f"/users/{bob}").json()["roles"] == {"acme": ["editor", "viewer"]}
    # Carol holds it already: refused for everyone, Bob included; nothing changes.
    both = {**give, "role": "viewer", "user": [bob, carol]}
    take = {**both, "action": "remove-role"}
    refused = console.post("/console/users/bulk", {**take, "user": [bob, carol, alice]})
    assert refused.status_code == 409
    assert "Cannot: not to yourself" in refused.text
    assert root.get(f"/users/{bob}").json()["roles"] == {"acme": ["editor", "viewer"]}
    assert (
        "Took viewer in acme from 2: Bob, Carol." in console.post("/console/users/bulk", take).text
    )
    assert root.get(f"/users/{carol}").json()["roles"] == {}
    # An admin may not give what they do not hold (owner), nor remove people.
    owner = console.get("/console/users/bulk", params={**give, "role": "owner"}).text
    assert "Cannot: you may not give or take owner in acme" in owner
    assert "bulk_apply" not in owner and 'action="/console/users/bulk"' not in owner
    remove = console.post("/console/users/bulk", {"action": "remove", "user": [bob]})
    assert remove.status_code == 409 and status(bob) == "active"

    # -- another tenant's person: the 404 of an unknown one, and nothing done ---------------
    hidden = console.get("/console/users/bulk", params={"action": "deactivate", "user": [dave]})
    unknown = console.get("/console/users/bulk", params={"action": "deactivate", "user": [99999]})
    assert f"No user {dave}" in hidden.text and "dave@example.com" not in hidden.text
    assert hidden.text.replace(f"user {dave}", "user N").replace(f"#{dave}<", "#N<") == (
        unknown.text.replace("user 99999", "user N").replace("#99999<", "#N<")
    )
    mixed = console.post("/console/users/bulk", {"action": "deactivate", "user": [bob, dave]})
    assert mixed.status_code == 404
    assert status(bob) == "active" and status(dave) == "active"
    assert (
        console.get("/console/users/bulk", params={"action": "explode", "user": [bob]}).status_code
        == 422
    )
    console.close()
