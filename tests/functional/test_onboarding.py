"""The acceptance scenario of the core issue, driven through HTTP exactly as the README's
walkthrough does it: log in, create workspaces, invite, accept, check, change roles,
deactivate, reactivate, remove, and read it all back from the audit trail."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.helpers import ADMIN_EMAIL, LiveServer, accept_token, outbox_messages, post_check

JOHN = "john@example.com"
JOHN_PASSWORD = "correct horse battery staple"


def check(server: LiveServer, workspace: str, action: str = "write") -> dict[str, Any]:
    """``POST /v1/check`` whether John may ``action`` documents in ``workspace``."""
    with server.client() as client:
        response = post_check(client, JOHN, workspace, "documents", action)
    return response.json()  # type: ignore[no-any-return]


def test_newcomer_walkthrough(server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ringfence")
    admin = server.admin()

    # 2. Workspaces and one invitation with a role in each.
    for slug, name in (("acme", "Acme Inc."), ("globex", "Globex Corporation")):
        response = admin.post("/workspaces", json={"slug": slug, "name": name})
        assert response.status_code == 201, response.text
    response = admin.post(
        "/invitations",
        json={
            "email": "John@Example.com",
            "name": "John Smith",
            "roles": [
                {"workspace": "acme", "role": "editor"},
                {"workspace": "globex", "role": "viewer"},
            ],
        },
    )
    assert response.status_code == 201, response.text
    invitation = response.json()
    assert invitation["email"] == JOHN
    # The embedded default delivers at once to the outbox folder: already sent.
    assert invitation["status"] == "sent"
    assert "token" not in invitation and "token_hash" not in invitation

    # The embedded default delivers at once to the outbox folder, so the invitation
    # that was pending when created is listed as sent, with where it went.
    sent = admin.get("/invitations", params={"status": "sent"}).json()
    assert [i["id"] for i in sent] == [invitation["id"]]
    assert sent[0]["delivery"]["status"] == "sent"
    assert ".eml" in sent[0]["delivery"]["detail"]
    waiting = admin.get("/invitations", params={"older_than_days": 0}).json()
    assert [i["id"] for i in waiting] == [invitation["id"]]

    [email] = outbox_messages(server.settings)
    assert email["To"].addresses[0].addr_spec == JOHN
    text = email.get_body(preferencelist=("plain",)).get_content()
    html = email.get_body(preferencelist=("html",)).get_content()
    token = accept_token(email)
    for body in (text, html):
        assert f"/invite/{token}" in body
        assert "Acme Inc." in body and "editor" in body
        assert "Globex Corporation" in body and "viewer" in body
    assert f"/invite/{token}" in caplog.text  # the link is logged, too

    users = admin.get("/users").json()
    john = next(u for u in users if u["email"] == JOHN)
    assert john["status"] == "pending"
    assert john["roles"] == {"acme": ["editor"], "globex": ["viewer"]}
    assert john["invitation"]["status"] == "sent"
    assert check(server, "acme")["allowed"] is False  # not before accepting

    # 3. John accepts and can log in.
    with server.client() as anonymous:
        response = anonymous.post(
            "/invitations/accept", json={"token": token, "password": JOHN_PASSWORD}
        )
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "active"
        again = anonymous.post(
            "/invitations/accept", json={"token": token, "password": JOHN_PASSWORD}
        )
        assert again.status_code == 410  # single use
    john_client = server.login(JOHN, JOHN_PASSWORD)
    assert john_client.get(f"/users/{john['id']}").status_code in (200, 403, 404)

    # 4. Decisions follow the roles, and carry the policy revision.
    decision = check(server, "acme")
    assert decision["allowed"] is True
    assert isinstance(decision["revision"], int) and decision["revision"] > 0
    assert check(server, "globex")["allowed"] is False
    assert check(server, "globex", action="read")["allowed"] is True

    # 5. Replace John's role in acme: the very next check denies.
    response = admin.put(f"/users/{john['id']}/workspaces/acme/roles", json={"roles": ["viewer"]})
    assert response.status_code == 200, response.text
    assert response.json()["user"]["roles"]["acme"] == ["viewer"]
    after_change = check(server, "acme")
    assert after_change["allowed"] is False
    assert after_change["revision"] >= response.json()["revision"]
    response = admin.put(f"/users/{john['id']}/workspaces/acme/roles", json={"roles": ["editor"]})
    assert response.status_code == 200
    assert check(server, "acme")["allowed"] is True

    # 6. Deactivation: every check denies, login and existing tokens stop, grants stay.
    assert john_client.get("/workspaces").status_code == 200
    response = admin.post(f"/users/{john['id']}/deactivate")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "deactivated"
    assert response.json()["roles"] == {"acme": ["editor"], "globex": ["viewer"]}
    assert check(server, "acme")["allowed"] is False
    assert check(server, "globex", action="read")["allowed"] is False
    assert john_client.get("/workspaces").status_code == 401
    with server.client() as anonymous:
        response = anonymous.post("/auth/login", json={"email": JOHN, "password": JOHN_PASSWORD})
        assert response.status_code == 401

    response = admin.post(f"/users/{john['id']}/reactivate")
    assert response.status_code == 200, response.text
    assert check(server, "acme")["allowed"] is True
    assert john_client.get("/workspaces").status_code == 401  # old tokens stay dead
    john_client = server.login(JOHN, JOHN_PASSWORD)

    # Removal deletes the account and its grants; the audit history stays.
    response = admin.delete(f"/users/{john['id']}")
    assert response.status_code == 200, response.text
    assert admin.get(f"/users/{john['id']}").status_code == 404
    assert check(server, "acme")["allowed"] is False
    assert john_client.get("/workspaces").status_code == 401

    # 7. The audit trail names each change: actor, action, target, workspace, before/after.
    events = admin.get("/audit", params={"page_size": 100}).json()
    actions = [e["action"] for e in reversed(events)]
    for expected in (
        "workspace.created",
        "invitation.created",
        "invitation.accepted",
        "grant.replaced",
        "user.deactivated",
        "user.reactivated",
        "user.removed",
    ):
        assert expected in actions, actions
    replaced = next(e for e in events if e["action"] == "grant.replaced")
    assert replaced["workspace"] == "acme"
    assert replaced["actor_name"].endswith(f"<{ADMIN_EMAIL}>")
    assert replaced["target_type"] == "user" and replaced["target_id"] == str(john["id"])
    assert replaced["target_name"] == "John Smith"
    assert {replaced["before"]["roles"][0], replaced["after"]["roles"][0]} == {"editor", "viewer"}
    assert replaced["at"]
    removed = next(e for e in events if e["action"] == "user.removed")
    assert removed["before"]["email"] == JOHN and removed["after"] is None
    history = admin.get("/audit", params={"target_type": "user", "target_id": john["id"]}).json()
    assert {e["action"] for e in history} >= {"user.deactivated", "user.removed", "grant.replaced"}

    with server.client() as client:
        doctor_ok = client.get("/healthz").json()
    assert doctor_ok["status"] == "ok"
