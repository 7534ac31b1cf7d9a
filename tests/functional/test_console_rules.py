"""The console offers what the services decide, through real HTTP: the audit filter's
target types are the services' registry, an invitation's buttons are exactly what the
invitation service would carry out, and the invite form lets an admin tick exactly the
roles the API would let them grant."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest

from gateway.services.base import AuditTarget
from tests.console_support import Console, sign_in
from tests.helpers import (
    ADMIN_EMAIL,
    PASSWORD,
    LiveServer,
    create_client,
    create_workspaces,
    invite,
    invite_and_accept,
    onboard,
    post_invitation,
    set_invitation_expiry,
    user_id_of,
)

BUTTONS = {"resend": "Resend invitation", "revoke": "Revoke invitation"}


@pytest.fixture
def root(server: LiveServer) -> Iterator[Console]:
    with server.admin() as admin:
        create_workspaces(admin, "acme", "globex")
    console = sign_in(server, ADMIN_EMAIL, server.admin_password)
    yield console
    console.close()


def test_the_audit_filter_offers_every_type_the_services_write(
    server: LiveServer, root: Console
) -> None:
    page = root.get("/console/audit").text
    select = re.search(r'<select id="a-target-type" name="target_type">(.*?)</select>', page, re.S)
    assert select is not None
    offered = re.findall(r'<option value="([^"]+)"', select.group(1))
    assert offered == [t.value for t in AuditTarget]
    # One of the types the filter used to miss: its events are found by it now.
    create_client(server.settings, "decisions:check", name="billing")
    found = root.get("/console/audit", params={"target_type": "oauth_client"}).text
    # The results only (the action filter's suggestions name every action).
    results = found.split('<div id="audit-results">', 1)[1]
    assert "client.created" in results and "1 event" in results
    assert "workspace.created" not in results


def _offered(console: Console, email: str, person: int | None) -> set[str]:
    """The invitation buttons on the person's row (none if the row is not shown)."""
    page = console.get("/console/users", params={"q": email}).text
    row = re.search(rf'<tr id="user-{person}">(.*?)</tr>', page, re.S)
    return {action for action, label in BUTTONS.items() if row and label in row.group(1)}


@pytest.mark.parametrize("who", ["root", "acme admin"])
def test_invitation_buttons_are_what_the_service_allows(
    server: LiveServer, root: Console, who: str
) -> None:
    root_api = server.admin()
    if who == "root":
        console, api = root, root_api
    else:
        _, api = invite_and_accept(
            server, root_api, "adam@example.com", "Adam", [("acme", "admin")]
        )
        console = sign_in(server, "adam@example.com", PASSWORD)
    states = {
        "live": [("acme", "viewer")],
        "expired": [("acme", "viewer")],
        "revoked": [("acme", "viewer")],
        "two workspaces": [("acme", "viewer"), ("globex", "viewer")],
    }
    # Two people per state: one to resend, the other to revoke (either changes it).
    invitations: dict[tuple[str, str], tuple[int, str]] = {}
    for state, roles in states.items():
        for action in BUTTONS:
            email = f"{action}-{state.replace(' ', '-')}@example.com"
            invitation = invite(root_api, email, roles)
            if state == "expired":
                set_invitation_expiry(server, invitation["id"], timedelta(days=-1))
            if state == "revoked":
                revoked = root_api.post(f"/invitations/{invitation['id']}/revoke")
                assert revoked.status_code == 200, revoked.text
            invitations[state, action] = (invitation["id"], email)

    offered = {}
    for (state, action), (_, email) in invitations.items():
        person = user_id_of(root_api, email)
        offered[state, action] = action in _offered(console, email, person)
    allowed = {}
    for (state, action), (invitation_id, _) in invitations.items():
        answer = api.post(f"/invitations/{invitation_id}/{action}")
        assert answer.status_code in (200, 403, 404, 409), answer.text
        allowed[state, action] = answer.status_code == 200
    assert offered == allowed
    # What that is, so that the comparison above is not between two empty sets.
    expected = {
        ("live", "resend"),
        ("live", "revoke"),
        ("expired", "resend"),
        *([("two workspaces", "resend"), ("two workspaces", "revoke")] if who == "root" else []),
    }
    assert {key for key, yes in allowed.items() if yes} == expected


def test_the_invite_form_offers_exactly_the_grantable_roles(
    server: LiveServer, root: Console
) -> None:
    root_api = server.admin()
    _, adam_api = invite_and_accept(
        server, root_api, "adam@example.com", "Adam", [("acme", "admin")]
    )
    adam = sign_in(server, "adam@example.com", PASSWORD)
    form = adam.get("/console/users/invite").text
    boxes = re.findall(r'<input type="checkbox" name="roles" value="acme:([^"]+)"([^>]*)>', form)
    offered = {role: "disabled" not in rest for role, rest in boxes}
    assert {"viewer", "editor", "admin", "owner"} <= set(offered)
    granted = {}
    for role in offered:
        answer = post_invitation(adam_api, f"{role}@example.com", [("acme", role)])
        assert answer.status_code in (201, 403), answer.text
        granted[role] = answer.status_code == 201
    assert offered == granted
    assert granted["admin"] and not granted["owner"]
    # The super admin may grant every role.
    root_form = root.get("/console/users/invite").text
    assert "acme:owner" in root_form and "disabled" not in root_form


# Deactivate… and Remove… lead to a confirmation (test_console_confirmations.py).
STATUS_BUTTONS = {"deactivate": ">Deactivate…<", "reactivate": ">Reactivate<", "remove": "Remove…"}


def _status_buttons(console: Console, email: str, person: int) -> set[str]:
    page = console.get("/console/users", params={"q": email}).text
    row = re.search(rf'<tr id="user-{person}">(.*?)</tr>', page, re.S)
    return {action for action, label in STATUS_BUTTONS.items() if row and label in row.group(1)}


def _carried_out(api: httpx.Client, person: int, action: str) -> bool:
    """Whether the admin API carries ``action`` out on ``person`` (it is then done)."""
    if action == "remove":
        answer = api.delete(f"/users/{person}")
    else:
        answer = api.post(f"/users/{person}/{action}")
    assert answer.status_code in (200, 204, 403, 404, 409), answer.text
    return answer.status_code in (200, 204)


def _offered_and_carried_out(
    console: Console, api: httpx.Client, people: dict[tuple[str, str], tuple[int, str]]
) -> set[tuple[str, str]]:
    """For each (case, action) of ``people``: the console offers the action exactly when
    the API then carries it out. The cases carried out."""
    offered = {
        key: key[1] in _status_buttons(console, email, person)
        for key, (person, email) in people.items()
    }
    allowed = {key: _carried_out(api, person, key[1]) for key, (person, _) in people.items()}
    assert offered == allowed
    return {key for key, yes in allowed.items() if yes}


def test_status_buttons_are_what_the_user_service_allows(server: LiveServer, root: Console) -> None:
    """Deactivate, reactivate and remove appear exactly when the API would carry them
    out: an acme admin may not take a role they could not grant (an owner's), and nobody
    may take the last owner of a workspace."""
    root_api = server.admin()
    _, adam_api = invite_and_accept(
        server, root_api, "adam@example.com", "Adam", [("acme", "admin")]
    )
    adam = sign_in(server, "adam@example.com", PASSWORD)
    # One person per (case, action), so that no action changes another's case.
    cases: dict[tuple[str, str], tuple[int, str]] = {}
    for case, role in (("owner", "owner"), ("editor", "editor"), ("deactivated", "viewer")):
        for action in STATUS_BUTTONS:
            email = f"{case}-{action}@example.com"
            person = onboard(server, root_api, email, case.title(), [("acme", role)])
            if case == "deactivated":
                assert root_api.post(f"/users/{person}/deactivate").status_code == 200
            cases[case, action] = (person, email)
    # Removing people is the owner's (policies/roles.yaml): an admin deactivates only.
    assert _offered_and_carried_out(adam, adam_api, cases) == {
        ("editor", "deactivate"),
        ("deactivated", "reactivate"),
    }
    editor_remove = {("editor", "remove"): cases["editor", "remove"]}
    assert _offered_and_carried_out(root, root_api, editor_remove) == set(editor_remove)

    # Globex's one owner: not even the super admin may take her; with a second owner, yes.
    olga = onboard(server, root_api, "olga@example.com", "Olga", [("globex", "owner")])
    last = {("last owner", a): (olga, "olga@example.com") for a in ("deactivate", "remove")}
    assert _offered_and_carried_out(root, root_api, last) == set()
    onboard(server, root_api, "otto@example.com", "Otto", [("globex", "owner")])
    second = {("one of two", "deactivate"): (olga, "olga@example.com")}
    assert _offered_and_carried_out(root, root_api, second) == {("one of two", "deactivate")}


def test_the_roles_panel_offers_exactly_the_grantable_roles(
    server: LiveServer, root: Console
) -> None:
    """An acme admin's roles panel lets them tick only roles they could grant; a role the
    person holds beyond that stays held when they save (a disabled box is not sent)."""
    root_api = server.admin()
    _, adam_api = invite_and_accept(
        server, root_api, "adam@example.com", "Adam", [("acme", "admin")]
    )
    adam = sign_in(server, "adam@example.com", PASSWORD)
    eve = onboard(server, root_api, "eve@example.com", "Eve", [("acme", "viewer")])
    olga = onboard(server, root_api, "olga@example.com", "Olga", [("acme", "owner")])

    panel = adam.get(f"/console/users/{eve}/roles").text
    boxes = re.findall(r'<input type="checkbox" name="roles" value="([^"]+)"([^>]*)>', panel)
    enabled = {role for role, rest in boxes if "disabled" not in rest}
    granted = set()
    for role, _ in boxes:
        answer = adam_api.post(f"/users/{eve}/grants", json={"workspace": "acme", "role": role})
        assert answer.status_code in (201, 403, 409), answer.text
        if answer.status_code in (201, 409):  # 409: held already
            granted.add(role)
    assert enabled == granted and "owner" not in enabled and "admin" in enabled

    # Olga's panel: owner ticked but not Adam's to take; saving with viewer added keeps it.
    panel = adam.get(f"/console/users/{olga}/roles").text
    assert re.search(r'value="owner" checked disabled', panel)
    assert '<input type="hidden" name="roles" value="owner">' in panel
    saved = adam.post(
        f"/console/users/{olga}/roles/acme",
        data={"roles": ["owner", "viewer"]},  # what the browser sends: the hidden owner too
    )
    assert saved.status_code == 200, saved.text
    roles = root_api.get(f"/users/{olga}").json()["roles"]
    assert sorted(roles["acme"]) == ["owner", "viewer"]
