"""Bad input gets a clear 4xx and leaves nothing half-written.

Every refusal is an RFC 9457 ``application/problem+json`` document with a type, a title,
the status and (where it helps) a detail that says what is wrong; and after it, the
people, invitations, workspaces, audit trail, outbox and policy revision are as they were.
"""

from __future__ import annotations

import base64
import json
import logging
from datetime import timedelta
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import text

from gateway.db.session import make_engine
from gateway.identity.signing import ADMIN_AUDIENCE
from tests.helpers import (
    ADMIN_EMAIL,
    PASSWORD,
    LiveServer,
    accept_token,
    assert_problem,
    create_workspaces,
    decision_headers,
    invite_and_accept,
    onboard,
    outbox_messages,
    post_invitation,
    set_invitation_expiry,
    sign_token,
)

# -- helpers ----------------------------------------------------------------------------


def state(server: LiveServer, admin: httpx.Client) -> dict[str, Any]:
    """Everything a refused request must leave alone, as the super admin sees it."""
    everything = {"page_size": 100}
    users = admin.get("/users", params=everything).json()
    for user in users:
        user.pop("last_login_at")  # signing in is not a change
        user.pop("last_seen_at", None)  # nor is making a request
    audit = admin.get("/audit", params={"page_size": 1})
    with server.client() as anonymous:
        revision = anonymous.get("/healthz").json()["revision"]
    return {
        "users": users,
        "invitations": admin.get("/invitations", params=everything).json(),
        "workspaces": admin.get("/workspaces", params=everything).json(),
        "audit_events": json.loads(audit.headers["X-Pagination"])["total"],
        "outbox": len(outbox_messages(server.settings)),
        "revision": revision,
    }


def jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


def b64(value: dict[str, Any]) -> str:
    """base64url without padding, as in a JWT."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


# -- invitations ------------------------------------------------------------------------


def test_invalid_invitations_are_refused_and_write_nothing(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme", "globex")
    assert post_invitation(admin, "John@Example.com", [("acme", "editor")]).status_code == 201
    before = state(server, admin)

    problem = assert_problem(
        post_invitation(admin, "not-an-address", [("acme", "editor")]),
        422,
        "invalid-input",
        "email",
    )
    assert "email" in problem["errors"]

    problem = assert_problem(
        post_invitation(admin, "mary@example.com", [("acme", "editor"), ("globex", "emperor")]),
        422,
        "invalid-input",
        "emperor",
    )
    assert "viewer" in problem["known_roles"] and "emperor" not in problem["known_roles"]

    problem = assert_problem(
        post_invitation(admin, "mary@example.com", [("acme", "editor"), ("initech", "viewer")]),
        404,
        "not-found",
        "initech",
    )
    assert problem["workspace"] == "initech"

    problem = assert_problem(
        post_invitation(admin, "mary@example.com", []), 422, "invalid-input", "roles"
    )
    assert "roles" in problem["errors"]

    # A second pending invitation for the same address, however it is spelled.
    problem = assert_problem(
        post_invitation(admin, "JOHN@example.COM", [("globex", "viewer")]),
        409,
        "conflict",
        "pending",
    )
    assert isinstance(problem["invitation_id"], int) and "user_id" not in problem

    response = admin.post(
        "/invitations",
        json={
            "email": "mary@example.com",
            "name": "Mary",
            "roles": [{"workspace": "acme", "role": "editor", "expires": "never"}],
            "is_admin": True,
        },
    )
    problem = assert_problem(response, 422, "invalid-input")
    assert problem["errors"]["is_admin"] == ["Unknown field."]
    assert "expires" in json.dumps(problem["errors"]["roles"])

    # Inviting your own (existing) account would be changing your own roles.
    assert_problem(
        post_invitation(admin, ADMIN_EMAIL.upper(), [("acme", "viewer")]),
        403,
        "forbidden",
        "your own roles",
    )

    assert state(server, admin) == before
    assert not any(u["email"] == "mary@example.com" for u in before["users"])


def test_invitation_links_that_do_not_work(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    tokens: dict[str, str] = {}
    ids: dict[str, int] = {}
    for who in ("used", "expired", "revoked", "short"):
        response = post_invitation(admin, f"{who}@example.com", [("acme", "viewer")])
        assert response.status_code == 201, response.text
        ids[who] = response.json()["id"]
        tokens[who] = accept_token(outbox_messages(server.settings)[-1])

    with server.client() as anonymous:

        def accept(token: str, password: str = PASSWORD) -> httpx.Response:
            return anonymous.post(
                "/invitations/accept", json={"token": token, "password": password}
            )

        assert accept(tokens["used"]).status_code == 200
        assert admin.post(f"/invitations/{ids['revoked']}/revoke").status_code == 200
        set_invitation_expiry(server, ids["expired"], timedelta(minutes=-1))
        before = state(server, admin)

        assert_problem(accept(tokens["used"]), 410, "invalid-invitation", "accepted already")
        assert_problem(accept(tokens["expired"]), 410, "invalid-invitation", "expired")
        assert_problem(accept(tokens["revoked"]), 410, "invalid-invitation", "revoked")
        assert_problem(accept("x" * 43), 410, "invalid-invitation", "not valid")
        problem = assert_problem(
            accept(tokens["short"], "short"), 422, "invalid-input", "at least 12 characters"
        )
        assert "password" in problem["errors"]
        assert_problem(
            anonymous.post("/invitations/accept", json={"token": tokens["short"]}),
            422,
            "invalid-input",
            "password",
        )
        assert state(server, admin) == before

        # The refused password did not use the token up.
        assert accept(tokens["short"]).status_code == 200


# -- request bodies ---------------------------------------------------------------------


def test_malformed_oversized_and_unexpected_bodies(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    as_json = {"Content-Type": "application/json"}
    decisions = {**as_json, **decision_headers(server)}  # a service's token, not the admin's
    before = state(server, admin)
    malformed = b'{"slug": "initech", "name": '
    too_big = json.dumps({"slug": "initech", "name": "x" * (1024 * 1024)}).encode()

    for path in ("/workspaces", "/invitations", "/auth/login", "/v1/check"):
        headers = decisions if path == "/v1/check" else as_json
        assert_problem(
            admin.post(path, content=malformed, headers=headers), 400, "invalid-input", "JSON"
        )
    assert_problem(
        admin.post("/access/v1/evaluation", content=malformed, headers=decisions),
        400,
        "bad-request",
        "not valid JSON",
    )
    for path in ("/workspaces", "/access/v1/evaluation"):
        headers = decisions if path.startswith("/access/") else as_json
        refused = admin.post(path, content=too_big, headers=headers)
        problem = assert_problem(refused, 413, "payload-too-large")
        assert problem["detail"]
        # The rest of the body is not read: the connection is not reused for another
        # request (sent on it, a request was cut when the server closed it).
        assert "close" in refused.headers["Connection"]

    # Unknown fields are refused (a typo must never pass silently) ...
    response = admin.post("/workspaces", json={"slug": "initech", "name": "Initech", "owner": 1})
    problem = assert_problem(response, 422, "invalid-input", "owner")
    assert problem["errors"] == {"owner": ["Unknown field."]}
    response = admin.patch("/workspaces/acme", json={"name": "Acme", "slug": "acme2"})
    assert assert_problem(response, 422, "invalid-input")["errors"] == {"slug": ["Unknown field."]}
    # ... and so are bodies of the wrong shape.
    response = admin.post("/workspaces", json=["initech", "Initech"])
    assert_problem(response, 422, "invalid-input")
    response = admin.post("/workspaces", json={"slug": "initech", "name": ""})
    assert "name" in assert_problem(response, 422, "invalid-input", "name")["errors"]

    assert state(server, admin) == before


# -- who is calling ---------------------------------------------------------------------


def test_bad_access_tokens_get_401_with_www_authenticate(server: LiveServer) -> None:
    admin = server.admin()
    [me] = [u for u in admin.get("/users").json() if u["email"] == ADMIN_EMAIL]
    mine = {"sub": str(me["id"]), "sv": 1}
    expired = sign_token(server, mine, ADMIN_AUDIENCE, ttl=-60)
    # The same claims, signed right, do work: each failure below is the token's fault.
    good = sign_token(server, mine, ADMIN_AUDIENCE, ttl=600)
    assert server.client(good).get("/workspaces").is_success
    header, payload, _ = good.split(".")
    stranger = RSAKey.generate_key(2048)
    kid = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]
    other_key = jwt.encode(
        {"alg": "RS256", "typ": "at+jwt", "kid": kid}, {**jwt_claims(good)}, stranger
    )
    unsigned = ".".join((b64({"alg": "none", "typ": "at+jwt", "kid": kid}), payload, ""))
    before = state(server, admin)

    cases = {
        "missing": ({}, None),
        "not bearer": ({"Authorization": f"Basic {b64({'a': 1})}"}, None),
        "empty": ({"Authorization": "Bearer"}, None),
        "garbage": ({"Authorization": "Bearer not.a.token"}, "malformed"),
        "other key": ({"Authorization": f"Bearer {other_key}"}, "bad-signature"),
        "expired": ({"Authorization": f"Bearer {expired}"}, "expired"),
        "unsigned": ({"Authorization": f"Bearer {unsigned}"}, "unsupported-algorithm"),
    }
    with httpx.Client(base_url=server.url) as client:
        for case, (headers, reason) in cases.items():
            for method, path, body in (
                ("GET", "/users", None),
                ("POST", "/workspaces", {"slug": "initech", "name": "Initech"}),
                ("DELETE", f"/users/{me['id']}", None),
            ):
                response = client.request(method, path, headers=headers, json=body)
                problem = assert_problem(response, 401, "unauthorized")
                assert response.headers["WWW-Authenticate"].startswith("Bearer"), case
                assert "Traceback" not in response.text
                assert problem.get("reason") == reason, (case, problem)
    # Nothing changed. Refused tokens are counted; the audit trail gets one event for
    # this source in the window (the first; the next one will carry the count of those
    # held back: tests/functional/test_refusal_sampling.py). No token is not an event.
    after = state(server, admin)
    refusals = after.pop("audit_events") - before.pop("audit_events")
    assert after == before
    assert refusals == 1
    [event] = admin.get("/audit", params={"action": "auth.token_rejected"}).json()
    assert event["after"]["reasons"] == {"malformed": 1}  # the first case with a token
    assert event["source_address"] == "127.0.0.1"


def test_callers_without_the_permission_get_403(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme", "globex")
    _, viewer = invite_and_accept(server, admin, "vera@example.com", "Vera", [("acme", "viewer")])
    _, acme_admin = invite_and_accept(
        server, admin, "adam@example.com", "Adam", [("acme", "admin")]
    )
    gina_id = onboard(server, admin, "gina@example.com", "Gina", [("globex", "editor")])
    before = state(server, admin)

    problem = assert_problem(
        post_invitation(viewer, "new@example.com", [("acme", "viewer")]),
        403,
        "forbidden",
        "users:invite",
    )
    assert problem["permission"] == "users:invite" and problem["workspace"] == "acme"
    problem = assert_problem(
        post_invitation(acme_admin, "new@example.com", [("acme", "viewer"), ("globex", "viewer")]),
        403,
        "forbidden",
        "users:invite",
    )
    assert problem["workspace"] == "globex"
    response = acme_admin.put(f"/users/{gina_id}/workspaces/globex/roles", json={"roles": []})
    problem = assert_problem(response, 403, "forbidden", "role_management:write")
    assert problem["workspace"] == "globex"
    response = acme_admin.post(
        f"/users/{gina_id}/grants", json={"workspace": "globex", "role": "admin"}
    )
    assert_problem(response, 403, "forbidden")
    response = acme_admin.post("/workspaces", json={"slug": "initech", "name": "Initech"})
    assert_problem(response, 403, "forbidden", "workspaces:create")
    assert_problem(acme_admin.delete("/workspaces/acme"), 403, "forbidden", "workspaces:delete")
    response = viewer.put(f"/users/{gina_id}/workspaces/acme/roles", json={"roles": ["viewer"]})
    assert_problem(response, 403, "forbidden", "role_management:write")

    assert state(server, admin) == before


# -- rules about roles, workspaces and people -------------------------------------------


def test_roles_workspaces_and_users_that_do_not_exist(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    john_id = onboard(server, admin, "john@example.com", "John", [("acme", "viewer")])
    before = state(server, admin)

    # Roles come from policies/, not from the caller.
    response = admin.put(f"/users/{john_id}/workspaces/acme/roles", json={"roles": ["emperor"]})
    problem = assert_problem(response, 422, "invalid-input", "emperor")
    assert "editor" in problem["known_roles"]
    response = admin.post(f"/users/{john_id}/grants", json={"workspace": "acme", "role": "emperor"})
    assert_problem(response, 422, "invalid-input", "emperor")
    response = admin.post(
        f"/users/{john_id}/grants", json={"workspace": "acme", "role": "Not A Role"}
    )
    assert "role" in assert_problem(response, 422, "invalid-input")["errors"]

    for slug in ("Acme", "-acme", "acme-", "ac me", "a" * 64, ""):
        response = admin.post("/workspaces", json={"slug": slug, "name": "Bad"})
        assert "slug" in assert_problem(response, 422, "invalid-input", "slug")["errors"], slug
    assert_problem(
        admin.post("/workspaces", json={"slug": "acme", "name": "Acme again"}),
        409,
        "conflict",
        "already exists",
    )
    assert admin.get("/workspaces/acme").json()["name"] == "Acme"

    for method, path in (
        ("GET", "/users/424242"),
        ("POST", "/users/424242/deactivate"),
        ("POST", "/users/424242/reactivate"),
        ("DELETE", "/users/424242"),
        ("GET", "/invitations/424242"),
        ("POST", "/invitations/424242/resend"),
        ("POST", "/invitations/424242/revoke"),
        ("GET", "/workspaces/initech"),
        ("DELETE", "/workspaces/initech"),
    ):
        assert_problem(admin.request(method, path), 404, "not-found")
    response = admin.put("/users/424242/workspaces/acme/roles", json={"roles": ["viewer"]})
    assert_problem(response, 404, "not-found", "424242")
    response = admin.put(f"/users/{john_id}/workspaces/initech/roles", json={"roles": ["viewer"]})
    assert_problem(response, 404, "not-found", "initech")
    response = admin.delete(f"/users/{john_id}/grants/acme/editor")
    assert_problem(response, 404, "not-found", "editor")
    # Ids beyond what the database stores are simply not found (they once were a 500).
    for path in ("/users/99999999999999999999", "/invitations/9999999999"):
        assert_problem(admin.get(path), 404, "not-found")
    assert_problem(admin.get("/audit", params={"actor_id": 10**20}), 422, "invalid-input")

    assert state(server, admin) == before


def test_nobody_locks_themselves_or_everyone_out(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    [me] = [u for u in admin.get("/users").json() if u["email"] == ADMIN_EMAIL]
    olga_id, olga = invite_and_accept(
        server, admin, "olga@example.com", "Olga", [("acme", "owner")]
    )
    # Olga becomes owner everywhere: she manages everyone but super admins, whose role
    # she could not grant and so may not take away either.
    response = admin.put(f"/users/{olga_id}/workspaces/*/roles", json={"roles": ["owner"]})
    assert response.status_code == 200, response.text
    before = state(server, admin)

    for client, user_id in ((admin, me["id"]), (olga, olga_id)):
        assert_problem(client.post(f"/users/{user_id}/deactivate"), 403, "forbidden", "own")
        assert_problem(client.delete(f"/users/{user_id}"), 403, "forbidden", "own")
    response = olga.put(f"/users/{olga_id}/workspaces/acme/roles", json={"roles": ["viewer"]})
    assert_problem(response, 403, "forbidden", "own roles")

    assert_problem(
        olga.post(f"/users/{me['id']}/deactivate"),
        403,
        "forbidden",
        "cannot deactivate 'superadmin'",
    )
    assert_problem(
        olga.delete(f"/users/{me['id']}"), 403, "forbidden", "cannot remove 'superadmin'"
    )

    assert state(server, admin) == before
    assert admin.get("/users").status_code == 200  # still signed in, still a super admin


# -- failures of our own ----------------------------------------------------------------


def test_internal_errors_leak_nothing_and_write_nothing(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken database (the audit table gone) is a 500 with only a request id; a change
    whose audit event cannot be written is not made at all."""
    caplog.set_level(logging.ERROR, logger="ringfence")
    admin = server.admin()
    create_workspaces(admin, "acme")
    before = state(server, admin)
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with db.begin() as connection:
            connection.execute(text("ALTER TABLE audit_events RENAME TO audit_events_away"))
        reading = admin.get("/audit", headers={"X-Request-ID": "req-broken-audit"})
        writing = admin.post("/workspaces", json={"slug": "initech", "name": "Initech"})
    finally:
        with db.begin() as connection:
            connection.execute(text("ALTER TABLE audit_events_away RENAME TO audit_events"))
        db.dispose()

    for response in (reading, writing):
        problem = assert_problem(response, 500, "internal-error")
        assert set(problem) == {"type", "title", "status", "request_id"}
        assert problem["request_id"] == response.headers["X-Request-ID"]
        for secret in ("Traceback", "audit_events", "sqlalchemy", "SELECT", "INSERT", ".py"):
            assert secret not in response.text
    assert reading.json()["request_id"] == "req-broken-audit"
    # The trace is in the log, findable by the request id the client was given.
    logged = [r for r in caplog.records if r.exc_info and "req-broken-audit" in r.getMessage()]
    assert logged and "audit_events" in caplog.text

    assert state(server, admin) == before
    assert_problem(admin.get("/workspaces/initech"), 404, "not-found")
    with server.client() as anonymous:
        assert (
            anonymous.post(
                "/access/v1/evaluation",
                json={
                    "subject": {"type": "user", "id": ADMIN_EMAIL},
                    "action": {"name": "read"},
                    "resource": {
                        "type": "documents",
                        "id": "1",
                        "properties": {"workspace": "initech"},
                    },
                },
                headers=decision_headers(server),
            ).json()["decision"]
            is False
        )
