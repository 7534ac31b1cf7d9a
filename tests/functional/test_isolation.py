"""Workspace isolation, walked endpoint by endpoint: an admin of globex can neither see
nor change anything of acme. The walk covers every admin route the app serves; a new
route without a case here fails the test, so the walk stays complete."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.db.models import (
    AuditEvent,
    CasbinRule,
    CustomRole,
    DirectoryConnection,
    EventStream,
    Grant,
    Invitation,
    OAuthClient,
    PolicyState,
    SsoConnection,
    SsoDomain,
    SsoLink,
    User,
    Workspace,
)
from gateway.db.session import make_engine
from tests.functional.test_workspace_sso import add_connection_row, add_link_row
from tests.helpers import LiveServer, create_workspaces, invite, invite_and_accept, onboard

# Public, or acting only on the caller's own session: nothing of another workspace.
PUBLIC = {
    ("POST", "/auth/login"),
    ("POST", "/auth/refresh"),
    ("POST", "/auth/logout"),
    ("POST", "/invitations/accept"),
    # OAuth for services: client credentials, not an admin's identity.
    ("POST", "/oauth/token"),
    ("POST", "/oauth/revoke"),
    ("POST", "/oauth/introspect"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/.well-known/oauth-authorization-server"),
}
NOT_ADMIN = ("/v1/", "/access/", "/invite/", "/docs", "/openapi", "/healthz", "/static")
NOT_ADMIN += ("/readyz", "/metrics")  # probes and metrics: no workspace data
# Password change acts on the caller's own account; reset and single sign-on are public.
PUBLIC |= {
    ("POST", "/auth/password"),
    ("POST", "/auth/password-reset"),
    ("POST", "/auth/password-reset/confirm"),
    ("POST", "/auth/sso/exchange"),
    ("GET", "/auth/sso/login"),
    ("GET", "/auth/sso/callback"),
    # A workspace's own single sign-on (test_workspace_sso_sign_in.py walks the answers
    # carried to another workspace's connection).
    ("GET", "/auth/sso/connections/<int(max=2147483647):connection_id>/login"),
    ("GET", "/auth/sso/connections/<int(max=2147483647):connection_id>/callback"),
    # The provider's back channel: its signed logout token is the credential
    # (test_sso_logout_and_unlink.py posts another workspace's provider's token there).
    ("POST", "/auth/sso/connections/<int(max=2147483647):connection_id>/backchannel-logout"),
}
# The signed-in person's own invitations: listed and accepted for their own account only
# (tests/functional/test_tenant_walls.py tries them with other people's invitations).
PUBLIC |= {
    ("GET", "/invitations/mine"),
    ("POST", "/invitations/<int(max=2147483647):invitation_id>/accept"),
}
NOT_ADMIN += ("/reset/",)  # the password reset page
# A person's own second factor, and the second step of signing in (tests/functional/test_mfa.py).
PUBLIC |= {("GET", "/auth/mfa"), ("POST", "/auth/mfa/verify")}
PUBLIC |= {("POST", f"/auth/mfa/{p}") for p in ("totp", "totp/confirm", "totp/remove")}
PUBLIC |= {("POST", "/auth/mfa/recovery-codes")}
STREAM = "<int(max=2147483647):stream_id>"
SSO = "<int(max=2147483647):connection_id>"
DOMAIN = "<int(max=2147483647):domain_id>"
NOT_ADMIN += ("/pdp/", "/.well-known/authzen-configuration")  # AuthZEN decisions, discovery
# SCIM: a directory connection's token, never an admin's; its wall between two workspaces'
# directories is walked in tests/functional/test_directory.py.
NOT_ADMIN += ("/scim/",)


def database_state(server: LiveServer) -> dict[str, Any]:
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with Session(db) as session:
            counts = {
                model.__name__: session.scalar(select(func.count()).select_from(model))
                for model in (User, Workspace, Grant, Invitation, AuditEvent, CasbinRule)
            }
            counts["revision"] = session.scalar(select(PolicyState.revision))
            counts["custom_roles"] = [
                (r.workspace_slug, r.name, r.description, r.permissions)
                for r in session.scalars(select(CustomRole).order_by(CustomRole.id))
            ]
            # Not their cursors: delivery moves them whoever acts.
            counts["event_streams"] = sorted(
                session.execute(
                    select(EventStream.id, EventStream.name, EventStream.target)
                    .add_columns(EventStream.event_types, EventStream.status)
                    .add_columns(EventStream.sealed_secrets)
                ).all()
            )
            counts["statuses"] = sorted(session.execute(select(User.id, User.status)).all())
            counts["clients"] = sorted(
                session.execute(
                    select(OAuthClient.client_id, OAuthClient.secret_hash, OAuthClient.revoked_at)
                ).all()
            )
            counts["directory_connections"] = sorted(
                session.execute(
                    select(
                        DirectoryConnection.id,
                        DirectoryConnection.token_hash,
                        DirectoryConnection.default_role,
                        DirectoryConnection.revoked_at,
                    )
                ).all()
            )
            counts["sso_connections"] = sorted(
                session.execute(
                    select(SsoConnection.id, SsoConnection.name, SsoConnection.issuer)
                    .add_columns(SsoConnection.sealed_client_secret, SsoConnection.enabled)
                    .add_columns(SsoConnection.require_sso, SsoConnection.jit_role)
                ).all()
            )
            counts["sso_links"] = sorted(
                session.execute(select(SsoLink.id, SsoLink.connection_id, SsoLink.user_id)).all()
            )
            counts["sso_domains"] = sorted(
                session.execute(
                    select(SsoDomain.id, SsoDomain.domain, SsoDomain.verified_at).add_columns(
                        SsoDomain.last_checked_at, SsoDomain.workspace_slug
                    )
                ).all()
            )
            return counts
    finally:
        db.dispose()


# The web console's routes have a walk of their own (tests/functional/test_console_isolation.py).
NOT_ADMIN += ("/console",)


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
    service = root.post("/clients", json={"name": "billing", "scopes": ["decisions:check"]})
    c = service.json()["client"]["client_id"]
    deadline = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    review = root.post(
        "/reviews/campaigns",
        json={"name": "Acme review", "workspace": "acme", "deadline": deadline},
    ).json()
    [eve_item] = root.get(f"/reviews/campaigns/{review['id']}/items").json()
    stream_body = {"name": "SIEM", "kind": "file", "target": "acme.jsonl", "event_types": ["*"]}
    acme_stream = root.post("/event-streams", json={**stream_body, "workspace": "acme"})
    s = acme_stream.json()["stream"]["id"]
    auditor = {"name": "auditor", "permissions": ["audit:read", "documents:read"]}
    assert root.post("/workspaces/acme/custom-roles", json=auditor).status_code == 201
    directory = root.post("/directory-connections", json={"workspace": "acme", "name": "Okta"})
    d = directory.json()["connection"]["id"]
    sso = add_connection_row(server.settings, "acme")
    add_link_row(server.settings, sso, eve, "idp-eve")
    claim = root.post("/sso-domains", json={"workspace": "acme", "domain": "acme-corp.test"})
    dom = claim.json()["id"]
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
        ("POST", "/users/<int(max=2147483647):user_id>/mfa/reset"): lambda: refused(
            gina.post(f"/users/{u}/mfa/reset")
        ),
        ("GET", "/workspaces/<slug>/mfa-policy"): lambda: refused(
            gina.get("/workspaces/acme/mfa-policy")
        ),
        ("PUT", "/workspaces/<slug>/mfa-policy"): lambda: refused(
            gina.put("/workspaces/acme/mfa-policy", json={"required": "everyone"})
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
        ("GET", "/audit/export"): lambda: [
            invisible(gina.get("/audit/export", params={"format": kind, "workspace": ws}))
            for kind in ("jsonl", "csv", "bundle")
            for ws in ("acme", "")
        ],
        # Checkpoints speak of the whole trail: super admins' only.
        ("GET", "/audit/checkpoints"): lambda: refused(gina.get("/audit/checkpoints")),
        ("POST", "/audit/checkpoints"): lambda: refused(gina.post("/audit/checkpoints")),
        ("GET", "/settings/email"): lambda: refused(gina.get("/settings/email")),
        ("PATCH", "/settings/email"): lambda: refused(
            gina.patch("/settings/email", json={"smtp_host": "evil.example"})
        ),
        ("POST", "/settings/email/test"): lambda: refused(
            gina.post("/settings/email/test", json={"to": "gina@example.com"})
        ),
        # OAuth clients are installation-wide: a workspace admin may not even list them.
        ("GET", "/clients"): lambda: refused(gina.get("/clients")),
        ("POST", "/clients"): lambda: refused(
            gina.post("/clients", json={"name": "mine", "scopes": ["decisions:check"]})
        ),
        ("GET", "/clients/<client_id>"): lambda: refused(gina.get(f"/clients/{c}")),
        ("DELETE", "/clients/<client_id>"): lambda: refused(gina.delete(f"/clients/{c}")),
        ("POST", "/clients/<client_id>/rotate-secret"): lambda: refused(
            gina.post(f"/clients/{c}/rotate-secret")
        ),
        ("GET", "/reviews/campaigns"): lambda: invisible(gina.get("/reviews/campaigns")),
        ("POST", "/reviews/campaigns"): lambda: refused(
            gina.post(
                "/reviews/campaigns",
                json={"name": "Mine", "workspace": "acme", "deadline": deadline},
            )
        ),
        ("GET", "/reviews/campaigns/<int(max=2147483647):campaign_id>"): lambda: refused(
            gina.get(f"/reviews/campaigns/{review['id']}")
        ),
        ("GET", "/reviews/campaigns/<int(max=2147483647):campaign_id>/items"): lambda: refused(
            gina.get(f"/reviews/campaigns/{review['id']}/items")
        ),
        ("POST", "/reviews/campaigns/<int(max=2147483647):campaign_id>/close"): lambda: refused(
            gina.post(f"/reviews/campaigns/{review['id']}/close")
        ),
        ("GET", "/reviews/items"): lambda: invisible(gina.get("/reviews/items")),
        # Directory connections: acme's are not there for her (she manages globex's).
        ("GET", "/directory-connections"): lambda: [
            invisible(gina.get("/directory-connections")),
            invisible(gina.get("/directory-connections", params={"workspace": "acme"})),
        ],
        ("POST", "/directory-connections"): lambda: refused(
            gina.post("/directory-connections", json={"workspace": "acme", "name": "Mine"})
        ),
        ("GET", "/directory-connections/<int(max=2147483647):connection_id>"): lambda: refused(
            gina.get(f"/directory-connections/{d}")
        ),
        ("DELETE", "/directory-connections/<int(max=2147483647):connection_id>"): lambda: refused(
            gina.delete(f"/directory-connections/{d}")
        ),
        (
            "POST",
            "/directory-connections/<int(max=2147483647):connection_id>/rotate-token",
        ): lambda: refused(gina.post(f"/directory-connections/{d}/rotate-token")),
        ("PUT", "/directory-connections/<int(max=2147483647):connection_id>/roles"): lambda: (
            refused(
                gina.put(f"/directory-connections/{d}/roles", json={"group_roles": {"x": "viewer"}})
            )
        ),
        # A workspace's own single sign-on: acme's connection answers as one that does
        # not exist (tests/functional/test_workspace_sso.py walks it for globex's owner).
        ("GET", "/sso-connections"): lambda: [
            invisible(gina.get("/sso-connections")),
            invisible(gina.get("/sso-connections", params={"workspace": "acme"})),
        ],
        ("POST", "/sso-connections"): lambda: refused(
            gina.post(
                "/sso-connections",
                json={
                    "workspace": "acme",
                    "name": "Mine",
                    "issuer": "https://idp.example",
                    "client_id": "mine",
                    "client_secret": "mine",
                },
            )
        ),
        ("GET", f"/sso-connections/{SSO}"): lambda: refused(gina.get(f"/sso-connections/{sso}")),
        ("PATCH", f"/sso-connections/{SSO}"): lambda: refused(
            gina.patch(f"/sso-connections/{sso}", json={"enabled": False})
        ),
        ("POST", f"/sso-connections/{SSO}/check"): lambda: refused(
            gina.post(f"/sso-connections/{sso}/check")
        ),
        ("GET", f"/sso-connections/{SSO}/links"): lambda: refused(
            gina.get(f"/sso-connections/{sso}/links")
        ),
        ("DELETE", f"/sso-connections/{SSO}/links/<int(max=2147483647):user_id>"): lambda: refused(
            gina.delete(f"/sso-connections/{sso}/links/{u}")
        ),
        ("GET", "/sso-domains"): lambda: [
            invisible(gina.get("/sso-domains")),
            invisible(gina.get("/sso-domains", params={"workspace": "acme"})),
        ],
        ("POST", "/sso-domains"): lambda: refused(
            gina.post("/sso-domains", json={"workspace": "acme", "domain": "mine.test"})
        ),
        ("GET", f"/sso-domains/{DOMAIN}"): lambda: refused(gina.get(f"/sso-domains/{dom}")),
        ("DELETE", f"/sso-domains/{DOMAIN}"): lambda: refused(gina.delete(f"/sso-domains/{dom}")),
        ("POST", f"/sso-domains/{DOMAIN}/verify"): lambda: refused(
            gina.post(f"/sso-domains/{dom}/verify")
        ),
        ("POST", "/reviews/items/<int(max=2147483647):item_id>/decision"): lambda: refused(
            gina.post(f"/reviews/items/{eve_item['id']}/decision", json={"decision": "revoke"})
        ),
        # Roles: acme's do not exist for her; her own workspace's and the catalogue say
        # nothing of acme.
        ("GET", "/roles"): lambda: [
            refused(gina.get("/roles", params={"workspace": "acme"})),
            invisible(gina.get("/roles", params={"workspace": "globex"})),
        ],
        ("GET", "/permissions"): lambda: invisible(gina.get("/permissions")),
        # The applied policy and the grants policy plan --gateway reads: globex's only.
        ("GET", "/policy/applied"): lambda: invisible(gina.get("/policy/applied")),
        ("GET", "/policy/grants"): lambda: invisible(gina.get("/policy/grants")),
        # Acme's custom roles: the answer of a workspace that does not exist.
        ("GET", "/workspaces/<slug>/custom-roles"): lambda: refused(
            gina.get("/workspaces/acme/custom-roles")
        ),
        ("POST", "/workspaces/<slug>/custom-roles"): lambda: refused(
            gina.post(
                "/workspaces/acme/custom-roles",
                json={"name": "mine", "permissions": ["documents:read"]},
            )
        ),
        ("GET", "/workspaces/<slug>/custom-roles/<name>"): lambda: refused(
            gina.get("/workspaces/acme/custom-roles/auditor")
        ),
        ("PUT", "/workspaces/<slug>/custom-roles/<name>"): lambda: refused(
            gina.put("/workspaces/acme/custom-roles/auditor", json={"permissions": ["audit:read"]})
        ),
        ("DELETE", "/workspaces/<slug>/custom-roles/<name>"): lambda: refused(
            gina.delete("/workspaces/acme/custom-roles/auditor")
        ),
        ("GET", "/reports"): lambda: invisible(gina.get("/reports")),
        ("GET", "/reports/<name>"): lambda: [
            invisible(gina.get(f"/reports/{name}", params={"days": 0, "min_workspaces": 1}))
            for name in gina.get("/reports").json()["reports"]
        ],
        # Event streams: acme's answers as one that does not exist; her list has none.
        ("GET", "/event-streams"): lambda: [
            invisible(gina.get("/event-streams")),
            invisible(gina.get("/event-streams", params={"workspace": "acme"})),
        ],
        ("POST", "/event-streams"): lambda: [
            refused(gina.post("/event-streams", json={**stream_body, "workspace": ws}))
            for ws in ("acme", "*")
        ],
        ("GET", f"/event-streams/{STREAM}"): lambda: refused(gina.get(f"/event-streams/{s}")),
        ("PATCH", f"/event-streams/{STREAM}"): lambda: refused(
            gina.patch(f"/event-streams/{s}", json={"target": "mine.jsonl"})
        ),
        ("DELETE", f"/event-streams/{STREAM}"): lambda: refused(gina.delete(f"/event-streams/{s}")),
        ("POST", f"/event-streams/{STREAM}/rotate-secret"): lambda: refused(
            gina.post(f"/event-streams/{s}/rotate-secret")
        ),
        ("POST", f"/event-streams/{STREAM}/resume"): lambda: refused(
            gina.post(f"/event-streams/{s}/resume")
        ),
        ("POST", f"/event-streams/{STREAM}/replay"): lambda: refused(
            gina.post(f"/event-streams/{s}/replay", json={"from_audit_id": 1})
        ),
    }
    routes = admin_routes(server)
    assert not routes - set(cases), f"admin routes without an isolation case: {routes - set(cases)}"
    assert not set(cases) - routes, f"cases for routes that do not exist: {set(cases) - routes}"
    for case in cases.values():
        case()
    assert database_state(server) == before
    assert root.get(f"/reviews/campaigns/{review['id']}").json()["progress"]["undecided"] == 1
    # And the same identity does see its own workspace.
    assert gina.get("/workspaces/globex").status_code == 200
