"""Tenant walls with other tenants' *people*: the globex admin calls every admin endpoint
that names a person or an invitation, inside globex (her own workspace), with the ids and
emails of acme's people, the super admin and an acme invitee. Each answer must be the
answer for an id that does not exist, and nothing may change. Reaching someone outside
her workspaces takes an invitation that the person accepts."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.console_support import sign_in
from tests.functional.test_isolation import database_state
from tests.functional.test_workspace_sso import add_connection_row, add_link_row
from tests.helpers import (
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
    post_invitation,
    user_id_of,
)

UNKNOWN_ID = 2_000_000_000
USER_ROUTE = "<int(max=2147483647):user_id>"
INVITATION_ROUTE = "<int(max=2147483647):invitation_id>"


def routes_naming(server: LiveServer, fragment: str) -> set[tuple[str, str]]:
    """(method, rule) of every route whose rule contains ``fragment``."""
    return {
        (method, rule.rule)
        for rule in server.app.url_map.iter_rules()
        if fragment in rule.rule
        for method in rule.methods or ()
        if method not in {"HEAD", "OPTIONS"}
    }


def api_routes_naming(server: LiveServer, fragment: str) -> set[tuple[str, str]]:
    """:func:`routes_naming` without the console's (walked on their own below)."""
    return {(m, r) for m, r in routes_naming(server, fragment) if not r.startswith("/console")}


def answer(response: httpx.Response, *ids: int) -> tuple[int, Any]:
    """Status and body with the ids asked about (and invitation ids) blanked."""
    text = response.text
    for value in ids:
        text = re.sub(rf"\b{value}\b", "N", text)
    return response.status_code, text


def test_another_workspaces_people_answer_like_unknown_ids(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    olive = onboard(server, root, "olive@example.com", "Olive", [("acme", "owner")])
    eve = onboard(server, root, "eve@example.com", "Eve", [("acme", "editor")])
    acme_invite = invite(root, "pat@example.com", [("acme", "viewer")], "Pat")
    pat = user_id_of(root, "pat@example.com")
    gina_id, gina = invite_and_accept(
        server, root, "gina@example.com", "Gina", [("globex", "admin")]
    )
    super_admin = user_id_of(root, "admin@example.com")
    outsiders = {"olive": olive, "eve": eve, "pat": pat, "super admin": super_admin}
    # globex's single sign-on, which its owner Otto manages; Eve linked to it as if she
    # had signed on through it (she holds no role in globex).
    otto_id, otto = invite_and_accept(
        server, root, "otto@example.com", "Otto", [("globex", "owner")]
    )
    globex_sso = add_connection_row(server.settings, "globex")
    add_link_row(server.settings, globex_sso, eve, "idp-eve")
    add_link_row(server.settings, globex_sso, otto_id, "idp-otto")
    before = database_state(server)

    # Every admin route that names a person, in globex, as Gina may in her own workspace.
    calls: dict[tuple[str, str], Any] = {
        ("GET", f"/users/{USER_ROUTE}"): lambda u: gina.get(f"/users/{u}"),
        ("DELETE", f"/users/{USER_ROUTE}"): lambda u: gina.delete(f"/users/{u}"),
        ("POST", f"/users/{USER_ROUTE}/deactivate"): lambda u: gina.post(f"/users/{u}/deactivate"),
        ("POST", f"/users/{USER_ROUTE}/reactivate"): lambda u: gina.post(f"/users/{u}/reactivate"),
        ("POST", f"/users/{USER_ROUTE}/mfa/reset"): lambda u: gina.post(f"/users/{u}/mfa/reset"),
        ("PUT", f"/users/{USER_ROUTE}/workspaces/<workspace>/roles"): lambda u: gina.put(
            f"/users/{u}/workspaces/globex/roles", json={"roles": ["viewer"]}
        ),
        ("POST", f"/users/{USER_ROUTE}/grants"): lambda u: gina.post(
            f"/users/{u}/grants", json={"workspace": "globex", "role": "viewer"}
        ),
        ("DELETE", f"/users/{USER_ROUTE}/grants/<workspace>/<role>"): lambda u: gina.delete(
            f"/users/{u}/grants/globex/viewer"
        ),
        (
            "DELETE",
            f"/sso-connections/<int(max=2147483647):connection_id>/links/{USER_ROUTE}",
        ): lambda u: otto.delete(f"/sso-connections/{globex_sso}/links/{u}"),
    }
    routes = api_routes_naming(server, USER_ROUTE)
    assert routes == set(calls), f"person routes without a wall case: {routes ^ set(calls)}"
    for route, call in calls.items():
        expected = answer(call(UNKNOWN_ID), UNKNOWN_ID)
        assert expected[0] == 404, (route, expected)
        for who, user_id in outsiders.items():
            assert answer(call(user_id), user_id) == expected, (route, who)

    # Listing, searching and the audit trail do not find them either.
    for who, user_id in outsiders.items():
        email = {"super admin": "admin@example.com"}.get(who, f"{who}@example.com")
        assert gina.get("/users", params={"q": email}).json() == [], who
        assert (
            gina.get("/audit", params={"target_type": "user", "target_id": user_id}).json() == []
        ), who
        if who != "super admin":  # who did act in globex: invited Gina
            assert gina.get("/audit", params={"actor_id": user_id}).json() == [], who

    # acme's invitation answers like one that does not exist, accepting it too.
    invitation_calls = {
        ("GET", f"/invitations/{INVITATION_ROUTE}"): lambda i: gina.get(f"/invitations/{i}"),
        ("POST", f"/invitations/{INVITATION_ROUTE}/resend"): lambda i: gina.post(
            f"/invitations/{i}/resend"
        ),
        ("POST", f"/invitations/{INVITATION_ROUTE}/revoke"): lambda i: gina.post(
            f"/invitations/{i}/revoke"
        ),
        ("POST", f"/invitations/{INVITATION_ROUTE}/accept"): lambda i: gina.post(
            f"/invitations/{i}/accept"
        ),
    }
    routes = api_routes_naming(server, INVITATION_ROUTE)
    assert routes == set(invitation_calls), routes ^ set(invitation_calls)
    for route, call in invitation_calls.items():
        expected = answer(call(UNKNOWN_ID), UNKNOWN_ID)
        assert expected[0] == 404, (route, expected)
        assert answer(call(acme_invite["id"]), acme_invite["id"]) == expected, route

    assert database_state(server) == before
    assert not allowed(server, "eve@example.com", "globex")
    assert gina_id not in outsiders.values()
    # Otto's own person's link is his to see (and so the case above was not a 404 for
    # want of the right).
    links = otto.get(f"/sso-connections/{globex_sso}/links").json()
    assert [x["user_id"] for x in links] == [otto_id]


def test_inviting_an_address_never_tells_whether_it_has_an_account(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    onboard(server, root, "eve@example.com", "Eve", [("acme", "editor")])
    invite(root, "pat@example.com", [("acme", "viewer")], "Pat")  # pending in acme
    deactivated = onboard(server, root, "dan@example.com", "Dan", [("acme", "viewer")])
    assert root.post(f"/users/{deactivated}/deactivate").status_code == 200
    _, gina = invite_and_accept(server, root, "gina@example.com", "Gina", [("globex", "admin")])

    def shape(response: httpx.Response) -> tuple[int, dict[str, Any]]:
        body = response.json()
        for key in ("id", "email", "created_at", "expires_at", "delivery"):
            body.pop(key, None)
        return response.status_code, body

    newest_before = max(u["id"] for u in root.get("/users", params={"page_size": 100}).json())
    sent = len(outbox_messages(server.settings))
    new = shape(post_invitation(gina, "nobody@example.com", [("globex", "viewer")], "X"))
    assert new[0] == 201 and new[1]["user_id"] is None
    for email in ("eve@example.com", "pat@example.com", "dan@example.com", "admin@example.com"):
        assert shape(post_invitation(gina, email, [("globex", "viewer")], "X")) == new, email
    # Each got an email, as a new address does; nobody gained anything yet.
    assert len(outbox_messages(server.settings)) == sent + 5
    assert not allowed(server, "eve@example.com", "globex")
    # Gina sees each as the pending person she invited, alike: her name for them, her
    # roles, a new id, and nothing of an account (status, sign-ins, other workspaces).
    for email in ("nobody@example.com", "eve@example.com", "pat@example.com", "dan@example.com"):
        [person] = gina.get("/users", params={"q": email}).json()
        assert person["id"] > newest_before, email  # hers, made by her invitation
        assert person["status"] == "pending" and person["name"] == "X", email
        assert person["roles"] == {"globex": ["viewer"]} and person["grants"] == [], email
        assert person["last_login_at"] is None and person["workspaces_last_seen"] == {}, email

    # Eve accepts with the link: now she is in globex, and visible there.
    eve_mail = next(
        m for m in outbox_messages(server.settings)[sent:] if m["To"].addresses[0].username == "eve"
    )
    assert accept_invitation(server, accept_token(eve_mail), PASSWORD).status_code == 200
    assert allowed(server, "eve@example.com", "globex")
    [eve] = gina.get("/users", params={"q": "eve"}).json()
    assert eve["roles"] == {"globex": ["viewer"]}  # and nothing of acme


def test_the_console_walls_hold_with_other_workspaces_people(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    olive = onboard(server, root, "olive@example.com", "Olive", [("acme", "owner")])
    acme_invite = invite(root, "pat@example.com", [("acme", "viewer")], "Pat")
    pat = user_id_of(root, "pat@example.com")
    super_admin = user_id_of(root, "admin@example.com")
    invite_and_accept(server, root, "gina@example.com", "Gina", [("globex", "owner")])
    gina = sign_in(server, "gina@example.com", PASSWORD)
    before = database_state(server)

    person = "/console/users/<int(max=2147483647):user_id>"
    calls: dict[tuple[str, str], Any] = {
        ("GET", person): lambda u: gina.get(f"/console/users/{u}"),  # a person's page
        ("POST", f"{person}/deactivate"): lambda u: gina.post(f"/console/users/{u}/deactivate"),
        ("GET", f"{person}/deactivate"): lambda u: gina.get(f"/console/users/{u}/deactivate"),
        ("POST", f"{person}/reactivate"): lambda u: gina.post(f"/console/users/{u}/reactivate"),
        ("GET", f"{person}/remove"): lambda u: gina.get(f"/console/users/{u}/remove"),
        ("POST", f"{person}/remove"): lambda u: gina.post(f"/console/users/{u}/remove"),
        ("GET", f"{person}/two-step/reset"): lambda u: gina.get(
            f"/console/users/{u}/two-step/reset"
        ),
        ("POST", f"{person}/two-step/reset"): lambda u: gina.post(
            f"/console/users/{u}/two-step/reset"
        ),
        ("GET", f"{person}/roles"): lambda u: gina.get(f"/console/users/{u}/roles"),
        ("POST", f"{person}/roles/<workspace>/preview"): lambda u: gina.post(
            f"/console/users/{u}/roles/globex/preview", {"roles": ["viewer"]}
        ),
        ("POST", f"{person}/roles/<workspace>"): lambda u: gina.post(
            f"/console/users/{u}/roles/globex", {"roles": ["viewer"]}
        ),
    }
    routes = routes_naming(server, person)
    assert routes == set(calls), routes ^ set(calls)
    for route, call in calls.items():
        unknown = call(UNKNOWN_ID)
        assert unknown.status_code == 404, (route, unknown.text[:300])
        for who, user_id in {"olive": olive, "pat": pat, "super admin": super_admin}.items():
            response = call(user_id)
            assert response.status_code == unknown.status_code, (route, who)
            for secret in ("olive@", "Olive", "pat@", "Pat", "admin@example.com", "acme"):
                assert secret not in response.text, (route, who, secret)
    for action in ("resend", "revoke", "invite-again"):
        unknown = gina.post(f"/console/invitations/{UNKNOWN_ID}/{action}")
        foreign = gina.post(f"/console/invitations/{acme_invite['id']}/{action}")
        assert foreign.status_code == unknown.status_code == 404, action
    unknown = gina.get(f"/console/invitations/{UNKNOWN_ID}/revoke")  # the confirmation
    foreign = gina.get(f"/console/invitations/{acme_invite['id']}/revoke")
    assert foreign.status_code == unknown.status_code == 404
    assert database_state(server) == before


def test_another_workspaces_event_streams_answer_like_unknown_ids(server: LiveServer) -> None:
    """Gina, admin of globex with her own stream, calls every stream route with the ids
    of acme's stream and of the installation-wide one: each answer is the unknown id's."""
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    _, gina = invite_and_accept(server, root, "gina@example.com", "Gina", [("globex", "admin")])
    body = {"name": "SIEM", "kind": "file", "event_types": ["*"]}
    ids = {
        where: root.post(
            "/event-streams", json={**body, "workspace": where, "target": f"{name}.jsonl"}
        ).json()["stream"]["id"]
        for where, name in (("acme", "acme"), ("*", "all"))
    }
    own = gina.post("/event-streams", json={**body, "workspace": "globex", "target": "g.jsonl"})
    assert own.status_code == 201, own.text
    before = database_state(server)
    stream = "<int(max=2147483647):stream_id>"
    calls: dict[tuple[str, str], Any] = {
        ("GET", f"/event-streams/{stream}"): lambda s: gina.get(f"/event-streams/{s}"),
        ("PATCH", f"/event-streams/{stream}"): lambda s: gina.patch(
            f"/event-streams/{s}", json={"name": "Mine"}
        ),
        ("DELETE", f"/event-streams/{stream}"): lambda s: gina.delete(f"/event-streams/{s}"),
        ("POST", f"/event-streams/{stream}/rotate-secret"): lambda s: gina.post(
            f"/event-streams/{s}/rotate-secret"
        ),
        ("POST", f"/event-streams/{stream}/resume"): lambda s: gina.post(
            f"/event-streams/{s}/resume"
        ),
        ("POST", f"/event-streams/{stream}/replay"): lambda s: gina.post(
            f"/event-streams/{s}/replay", json={"from_audit_id": 1}
        ),
    }
    routes = api_routes_naming(server, stream)
    assert routes == set(calls), f"stream routes without a wall case: {routes ^ set(calls)}"
    for route, call in calls.items():
        expected = answer(call(UNKNOWN_ID), UNKNOWN_ID)
        assert expected[0] == 404, (route, expected)
        for where, stream_id in ids.items():
            assert answer(call(stream_id), stream_id) == expected, (route, where)
    assert [s["id"] for s in gina.get("/event-streams").json()] == [own.json()["stream"]["id"]]
    assert database_state(server) == before
