"""The admin API through HTTP: workspaces, people and their filters, invitations, grants,
workspace isolation, and the OpenAPI description."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any

import httpx

from tests.helpers import (
    ADMIN_EMAIL,
    PASSWORD,
    LiveServer,
    accept_invitation,
    accept_token,
    allowed,
    create_workspaces,
    invite,
    invite_and_accept,
    onboard,
    outbox_messages,
    set_invitation_expiry,
    user_id_of,
)

# -- helpers ----------------------------------------------------------------------------


def last_token_for(server: LiveServer, email: str) -> str:
    """The accept token of the newest email sent to ``email``."""
    mine = [m for m in outbox_messages(server.settings) if m["To"].addresses[0].addr_spec == email]
    assert mine, f"no email to {email}"
    return accept_token(mine[-1])


def emails(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [u["email"] for u in response.json()]


def pagination(response: httpx.Response) -> dict[str, Any]:
    return json.loads(response.headers["X-Pagination"])  # type: ignore[no-any-return]


def audit(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/audit", params={"page_size": 100, **params})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


# -- workspaces -------------------------------------------------------------------------


def test_workspace_lifecycle(server: LiveServer) -> None:
    admin = server.admin()
    response = admin.post("/workspaces", json={"slug": "acme", "name": "Acme Inc."})
    assert response.status_code == 201, response.text
    assert response.json()["slug"] == "acme" and response.json()["name"] == "Acme Inc."
    assert datetime.fromisoformat(response.json()["created_at"])
    create_workspaces(admin, "globex", "initech")

    listed = admin.get("/workspaces")
    assert [w["slug"] for w in listed.json()] == ["acme", "globex", "initech"]
    assert pagination(listed)["total"] == 3
    assert admin.get("/workspaces/acme").json()["name"] == "Acme Inc."

    response = admin.patch("/workspaces/acme", json={"name": "Acme Corporation"})
    assert response.status_code == 200, response.text
    assert response.json() == {**admin.get("/workspaces/acme").json(), "name": "Acme Corporation"}
    [renamed] = audit(admin, action="workspace.renamed")
    assert renamed["workspace"] == "acme"
    assert (
        renamed["before"]["name"] == "Acme Inc." and renamed["after"]["name"] == "Acme Corporation"
    )

    # People with roles in acme, and one invited into acme and globex.
    john_id = onboard(
        server, admin, "john@example.com", "John", [("acme", "editor"), ("globex", "viewer")]
    )
    pending = invite(admin, "paula@example.com", [("acme", "viewer"), ("initech", "viewer")])
    assert allowed(server, "john@example.com", "acme", action="write")

    response = admin.delete("/workspaces/acme")
    assert response.status_code == 200, response.text
    assert isinstance(response.json()["revision"], int)
    assert admin.get("/workspaces/acme").status_code == 404
    assert [w["slug"] for w in admin.get("/workspaces").json()] == ["globex", "initech"]
    [deleted] = audit(admin, action="workspace.deleted")
    assert deleted["workspace"] == "acme" and deleted["before"]["grants"] == 1

    # Its grants are gone, checks deny; other workspaces are untouched.
    assert admin.get(f"/users/{john_id}").json()["roles"] == {"globex": ["viewer"]}
    assert not allowed(server, "john@example.com", "acme")
    assert allowed(server, "john@example.com", "globex")
    invitation = admin.get(f"/invitations/{pending['id']}").json()
    assert invitation["roles"] == [{"workspace": "initech", "role": "viewer"}]

    # A new workspace with the same slug starts empty: nothing comes back to life.
    create_workspaces(admin, "acme")
    assert not allowed(server, "john@example.com", "acme")
    assert emails(admin.get("/users", params={"workspace": "acme"})) == []
    assert admin.delete("/workspaces/nowhere").status_code == 404


# -- people -----------------------------------------------------------------------------


def test_users_pagination_and_filters(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme", "globex")
    onboard(server, admin, "anna@example.com", "Anna Smith", [("acme", "editor")])
    bert_id = onboard(server, admin, "bert@example.org", "Bert Jones", [("globex", "editor")])
    invite(admin, "carl@example.com", [("acme", "editor")], "Carl Smithers")
    invite(admin, "dora@example.com", [("globex", "viewer")], "Dora Brown")
    invite(admin, "emil@example.com", [("acme", "viewer"), ("globex", "admin")], "Emil 100%")
    assert admin.post(f"/users/{bert_id}/deactivate").status_code == 200
    everyone = sorted(
        [
            ADMIN_EMAIL,
            "anna@example.com",
            "bert@example.org",
            "carl@example.com",
            "dora@example.com",
            "emil@example.com",
        ]
    )

    # Pages of 4, by email; X-Pagination says where we are.
    first = admin.get("/users", params={"page_size": 4})
    assert pagination(first) == {
        "total": 6,
        "total_pages": 2,
        "first_page": 1,
        "last_page": 2,
        "page": 1,
        "next_page": 2,
    }
    second = admin.get("/users", params={"page_size": 4, "page": 2})
    assert pagination(second)["page"] == 2 and pagination(second)["previous_page"] == 1
    assert "next_page" not in pagination(second)
    assert emails(first) + emails(second) == everyone
    beyond = admin.get("/users", params={"page_size": 4, "page": 3})
    assert beyond.status_code == 200 and beyond.json() == []

    def users(**params: str) -> list[str]:
        return emails(admin.get("/users", params=params))

    assert users(status="pending") == ["carl@example.com", "dora@example.com", "emil@example.com"]
    assert users(status="active") == [ADMIN_EMAIL, "anna@example.com"]
    assert users(status="deactivated") == ["bert@example.org"]
    # A workspace's people: grants there, or a pending invitation into it.
    assert users(workspace="acme") == ["anna@example.com", "carl@example.com", "emil@example.com"]
    assert users(workspace="globex") == ["bert@example.org", "dora@example.com", "emil@example.com"]
    assert users(workspace="globex", status="pending") == ["dora@example.com", "emil@example.com"]
    assert users(workspace="acme", role="editor") == ["anna@example.com", "carl@example.com"]
    assert users(workspace="globex", role="editor") == ["bert@example.org"]
    # A role anywhere matches what the listing shows as the person's roles, invited ones too.
    assert users(role="editor") == ["anna@example.com", "bert@example.org", "carl@example.com"]
    assert users(role="admin") == ["emil@example.com"]
    assert users(role="superadmin") == [ADMIN_EMAIL]
    # Search: name or email contains, case-insensitively; wildcards are plain text.
    assert users(q="SMITH") == ["anna@example.com", "carl@example.com"]
    assert users(q="example.org") == ["bert@example.org"]
    assert users(q="100%") == ["emil@example.com"]
    assert users(q="%") == ["emil@example.com"]
    assert users(q="_") == []
    assert users(q="smith", status="active") == ["anna@example.com"]
    assert users(workspace="initech") == []

    filtered = admin.get("/users", params={"workspace": "acme", "page_size": 2})
    assert pagination(filtered)["total"] == 3 and len(filtered.json()) == 2


def test_user_detail_shows_roles_per_workspace_and_invitation_status(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme", "globex")
    invitation = invite(
        admin, "john@example.com", [("acme", "editor"), ("acme", "viewer"), ("globex", "admin")]
    )
    assert invitation["user_id"] is None  # until accepted
    john_id = user_id_of(admin, "john@example.com")

    john = admin.get(f"/users/{john_id}").json()
    assert john["email"] == "john@example.com" and john["status"] == "pending"
    assert john["roles"] == {"acme": ["editor", "viewer"], "globex": ["admin"]}
    assert john["invitation"]["id"] == invitation["id"]
    assert john["invitation"]["status"] == "sent"  # delivered to the outbox folder
    assert john["last_login_at"] is None

    assert accept_invitation(server, last_token_for(server, "john@example.com")).status_code == 200
    server.login("john@example.com", PASSWORD)
    john = admin.get(f"/users/{john_id}").json()
    assert john["status"] == "active"
    assert john["roles"] == {"acme": ["editor", "viewer"], "globex": ["admin"]}
    assert john["invitation"]["status"] == "accepted"
    assert john["last_login_at"] is not None

    admin.put(f"/users/{john_id}/workspaces/acme/roles", json={"roles": []})
    assert admin.get(f"/users/{john_id}").json()["roles"] == {"globex": ["admin"]}

    revoked = invite(admin, "mary@example.com", [("acme", "viewer")])
    assert admin.post(f"/invitations/{revoked['id']}/revoke").status_code == 200
    mary = admin.get(f"/users/{user_id_of(admin, 'mary@example.com')}").json()
    assert mary["status"] == "pending" and mary["invitation"]["status"] == "revoked"


# -- invitations ------------------------------------------------------------------------


def test_invitations_by_status_resend_and_revoke(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    ids = {
        who: invite(admin, f"{who}@example.com", [("acme", "viewer")])["id"]
        for who in ("accepted", "revoked", "expired", "pending")
    }
    tokens = {who: last_token_for(server, f"{who}@example.com") for who in ids}
    assert accept_invitation(server, tokens["accepted"]).status_code == 200
    revoked = admin.post(f"/invitations/{ids['revoked']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    set_invitation_expiry(server, ids["expired"], timedelta(seconds=-1))

    def listed(status: str | None = None) -> list[int]:
        response = admin.get("/invitations", params={"status": status} if status else {})
        assert response.status_code == 200, response.text
        return [i["id"] for i in response.json()]

    # "pending" was delivered at once (the outbox folder), so it is listed as sent.
    shown = {"sent": "pending", "accepted": "accepted", "revoked": "revoked", "expired": "expired"}
    for status, who in shown.items():
        assert listed(status) == [ids[who]], status
        assert admin.get(f"/invitations/{ids[who]}").json()["status"] == status
    assert listed("pending") == []  # nothing is waiting to be sent
    assert listed() == sorted(ids.values(), reverse=True)  # newest first
    assert admin.get(f"/invitations/{ids['accepted']}").json()["accepted_at"]

    # Revoking: the link stops working; there is nothing left to revoke after that.
    assert accept_invitation(server, tokens["revoked"]).status_code == 410
    for who in ("revoked", "accepted", "expired"):
        assert admin.post(f"/invitations/{ids[who]}/revoke").status_code == 409, who

    # Resending: a new email with a new link and a fresh expiry; the old link is dead.
    old = admin.get(f"/invitations/{ids['pending']}").json()
    sent_before = len(outbox_messages(server.settings))
    response = admin.post(f"/invitations/{ids['pending']}/resend")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "sent"  # delivered again, to the outbox folder
    assert response.json()["expires_at"] >= old["expires_at"]
    [email] = outbox_messages(server.settings)[sent_before:]
    assert email["To"].addresses[0].addr_spec == "pending@example.com"
    new_token = accept_token(email)
    assert new_token != tokens["pending"]
    assert accept_invitation(server, tokens["pending"]).status_code == 410
    assert accept_invitation(server, new_token).status_code == 200
    assert listed("accepted") == sorted([ids["pending"], ids["accepted"]], reverse=True)

    # An expired invitation can be sent again and is live (and delivered) once more.
    response = admin.post(f"/invitations/{ids['expired']}/resend")
    assert response.status_code == 200, response.text
    assert listed("sent") == [ids["expired"]] and listed("expired") == []
    assert accept_invitation(server, tokens["expired"]).status_code == 410
    assert (
        accept_invitation(server, last_token_for(server, "expired@example.com")).status_code == 200
    )

    for who in ("revoked", "accepted"):
        assert admin.post(f"/invitations/{ids[who]}/resend").status_code == 409, who
    actions = [e["action"] for e in audit(admin, target_type="invitation")]
    assert actions.count("invitation.resent") == 2 and actions.count("invitation.revoked") == 1


# -- grants -----------------------------------------------------------------------------


def test_grant_endpoints_change_decisions_and_are_audited(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme", "globex")
    john_id = onboard(server, admin, "john@example.com", "John", [("acme", "viewer")])
    assert not allowed(server, "john@example.com", "globex")

    response = admin.post(
        f"/users/{john_id}/grants", json={"workspace": "globex", "role": "editor"}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["user"]["roles"] == {"acme": ["viewer"], "globex": ["editor"]}
    assert allowed(server, "john@example.com", "globex", action="write")
    [added] = audit(admin, action="grant.added")
    assert added["target_type"] == "user" and added["target_id"] == str(john_id)
    assert added["workspace"] == "globex" and added["revision"] == body["revision"]
    assert added["before"] == {"roles": []} and added["after"] == {"roles": ["editor"]}
    assert added["actor_name"].endswith(f"<{ADMIN_EMAIL}>")

    response = admin.post(f"/users/{john_id}/grants", json={"workspace": "acme", "role": "admin"})
    assert response.json()["user"]["roles"]["acme"] == ["admin", "viewer"]
    again = admin.post(f"/users/{john_id}/grants", json={"workspace": "acme", "role": "admin"})
    assert again.status_code == 409

    response = admin.delete(f"/users/{john_id}/grants/globex/editor")
    assert response.status_code == 200, response.text
    assert response.json()["user"]["roles"] == {"acme": ["admin", "viewer"]}
    assert response.json()["revision"] > body["revision"]
    assert not allowed(server, "john@example.com", "globex")
    [removed] = audit(admin, action="grant.removed")
    assert removed["before"] == {"roles": ["editor"]} and removed["after"] == {"roles": []}
    assert admin.delete(f"/users/{john_id}/grants/globex/editor").status_code == 404

    # Pending people get their roles through the invitation, not the grants API.
    invite(admin, "paula@example.com", [("acme", "viewer")])
    response = admin.post(
        f"/users/{user_id_of(admin, 'paula@example.com')}/grants",
        json={"workspace": "acme", "role": "editor"},
    )
    assert response.status_code == 409
    assert [e["action"] for e in audit(admin, target_type="user", target_id=john_id)][:3] == [
        "grant.removed",
        "grant.added",
        "grant.added",
    ]


# -- workspace isolation ----------------------------------------------------------------


def test_a_workspace_admin_sees_and_changes_only_their_workspace(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme", "globex")
    adam_id, adam = invite_and_accept(
        server, admin, "adam@example.com", "Adam", [("acme", "admin")]
    )
    eve_id = onboard(server, admin, "eve@example.com", "Eve", [("acme", "editor")])
    gina_id = onboard(server, admin, "gina@example.com", "Gina", [("globex", "owner")])
    bob_id = onboard(
        server, admin, "bob@example.com", "Bob", [("acme", "viewer"), ("globex", "viewer")]
    )
    paul = invite(admin, "paul@example.com", [("acme", "viewer")])
    quinn = invite(admin, "quinn@example.com", [("globex", "viewer")])
    quinn_id = user_id_of(admin, "quinn@example.com")
    admin.patch("/workspaces/globex", json={"name": "Globex Corporation"})
    # (Gina stays an owner: a workspace keeps its last one.)
    changed = admin.put(
        f"/users/{gina_id}/workspaces/globex/roles", json={"roles": ["admin", "owner"]}
    )
    assert changed.status_code == 200, changed.text

    acme_people = ["adam@example.com", "bob@example.com", "eve@example.com", "paul@example.com"]
    seen = [e for e in emails(adam.get("/users", params={"page_size": 100})) if e != ADMIN_EMAIL]
    assert seen == acme_people
    assert emails(adam.get("/users", params={"workspace": "globex"})) == []
    assert emails(adam.get("/users", params={"q": "gina"})) == []
    assert [w["slug"] for w in adam.get("/workspaces").json()] == ["acme"]
    assert adam.get("/workspaces/globex").status_code == 404
    for user_id in (gina_id, quinn_id):
        assert adam.get(f"/users/{user_id}").status_code == 404
        assert adam.post(f"/users/{user_id}/deactivate").status_code == 404
    assert adam.get(f"/users/{eve_id}").status_code == 200
    # A person in both workspaces shows only their acme roles to an acme admin.
    assert adam.get(f"/users/{bob_id}").json()["roles"] == {"acme": ["viewer"]}
    [bob] = [u for u in adam.get("/users").json() if u["id"] == bob_id]
    assert bob["roles"] == {"acme": ["viewer"]}
    assert emails(adam.get("/users", params={"role": "viewer"})) == [
        "bob@example.com",
        "paul@example.com",
    ]
    assert [i["id"] for i in adam.get("/invitations", params={"status": "sent"}).json()] == [
        paul["id"]
    ]
    assert adam.get(f"/invitations/{quinn['id']}").status_code == 404

    adams_events = audit(adam)
    assert adams_events and {e["workspace"] for e in adams_events} == {"acme"}
    assert {e["workspace"] for e in audit(admin)} >= {"acme", "globex", None}
    assert audit(adam, workspace="globex") == []
    assert audit(admin, target_type="user", target_id=gina_id)  # there is something to hide
    assert audit(adam, target_type="user", target_id=gina_id) == []

    # Within acme Adam manages people, but not himself.
    response = adam.put(f"/users/{eve_id}/workspaces/acme/roles", json={"roles": ["viewer"]})
    assert response.status_code == 200, response.text
    for response in (
        adam.put(f"/users/{adam_id}/workspaces/acme/roles", json={"roles": ["owner"]}),
        adam.post(f"/users/{adam_id}/grants", json={"workspace": "acme", "role": "owner"}),
        adam.delete(f"/users/{adam_id}/grants/acme/admin"),
    ):
        assert response.status_code == 403, response.text
        assert "own roles" in response.json()["detail"]
    assert admin.get(f"/users/{adam_id}").json()["roles"] == {"acme": ["admin"]}
    assert allowed(server, "eve@example.com", "acme") and not allowed(
        server, "eve@example.com", "acme", action="write"
    )


# -- the API description ----------------------------------------------------------------


def test_openapi_and_interactive_docs(server: LiveServer) -> None:
    with server.client() as anonymous:
        spec = anonymous.get("/openapi.json")
        docs = anonymous.get("/docs")
        assert spec.status_code == 200 and spec.headers["Content-Type"].startswith(
            "application/json"
        )
        assert docs.status_code == 200 and docs.headers["Content-Type"].startswith("text/html")
        # The docs page loads Swagger UI from this server, not from a CDN.
        scripts = re.findall(r'src="([^"]+)"', docs.text)
        assert scripts
        for src in scripts:
            assert src.startswith("/docs/static/"), src
            assert anonymous.get(src).status_code == 200, src

    document = spec.json()
    assert document["openapi"].startswith("3.1")
    assert document["info"]["title"] == "Ringfence"
    for path in (
        "/workspaces",
        "/workspaces/{slug}",
        "/users",
        "/users/{user_id}",
        "/users/{user_id}/grants",
        "/invitations",
        "/invitations/accept",
        "/audit",
        "/v1/check",
        "/access/v1/evaluation",
    ):
        assert path in document["paths"], path
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    [user_id] = [
        p for p in document["paths"]["/users/{user_id}"]["parameters"] if p["name"] == "user_id"
    ]
    assert user_id["schema"]["type"] == "integer"
