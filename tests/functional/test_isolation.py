"""Workspace isolation, walked endpoint by endpoint: an admin of globex can neither see
nor change anything of acme. The walk covers every admin route the app serves; a new
route without a case here fails the test, so the walk stays complete."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.db import make_engine
from gateway.models import AuditEvent, CasbinRule, Grant, Invitation, PolicyState, User, Workspace
from tests.helpers import LiveServer, create_workspaces, invite, invite_and_accept, onboard

# Public, or acting only on the caller's own session: nothing of another workspace.
PUBLIC = {
    ("POST", "/auth/login"),
    ("POST", "/auth/refresh"),
    ("POST", "/auth/logout"),
    ("POST", "/invitations/accept"),
}
NOT_ADMIN = ("/v1/", "/access/", "/invite/", "/docs", "/openapi", "/healthz", "/static")
NOT_ADMIN += ("/pdp/", "/.well-known/authzen-configuration")  # AuthZEN decisions, discovery


def database_state(server: LiveServer) -> dict[str, Any]:
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with Session(db) as session:
            counts = {
                model.__name__: session.scalar(select(func.count()).select_from(model))
                for model in (User, Workspace, Grant, Invitation, AuditEvent, CasbinRule)
            }
            counts["revision"] = session.scalar(select(PolicyState.revision))
            counts["statuses"] = sorted(session.execute(select(User.id, User.status)).all())
            return counts
    finally:
        db.dispose()


def admin_routes(server: LiveServer) -> set[tuple[str, str]]:
    routes = set()
    for rule in server.app.url_map.iter_rules():
        if rule.rule.startswith(NOT_ADMIN):
            continue
        for method in rule.methods or ():
            if method not in {"HEAD", "OPTIONS"}:
                routes.add((method, rule.rule))
    return routes - PUBLIC


def test_a_globex_admin_sees_and_changes_nothing_of_acme(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    eve = onboard(server, root, "eve@example.com", "Eve", [("acme", "editor")])
    pending = invite(root, "pat@example.com", [("acme", "viewer")], "Pat")
    _, gina = invite_and_accept(server, root, "gina@example.com", "Gina", [("globex", "admin")])
    before = database_state(server)

    def refused(response: httpx.Response) -> None:
        assert response.status_code in (403, 404), (response.request.url, response.text)

    def invisible(response: httpx.Response) -> None:
        assert response.status_code == 200, response.text
        assert "acme" not in response.text and "eve@example.com" not in response.text

    u, i = eve, pending["id"]
    cases: dict[tuple[str, str], Any] = {
        ("GET", "/workspaces"): lambda: invisible(gina.get("/workspaces")),
        ("POST", "/workspaces"): lambda: refused(
            gina.post("/workspaces", json={"slug": "acme2", "name": "Acme 2"})
        ),
        ("GET", "/workspaces/<slug>"): lambda: refused(gina.get("/workspaces/acme")),
        ("PATCH", "/workspaces/<slug>"): lambda: refused(
            gina.patch("/workspaces/acme", json={"name": "Mine"})
        ),
        ("DELETE", "/workspaces/<slug>"): lambda: refused(gina.delete("/workspaces/acme")),
        ("GET", "/users"): lambda: invisible(gina.get("/users", params={"workspace": "acme"})),
        ("GET", "/users/<int(max=2147483647):user_id>"): lambda: refused(gina.get(f"/users/{u}")),
        ("DELETE", "/users/<int(max=2147483647):user_id>"): lambda: refused(
            gina.delete(f"/users/{u}")
        ),
        ("POST", "/users/<int(max=2147483647):user_id>/deactivate"): lambda: refused(
            gina.post(f"/users/{u}/deactivate")
        ),
        ("POST", "/users/<int(max=2147483647):user_id>/reactivate"): lambda: refused(
            gina.post(f"/users/{u}/reactivate")
        ),
        ("PUT", "/users/<int(max=2147483647):user_id>/workspaces/<workspace>/roles"): lambda: (
            refused(gina.put(f"/users/{u}/workspaces/acme/roles", json={"roles": ["viewer"]}))
        ),
        ("POST", "/users/<int(max=2147483647):user_id>/grants"): lambda: refused(
            gina.post(f"/users/{u}/grants", json={"workspace": "acme", "role": "admin"})
        ),
        ("DELETE", "/users/<int(max=2147483647):user_id>/grants/<workspace>/<role>"): lambda: (
            refused(gina.delete(f"/users/{u}/grants/acme/editor"))
        ),
        ("GET", "/invitations"): lambda: invisible(gina.get("/invitations")),
        ("POST", "/invitations"): lambda: refused(
            gina.post(
                "/invitations",
                json={
                    "email": "x@example.com",
                    "name": "X",
                    "roles": [{"workspace": "acme", "role": "viewer"}],
                },
            )
        ),
        ("GET", "/invitations/<int(max=2147483647):invitation_id>"): lambda: refused(
            gina.get(f"/invitations/{i}")
        ),
        ("POST", "/invitations/<int(max=2147483647):invitation_id>/resend"): lambda: refused(
            gina.post(f"/invitations/{i}/resend")
        ),
        ("POST", "/invitations/<int(max=2147483647):invitation_id>/revoke"): lambda: refused(
            gina.post(f"/invitations/{i}/revoke")
        ),
        ("GET", "/audit"): lambda: invisible(gina.get("/audit", params={"page_size": 100})),
        ("GET", "/settings/email"): lambda: refused(gina.get("/settings/email")),
        ("PATCH", "/settings/email"): lambda: refused(
            gina.patch("/settings/email", json={"smtp_host": "evil.example"})
        ),
        ("POST", "/settings/email/test"): lambda: refused(
            gina.post("/settings/email/test", json={"to": "gina@example.com"})
        ),
    }
    routes = admin_routes(server)
    assert not routes - set(cases), f"admin routes without an isolation case: {routes - set(cases)}"
    assert not set(cases) - routes, f"cases for routes that do not exist: {set(cases) - routes}"
    for case in cases.values():
        case()
    assert database_state(server) == before
    # And the same identity does see its own workspace.
    assert gina.get("/workspaces/globex").status_code == 200
