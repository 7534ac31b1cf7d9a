"""Workspace isolation in the web console, walked route by route: an admin of globex,
signed in to the console, can neither see nor change anything of acme. Every console
route must have a case here (the test fails otherwise), like the admin API's walk in
test_isolation.py."""

from __future__ import annotations

from typing import Any

import httpx

from tests.console_support import sign_in
from tests.functional.test_isolation import database_state
from tests.helpers import (
    PASSWORD,
    LiveServer,
    create_workspaces,
    invite,
    invite_and_accept,
    onboard,
)

# Public, or acting only on the caller's own session.
PUBLIC = {
    ("GET", "/console/sign-in"),
    ("POST", "/console/sign-in"),
    ("POST", "/console/sign-out"),
    ("GET", "/console/static/<path:filename>"),
    ("GET", "/console/sso/start"),
    ("GET", "/console/sso/done"),
}
ACME = ("acme", "eve@example.com", "pat@example.com", "Eve", "Pat")


def console_routes(server: LiveServer) -> set[tuple[str, str]]:
    routes = set()
    for rule in server.app.url_map.iter_rules():
        if rule.rule.startswith("/console"):
            routes |= {(m, rule.rule) for m in rule.methods or () if m not in {"HEAD", "OPTIONS"}}
    return routes - PUBLIC


def test_a_globex_admin_sees_and_changes_nothing_of_acme_in_the_console(
    server: LiveServer,
) -> None:
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    eve = onboard(server, root, "eve@example.com", "Eve", [("acme", "editor")])
    pending = invite(root, "pat@example.com", [("acme", "viewer")], "Pat")
    invite_and_accept(server, root, "gina@example.com", "Gina", [("globex", "owner")])
    gina = sign_in(server, "gina@example.com", PASSWORD)
    before = database_state(server)

    def refused(response: httpx.Response) -> None:
        assert response.status_code in (403, 404), (response.request.url, response.text[:500])

    def invisible(response: httpx.Response) -> None:
        assert response.status_code == 200, (response.request.url, response.text[:500])
        for name in ACME:
            assert name not in response.text, (response.request.url, name)

    u, i = eve, pending["id"]
    user = "/console/users/<int(max=2147483647):user_id>"
    invitation = "/console/invitations/<int(max=2147483647):invitation_id>"
    cases: dict[tuple[str, str], Any] = {
        ("GET", "/console/"): lambda: invisible(gina.get("/console/users")),
        ("GET", "/console/account"): lambda: invisible(gina.get("/console/account")),
        ("GET", "/console/users"): lambda: invisible(
            gina.get("/console/users", params={"workspace": "acme"})
        ),
        ("GET", "/console/users/invite"): lambda: invisible(gina.get("/console/users/invite")),
        ("POST", "/console/users/invite"): lambda: refused(
            gina.post(
                "/console/users/invite",
                {"name": "X", "email": "x@example.com", "roles": ["acme:viewer"]},
                htmx=True,
            )
        ),
        ("POST", f"{invitation}/resend"): lambda: refused(
            gina.post(f"/console/invitations/{i}/resend")
        ),
        ("POST", f"{invitation}/revoke"): lambda: refused(
            gina.post(f"/console/invitations/{i}/revoke")
        ),
        ("POST", f"{user}/deactivate"): lambda: refused(
            gina.post(f"/console/users/{u}/deactivate")
        ),
        ("POST", f"{user}/reactivate"): lambda: refused(
            gina.post(f"/console/users/{u}/reactivate")
        ),
        ("GET", f"{user}/remove"): lambda: refused(gina.get(f"/console/users/{u}/remove")),
        ("POST", f"{user}/remove"): lambda: refused(gina.post(f"/console/users/{u}/remove")),
        ("GET", f"{user}/roles"): lambda: refused(gina.get(f"/console/users/{u}/roles")),
        ("POST", f"{user}/roles/<workspace>/preview"): lambda: refused(
            gina.post(f"/console/users/{u}/roles/acme/preview", {"roles": ["viewer"]})
        ),
        ("POST", f"{user}/roles/<workspace>"): lambda: refused(
            gina.post(f"/console/users/{u}/roles/acme", {"roles": ["viewer"]})
        ),
        ("GET", "/console/workspaces"): lambda: invisible(gina.get("/console/workspaces")),
        ("POST", "/console/workspaces"): lambda: refused(
            gina.post("/console/workspaces", {"slug": "acme2", "name": "Acme 2"})
        ),
        ("GET", "/console/workspaces/<slug>"): lambda: refused(
            gina.get("/console/workspaces/acme")
        ),
        ("POST", "/console/workspaces/<slug>/rename"): lambda: refused(
            gina.post("/console/workspaces/acme/rename", {"name": "Mine"})
        ),
        ("GET", "/console/roles"): lambda: invisible(gina.get("/console/roles")),
        ("GET", "/console/audit"): lambda: invisible(
            gina.get("/console/audit", params={"workspace": "acme"})
        ),
        ("GET", "/console/settings"): lambda: refused(gina.get("/console/settings")),
        ("POST", "/console/settings/email"): lambda: refused(
            gina.post("/console/settings/email", {"smtp_host": "evil.example"})
        ),
        ("POST", "/console/settings/email/test"): lambda: refused(
            gina.post("/console/settings/email/test", {"to": "gina@example.com"})
        ),
    }
    routes = console_routes(server)
    assert not routes - set(cases), (
        f"console routes without an isolation case: {routes - set(cases)}"
    )
    assert not set(cases) - routes, f"cases for routes that do not exist: {set(cases) - routes}"
    for case in cases.values():
        case()
    # An unfiltered audit and users page show globex's own things, and nothing of acme.
    invisible(gina.get("/console/audit"))
    assert "gina@example.com" in gina.get("/console/users").text
    assert database_state(server) == before
