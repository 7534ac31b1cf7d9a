"""Workspace isolation in the web console, walked route by route: an admin of globex,
signed in to the console, can neither see nor change anything of acme. Every console
route must have a case here (the test fails otherwise), like the admin API's walk in
test_isolation.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from gateway.db.models import utcnow
from tests.console_support import sign_in
from tests.functional.test_console_invite_many import outcomes
from tests.functional.test_isolation import database_state
from tests.functional.test_workspace_sso import add_connection_row, add_link_row
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
# The second step of signing in, and the person's own second factor (test_console_mfa.py).
PUBLIC |= {("GET", "/console/sign-in/code"), ("POST", "/console/sign-in/code")}
PUBLIC |= {("GET", "/console/account/two-step")}
PUBLIC |= {
    ("POST", f"/console/account/two-step/{p}")
    for p in ("start", "confirm", "recovery-codes", "remove")
}
# One's own remembered browsers (test_console_remembered_devices.py: another person's
# browser id is a 404).
PUBLIC |= {
    ("POST", f"/console/account/two-step/browsers{p}")
    for p in ("/<int(max=2147483647):device_id>/forget", "/forget-all")
}
# One's own passkeys (test_passkeys.py: another person's passkey id is a 404), and the
# passkey sign-in ceremonies, signed out by their nature.
PUBLIC |= {("GET", "/console/account/passkeys")}
PUBLIC |= {
    ("POST", f"/console/account/passkeys{p}")
    for p in ("", "/options", "/<int(max=2147483647):passkey_id>/remove")
}
PUBLIC |= {("GET", "/console/account/passkeys/<int(max=2147483647):passkey_id>/remove")}
PUBLIC |= {("POST", "/console/account/confirm/passkey-options")}
PUBLIC |= {
    ("POST", f"/console/sign-in{p}")
    for p in ("/passkey/options", "/passkey", "/code/passkey/options", "/code/passkey")
}
# Forgot your password? (test_console_forgot_password.py): signed out, by its nature.
PUBLIC |= {("GET", "/console/forgot-password"), ("POST", "/console/forgot-password")}
# One's own password (test_console_account.py: it takes no one else's id).
PUBLIC |= {("POST", "/console/account/password")}
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
    deadline = (utcnow() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    review = root.post(
        "/reviews/campaigns",
        json={"name": "Acme review", "workspace": "acme", "deadline": deadline},
    ).json()["id"]
    item = root.get(f"/reviews/campaigns/{review}/items").json()[0]["id"]
    directory = root.post("/directory-connections", json={"workspace": "acme", "name": "Okta"})
    dc = directory.json()["connection"]["id"]
    es = root.post(
        "/event-streams",
        json={
            "workspace": "acme",
            "name": "Acme SIEM",
            "kind": "file",
            "target": "acme.jsonl",
            "event_types": ["*"],
        },
    ).json()["stream"]["id"]
    acme_sso = add_connection_row(server.settings, "acme")
    add_link_row(server.settings, acme_sso, eve, "idp-eve")
    # globex's own, with Eve (no role in globex) linked to it too: not Gina's to see.
    add_link_row(server.settings, add_connection_row(server.settings, "globex"), eve, "idp-e")
    claim = root.post("/sso-domains", json={"workspace": "acme", "domain": "acme-corp.test"})
    dom = claim.json()["id"]
    stream_page = "/console/event-streams/<int(max=2147483647):stream_id>"
    auditor = {"name": "auditor", "permissions": ["audit:read"]}
    assert root.post("/workspaces/acme/custom-roles", json=auditor).status_code == 201
    before = database_state(server)

    def refused(response: httpx.Response) -> None:
        assert response.status_code in (403, 404), (response.request.url, response.text[:500])

    def invisible(response: httpx.Response) -> None:
        assert response.status_code == 200, (response.request.url, response.text[:500])
        for name in ACME:
            assert name not in response.text, (response.request.url, name)

    def invisible_addresses(response: httpx.Response) -> None:
        # For pages whose own words hold a name ("Everyone"): acme's slug and addresses.
        assert response.status_code == 200, (response.request.url, response.text[:500])
        for secret in ACME[:3]:
            assert secret not in response.text, (response.request.url, secret)

    def not_sent(response: httpx.Response) -> None:
        assert response.status_code == 200, response.text[:500]
        assert "Sent 0 invitations" in response.text
        acme, nowhere = outcomes(response.text).values()
        assert acme.replace("acme", "X") == nowhere.replace("none", "X"), (acme, nowhere)

    u, i = eve, pending["id"]
    user = "/console/users/<int(max=2147483647):user_id>"
    invitation = "/console/invitations/<int(max=2147483647):invitation_id>"
    campaign = "/console/reviews/<int(max=2147483647):campaign_id>"
    member = "/console/workspaces/<slug>/members/<int(max=2147483647):user_id>"
    connection = "/console/directory/<int(max=2147483647):connection_id>"
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
        # The confirmations before deactivating and revoking, and inviting again
        # (test_console_confirmations.py compares them with unknown ids).
        ("GET", f"{user}/deactivate"): lambda: refused(gina.get(f"/console/users/{u}/deactivate")),
        ("GET", f"{invitation}/revoke"): lambda: refused(
            gina.get(f"/console/invitations/{i}/revoke")
        ),
        ("POST", f"{invitation}/invite-again"): lambda: refused(
            gina.post(f"/console/invitations/{i}/invite-again")
        ),
        ("GET", f"{member}/deactivate"): lambda: refused(
            gina.get(f"/console/workspaces/acme/members/{u}/deactivate")
        ),
        ("POST", f"{user}/reactivate"): lambda: refused(
            gina.post(f"/console/users/{u}/reactivate")
        ),
        ("GET", user): lambda: refused(gina.get(f"/console/users/{u}")),
        # Resetting a person's two-step sign-in, and accepting an invitation that is not
        # hers (test_console_account.py compares them with unknown ids).
        ("GET", f"{user}/two-step/reset"): lambda: refused(
            gina.get(f"/console/users/{u}/two-step/reset")
        ),
        ("POST", f"{user}/two-step/reset"): lambda: refused(
            gina.post(f"/console/users/{u}/two-step/reset")
        ),
        ("POST", "/console/account/invitations/<int(max=2147483647):invitation_id>/accept"): (
            lambda: refused(gina.post(f"/console/account/invitations/{i}/accept"))
        ),
        ("GET", "/console/users/bulk"): lambda: invisible_addresses(
            gina.get("/console/users/bulk", params={"action": "deactivate", "user": [u]})
        ),
        ("POST", "/console/users/bulk"): lambda: refused(
            gina.post("/console/users/bulk", {"action": "deactivate", "user": [u]})
        ),
        ("GET", "/console/users/invite-many"): lambda: invisible(
            gina.get("/console/users/invite-many")
        ),
        # Acme's person into acme, by name: not sent, in the words of a workspace that
        # does not exist (only what Gina typed comes back).
        ("POST", "/console/users/invite-many"): lambda: not_sent(
            gina.post(
                "/console/users/invite-many",
                {
                    "action": "send",
                    "rows": "Eve, eve@example.com, acme:viewer\nEve, eve2@example.com, none:viewer",
                },
            )
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
        # Acme's custom roles: the 404 of a workspace that does not exist.
        ("GET", "/console/workspaces/<slug>/roles"): lambda: refused(
            gina.get("/console/workspaces/acme/roles")
        ),
        ("POST", "/console/workspaces/<slug>/roles"): lambda: refused(
            gina.post(
                "/console/workspaces/acme/roles", {"name": "mine", "permissions": ["audit:read"]}
            )
        ),
        ("POST", "/console/workspaces/<slug>/roles/<name>"): lambda: refused(
            gina.post("/console/workspaces/acme/roles/auditor", {"permissions": ["users:read"]})
        ),
        ("POST", "/console/workspaces/<slug>/roles/<name>/delete"): lambda: refused(
            gina.post("/console/workspaces/acme/roles/auditor/delete")
        ),
        ("POST", "/console/workspaces"): lambda: refused(
            gina.post("/console/workspaces", {"slug": "acme2", "name": "Acme 2"})
        ),
        ("GET", "/console/workspaces/<slug>"): lambda: refused(
            gina.get("/console/workspaces/acme")
        ),
        ("POST", "/console/workspaces/<slug>/rename"): lambda: refused(
            gina.post("/console/workspaces/acme/rename", {"name": "Mine"})
        ),
        ("GET", "/console/workspaces/<slug>/delete"): lambda: refused(
            gina.get("/console/workspaces/acme/delete")
        ),
        ("POST", "/console/workspaces/<slug>/delete"): lambda: refused(
            gina.post("/console/workspaces/acme/delete", {"confirm": "acme"})
        ),
        ("POST", "/console/workspaces/<slug>/mfa-policy"): lambda: refused(
            gina.post("/console/workspaces/acme/mfa-policy", {"required": "off"})
        ),
        ("POST", f"{member}/deactivate"): lambda: refused(
            gina.post(f"/console/workspaces/acme/members/{u}/deactivate")
        ),
        ("POST", f"{member}/reactivate"): lambda: refused(
            gina.post(f"/console/workspaces/acme/members/{u}/reactivate")
        ),
        ("GET", f"{member}/take-out"): lambda: refused(
            gina.get(f"/console/workspaces/acme/members/{u}/take-out")
        ),
        ("POST", f"{member}/take-out"): lambda: refused(
            gina.post(f"/console/workspaces/acme/members/{u}/take-out")
        ),
        ("GET", "/console/roles"): lambda: invisible(gina.get("/console/roles")),
        ("GET", "/console/audit"): lambda: invisible(
            gina.get("/console/audit", params={"workspace": "acme"})
        ),
        ("GET", "/console/reviews"): lambda: invisible(gina.get("/console/reviews")),
        ("POST", "/console/reviews"): lambda: refused(
            gina.post("/console/reviews", {"name": "X", "workspace": "acme", "deadline": deadline})
        ),
        ("GET", "/console/reviews/queue"): lambda: invisible(gina.get("/console/reviews/queue")),
        ("POST", "/console/reviews/queue/keep"): lambda: refused(
            gina.post("/console/reviews/queue/keep", {"item": [str(item)]})
        ),
        ("GET", f"{campaign}"): lambda: refused(gina.get(f"/console/reviews/{review}")),
        ("GET", f"{campaign}/close"): lambda: refused(gina.get(f"/console/reviews/{review}/close")),
        ("POST", f"{campaign}/close"): lambda: refused(
            gina.post(f"/console/reviews/{review}/close")
        ),
        ("POST", "/console/reviews/items/<int(max=2147483647):item_id>/decision"): lambda: refused(
            gina.post(f"/console/reviews/items/{item}/decision", {"decision": "keep"})
        ),
        ("GET", "/console/reports"): lambda: invisible_addresses(gina.get("/console/reports")),
        ("GET", "/console/reports/<name>"): lambda: invisible_addresses(
            gina.get("/console/reports/admins")
        ),
        # Company directories: acme's connection is not there for her (globex's owner).
        ("GET", "/console/directory"): lambda: invisible(gina.get("/console/directory")),
        ("POST", "/console/directory"): lambda: refused(
            gina.post("/console/directory", {"workspace": "acme", "name": "Mine"})
        ),
        ("GET", connection): lambda: refused(gina.get(f"/console/directory/{dc}")),
        ("POST", f"{connection}/rotate-token"): lambda: refused(
            gina.post(f"/console/directory/{dc}/rotate-token")
        ),
        ("POST", f"{connection}/revoke"): lambda: refused(
            gina.post(f"/console/directory/{dc}/revoke")
        ),
        ("POST", f"{connection}/roles"): lambda: refused(
            gina.post(f"/console/directory/{dc}/roles", {"group_roles": "it = viewer"})
        ),
        # The chain's checkpoints are super admins' (test_console_checkpoints.py).
        ("GET", "/console/audit/checkpoints"): lambda: refused(
            gina.get("/console/audit/checkpoints")
        ),
        ("POST", "/console/audit/checkpoints"): lambda: refused(
            gina.post("/console/audit/checkpoints")
        ),
        ("GET", "/console/audit/export"): lambda: invisible(
            gina.get("/console/audit/export", params={"format": "csv", "workspace": "acme"})
        ),
        ("GET", "/console/event-streams"): lambda: invisible(gina.get("/console/event-streams")),
        ("POST", "/console/event-streams"): lambda: refused(
            gina.post(
                "/console/event-streams",
                {
                    "workspace": "acme",
                    "name": "Mine",
                    "kind": "file",
                    "target": "mine.jsonl",
                    "event_types": "*",
                },
            )
        ),
        ("GET", stream_page): lambda: refused(gina.get(f"/console/event-streams/{es}")),
        ("POST", f"{stream_page}/edit"): lambda: refused(
            gina.post(
                f"/console/event-streams/{es}/edit",
                {"name": "Mine", "target": "mine.jsonl", "event_types": "*"},
            )
        ),
        ("POST", f"{stream_page}/resume"): lambda: refused(
            gina.post(f"/console/event-streams/{es}/resume")
        ),
        ("POST", f"{stream_page}/replay"): lambda: refused(
            gina.post(f"/console/event-streams/{es}/replay", {"from_audit_id": "1"})
        ),
        ("POST", f"{stream_page}/rotate-secret"): lambda: refused(
            gina.post(f"/console/event-streams/{es}/rotate-secret")
        ),
        ("POST", f"{stream_page}/delete"): lambda: refused(
            gina.post(f"/console/event-streams/{es}/delete")
        ),
        # A workspace's own single sign-on: acme's answers as a workspace that does not
        # exist; her page shows globex's only.
        ("GET", "/console/sso"): lambda: [
            invisible_addresses(gina.get("/console/sso")),
            refused(gina.get("/console/sso", params={"workspace": "acme"})),
        ],
        ("POST", "/console/sso/<slug>/connection"): lambda: refused(
            gina.post(
                "/console/sso/acme/connection",
                {"name": "Mine", "issuer": "https://idp.example", "client_id": "mine"},
            )
        ),
        ("POST", "/console/sso/<slug>/connection/check"): lambda: refused(
            gina.post("/console/sso/acme/connection/check")
        ),
        ("GET", "/console/sso/<slug>/links/<int(max=2147483647):user_id>/unlink"): lambda: [
            refused(gina.get(f"/console/sso/{ws}/links/{u}/unlink")) for ws in ("acme", "globex")
        ],
        ("POST", "/console/sso/<slug>/links/<int(max=2147483647):user_id>/unlink"): lambda: [
            refused(gina.post(f"/console/sso/{ws}/links/{u}/unlink")) for ws in ("acme", "globex")
        ],
        ("POST", "/console/sso/<slug>/domains"): lambda: refused(
            gina.post("/console/sso/acme/domains", {"domain": "mine.test"})
        ),
        ("POST", "/console/sso/domains/<int(max=2147483647):domain_id>/verify"): lambda: refused(
            gina.post(f"/console/sso/domains/{dom}/verify")
        ),
        ("POST", "/console/sso/domains/<int(max=2147483647):domain_id>/delete"): lambda: refused(
            gina.post(f"/console/sso/domains/{dom}/delete")
        ),
        ("GET", "/console/settings"): lambda: refused(gina.get("/console/settings")),
        ("POST", "/console/settings/email"): lambda: refused(
            gina.post("/console/settings/email", {"smtp_host": "evil.example"})
        ),
        ("POST", "/console/settings/email/test"): lambda: refused(
            gina.post("/console/settings/email/test", {"to": "gina@example.com"})
        ),
        ("POST", "/console/settings/email/try"): lambda: refused(
            gina.post(
                "/console/settings/email/try",
                {"smtp_host": "127.0.0.1", "smtp_security": "none", "try_to": "gina@example.com"},
            )
        ),
        ("GET", "/console/settings/sso"): lambda: refused(gina.get("/console/settings/sso")),
        ("POST", "/console/settings/sso/check"): lambda: refused(
            gina.post("/console/settings/sso/check")
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
