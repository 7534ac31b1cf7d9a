"""A person's page in the console, through real HTTP with two tenants: roles per workspace
and where each came from, invitations and their delivery, sessions, last seen, their
audit trail; each admin sees only their own workspaces' part, and a person of another
tenant is the 404 of an unknown id, word for word."""

from __future__ import annotations

import re
from datetime import timedelta

from gateway.db.models import utcnow
from tests.console_support import sign_in
from tests.helpers import (
    ADMIN_EMAIL,
    PASSWORD,
    LiveServer,
    create_workspaces,
    invite,
    invite_and_accept,
    user_id_of,
)


def main_of(page: str) -> str:
    match = re.search(r"<main.*?</main>", page, re.S)
    assert match, page[:300]
    return match.group(0)


def test_a_persons_page_within_the_admins_workspaces(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    alice, _ = invite_and_accept(server, root, "alice@example.com", "Alice", [("acme", "admin")])
    invite_and_accept(server, root, "gina@example.com", "Gina", [("globex", "admin")])
    carol, carol_api = invite_and_accept(
        server, root, "carol@example.com", "Carol", [("acme", "viewer")]
    )
    until = (utcnow() + timedelta(days=30)).isoformat()
    given = root.post(
        f"/users/{carol}/grants",
        json={"workspace": "globex", "role": "editor", "expires_at": until},
    )
    assert given.status_code == 201, given.text
    carol_api.close()  # no sign-out: the session stays live
    pending = invite(root, "pat@example.com", [("acme", "viewer")], "Pat")
    pat = user_id_of(root, "pat@example.com")

    alice_console = sign_in(server, "alice@example.com", PASSWORD)
    changed = alice_console.post(f"/console/users/{carol}/roles/acme", {"roles": ["editor"]})
    assert changed.status_code == 200, changed.text
    # The Users table links each person to their page.
    assert f'href="/console/users/{carol}"' in alice_console.get("/console/users").text

    # -- the acme admin: acme's part only --------------------------------------------------
    page = alice_console.get(f"/console/users/{carol}")
    assert page.status_code == 200, page.text
    main = main_of(page.text)
    assert "globex" not in main and "Gina" not in main
    roles = main.split('id="roles-title"')[1].split("</table>")[0]
    assert '<td data-label="Role">editor</td>' in roles
    assert "Given by Alice" in roles  # the role change made it Alice's grant
    assert 'id="invitation-' in main and "delivery-sent" in main
    assert "Live" in main.split('id="sessions-title"')[1]
    changes = main.split('id="changes-title"')[1].split("</table>")[0]
    assert "grant.replaced" in changes and "roles in acme: viewer → editor" in changes
    assert f'href="/console/audit?target_type=user&amp;target_id={carol}"' in main

    # -- the super admin: every workspace, with the time limit and who gave it ------------
    everything = sign_in(server, ADMIN_EMAIL, server.admin_password)
    main = main_of(everything.get(f"/console/users/{carol}").text)
    globex = re.search(r"<tr>\s*<td data-label=\"Workspace\">globex</td>.*?</tr>", main, re.S)
    assert globex and "Given by Ada Admin" in globex.group(0) and "Until " in globex.group(0)
    alice_roles = main_of(everything.get(f"/console/users/{alice}").text)
    assert "Invitation #" in alice_roles and "from Ada Admin" in alice_roles
    # The super admin's own grant came from the installation's set-up, not a person.
    assert "No person: the installation" in everything.get("/console/users/1").text

    # -- a pending person: the invitation and its delivery ---------------------------------
    main = main_of(alice_console.get(f"/console/users/{pat}").text)
    assert "None yet: invited as viewer in acme." in main
    assert f'id="invitation-{pending["id"]}"' in main and "Never signed in." in main

    # -- another tenant: Alice is unknown to Gina, word for word ----------------------------
    gina = sign_in(server, "gina@example.com", PASSWORD)
    hidden, unknown = gina.get(f"/console/users/{alice}"), gina.get("/console/users/2147483647")
    assert hidden.status_code == unknown.status_code == 404
    assert f"No user {alice}" in hidden.text
    assert hidden.text.replace(f"user {alice}", "user N") == unknown.text.replace(
        "user 2147483647", "user N"
    )
    assert gina.get(f"/console/users/{pat}").status_code == 404
    # Carol is in both: Gina sees the globex half only.
    main = main_of(gina.get(f"/console/users/{carol}").text)
    assert "globex" in main and "acme" not in main and "Alice" not in main
    for console in (alice_console, everything, gina):
        console.close()
