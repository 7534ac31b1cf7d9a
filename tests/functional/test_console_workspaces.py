"""Workspaces in the console, through real HTTP with two tenants: member counts, the
members page with its actions (deactivate, reactivate, take out of this workspace after a
confirmation) and deleting a workspace confirmed by typing its slug; another tenant's
workspace and members answer as unknown ones do."""

from __future__ import annotations

import re

from tests.console_support import sign_in
from tests.helpers import (
    ADMIN_EMAIL,
    PASSWORD,
    LiveServer,
    create_workspaces,
    invite,
    invite_and_accept,
)


def counts(page: str) -> dict[str, str]:
    return dict(
        re.findall(
            r'<tr id="workspace-([\w-]+)">.*?<td data-label="Members">([^<]*)</td>', page, re.S
        )
    )


def test_workspaces_members_and_deleting_in_the_console(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    invite_and_accept(server, root, "alice@example.com", "Alice", [("acme", "owner")])
    bob, _ = invite_and_accept(server, root, "bob@example.com", "Bob", [("acme", "editor")])
    carol, _ = invite_and_accept(
        server, root, "carol@example.com", "Carol", [("acme", "viewer"), ("globex", "viewer")]
    )
    invite_and_accept(server, root, "gina@example.com", "Gina", [("globex", "owner")])
    invite(root, "pat@example.com", [("acme", "viewer")], "Pat")

    alice = sign_in(server, "alice@example.com", PASSWORD)
    gina = sign_in(server, "gina@example.com", PASSWORD)
    everyone = sign_in(server, ADMIN_EMAIL, server.admin_password)
    # Members as the members page counts them (the pending invitee too).
    assert counts(alice.get("/console/workspaces").text) == {"acme": "4"}
    assert counts(everyone.get("/console/workspaces").text) == {"acme": "4", "globex": "2"}
    assert counts(gina.get("/console/workspaces").text) == {"globex": "2"}

    # -- the members page and its actions ---------------------------------------------------
    members = alice.get("/console/workspaces/acme").text
    row = re.search(rf'<tr id="member-{bob}">.*?</tr>', members, re.S)
    assert row is not None
    for action in ("Manage roles", "Deactivate", "Take out…"):
        assert action in row.group(0)
    deactivated = alice.post(f"/console/workspaces/acme/members/{bob}/deactivate")
    assert deactivated.status_code == 200 and "Deactivated Bob" in deactivated.text
    assert root.get(f"/users/{bob}").json()["status"] == "deactivated"
    reactivated = alice.post(f"/console/workspaces/acme/members/{bob}/reactivate")
    assert "Reactivated Bob" in reactivated.text
    assert root.get(f"/users/{bob}").json()["status"] == "active"

    confirm = alice.get(f"/console/workspaces/acme/members/{carol}/take-out").text
    assert "Take Carol out of acme?" in confirm and "loses viewer in Acme" in confirm
    assert "globex" not in confirm  # her other workspace is not Alice's to know
    out = alice.post(f"/console/workspaces/acme/members/{carol}/take-out")
    assert "Took Carol out of acme (they held viewer there)" in out.text
    assert root.get(f"/users/{carol}").json()["roles"] == {"globex": ["viewer"]}

    # -- another tenant: acme's members and deletion are unknown to Gina ---------------------
    for response in (
        gina.get("/console/workspaces/acme/delete"),
        gina.post("/console/workspaces/acme/delete", {"confirm": "acme"}),
        gina.post(f"/console/workspaces/acme/members/{bob}/deactivate"),
        gina.get(f"/console/workspaces/acme/members/{bob}/take-out"),
        gina.post(f"/console/workspaces/acme/members/{bob}/take-out"),
    ):
        assert response.status_code == 404, (response.request.url, response.text[:300])
    unknown = gina.get("/console/workspaces/nowhere/delete")
    hidden = gina.get("/console/workspaces/acme/delete")
    assert hidden.text.replace("acme", "X") == unknown.text.replace("nowhere", "X")
    # Her own workspace is hers to change: Carol's globex role goes, acme is not touched.
    assert gina.post(f"/console/workspaces/globex/members/{carol}/take-out").status_code == 200
    assert root.get(f"/users/{carol}").json()["roles"] == {}
    assert root.get("/workspaces/acme").status_code == 200

    # -- deleting: only with the slug typed, only by who may ---------------------------------
    bob_console = sign_in(server, "bob@example.com", PASSWORD)
    assert "Delete…" not in bob_console.get("/console/workspaces").text
    assert bob_console.get("/console/workspaces/acme/delete").status_code == 403
    assert (
        bob_console.post("/console/workspaces/acme/delete", {"confirm": "acme"}).status_code == 403
    )
    page = alice.get("/console/workspaces/acme/delete").text
    assert "Type <strong>acme</strong> to confirm" in page and "(3 members)" in page
    wrong = alice.post("/console/workspaces/acme/delete", {"confirm": "acm"})
    assert wrong.status_code == 422 and 'id="confirm-slug-error"' in wrong.text
    assert root.get("/workspaces/acme").status_code == 200
    deleted = alice.post("/console/workspaces/acme/delete", {"confirm": "acme"})
    assert deleted.status_code == 200, deleted.text
    assert "Deleted workspace Acme (acme)" in deleted.text
    assert root.get("/workspaces/acme").status_code == 404
    assert root.get(f"/users/{bob}").json()["roles"] == {}
    for console in (alice, gina, everyone, bob_console):
        console.close()


def test_a_workspace_s_two_step_sign_in_policy_in_the_console(server: LiveServer) -> None:
    """Owners (settings:write) set who of the members must use a second factor, as the
    API's PUT /workspaces/{slug}/mfa-policy does; others see it; another tenant's owner
    reaches nothing of it."""
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    invite_and_accept(server, root, "alice@example.com", "Alice", [("acme", "owner")])
    invite_and_accept(server, root, "bob@example.com", "Bob", [("acme", "admin")])
    invite_and_accept(server, root, "gina@example.com", "Gina", [("globex", "owner")])
    alice = sign_in(server, "alice@example.com", PASSWORD)
    bob = sign_in(server, "bob@example.com", PASSWORD)
    gina = sign_in(server, "gina@example.com", PASSWORD)

    page = alice.get("/console/workspaces/acme").text
    assert "Two-step sign-in" in page and "Who of the members of Acme" in page
    assert 'id="mfa-off" name="required" value="off" checked' in page

    saved = alice.post("/console/workspaces/acme/mfa-policy", {"required": "admins"})
    assert saved.status_code == 200, saved.text
    assert "Two-step sign-in in acme: Admins." in saved.text
    assert 'value="admins" checked' in saved.text
    assert root.get("/workspaces/acme/mfa-policy").json()["required"] == "admins"
    [event] = root.get("/audit", params={"action": "workspace.mfa_policy_changed"}).json()
    assert event["before"] == {"mfa_required": "off"}
    assert event["after"] == {"mfa_required": "admins"}

    # A value not offered: a 422 that says so, and nothing changes.
    wrong = alice.post("/console/workspaces/acme/mfa-policy", {"required": "sometimes"})
    assert wrong.status_code == 422 and "Use off, admins or everyone" in wrong.text
    assert root.get("/workspaces/acme/mfa-policy").json()["required"] == "admins"

    # An admin without settings:write sees the policy, has no form, and may not post one.
    shown = bob.get("/console/workspaces/acme").text
    assert "Two-step sign-in" in shown and 'name="required"' not in shown
    assert bob.post("/console/workspaces/acme/mfa-policy", {"required": "off"}).status_code == 403

    # Another tenant's owner: acme's policy is as unknown as a workspace that does not exist.
    hidden = gina.post("/console/workspaces/acme/mfa-policy", {"required": "off"})
    unknown = gina.post("/console/workspaces/nowhere/mfa-policy", {"required": "off"})
    assert hidden.status_code == unknown.status_code == 404
    assert root.get("/workspaces/acme/mfa-policy").json()["required"] == "admins"
    own = gina.post("/console/workspaces/globex/mfa-policy", {"required": "everyone"})
    assert own.status_code == 200 and "Two-step sign-in in globex: Everyone" in own.text
    assert len(root.get("/audit", params={"action": "workspace.mfa_policy_changed"}).json()) == 2
