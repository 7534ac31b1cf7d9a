"""Company directories in the console, through real HTTP: an acme admin connects a
directory (the token shown once), the directory provisions people and a mapped group
over SCIM, and the connection's page shows them with their roles and where each came
from; a deactivation shows and denies at once."""

from __future__ import annotations

import re

from tests.console_support import sign_in
from tests.functional.test_directory import (
    GROUP_SCHEMA,
    PATCH_OP,
    SCIM,
    created,
    scim_client,
    scim_user,
)
from tests.helpers import PASSWORD, LiveServer, allowed, create_workspaces, invite_and_accept


def test_an_admin_connects_a_directory_and_watches_it_provision(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    invite_and_accept(server, root, "ann@acme.example.com", "Ann", [("acme", "admin")])
    console = sign_in(server, "ann@acme.example.com", PASSWORD)
    page = console.get("/console/directory")
    assert page.status_code == 200 and 'value="acme"' in page.text
    assert 'value="globex"' not in page.text  # only where she holds directory:manage
    made = console.post(
        "/console/directory",
        {"workspace": "acme", "name": "Okta", "group_roles": "Engineering = editor\n"},
    )
    assert made.status_code == 201, made.text
    token = re.search(r'id="directory-token">([^<]+)<', made.text)
    assert token and token.group(1).startswith("rfd_")
    connection = re.search(r"/console/directory/(\d+)/roles", made.text)
    assert connection
    page_url = f"/console/directory/{connection.group(1)}"
    assert token.group(1) not in console.get(page_url).text  # shown once

    with scim_client(server, token.group(1)) as acme:
        ada = created(acme, scim_user("ada@example.com"))
        created(
            acme,
            {
                "schemas": [GROUP_SCHEMA],
                "displayName": "engineering",
                "members": [{"value": ada["id"]}],
            },
            "Groups",
        )
        shown = console.get(page_url).text
        assert "ada@example.com" in shown and "editor</span> (directory)" in shown
        assert "engineering" in shown
        assert allowed(server, "ada@example.com", "acme", "write")
        # Her page says where the role came from.
        [account] = root.get("/users", params={"q": "ada@"}).json()
        person = console.get(f"/console/users/{account['id']}").text
        assert "The company directory (SCIM)" in person
        off = acme.patch(
            f"{SCIM}/Users/{ada['id']}",
            json={
                "schemas": [PATCH_OP],
                "Operations": [{"op": "replace", "value": {"active": False}}],
            },
        )
        assert off.status_code in (200, 204), off.text
    assert not allowed(server, "ada@example.com", "acme", "read")
    assert "no: deactivated" in console.get(page_url).text
    # The mapping from the console: the group's role follows for its members at once.
    saved = console.post(f"{page_url}/roles", {"group_roles": "engineering = viewer"})
    assert saved.status_code == 200 and "engineering = viewer" in saved.text
    escalating = console.post(f"{page_url}/roles", {"group_roles": "engineering = owner"})
    assert escalating.status_code == 403
    revoked = console.post(f"{page_url}/revoke")
    assert revoked.status_code == 200 and "revoked" in revoked.text
