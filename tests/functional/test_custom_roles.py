"""Custom roles (issue 20): a workspace's admins define roles for their workspace alone,
within their own permissions, in force at once, audited; the walls hold with another
tenant's people, roles and ids."""

from __future__ import annotations

from dataclasses import replace

import httpx

from gateway.app import create_app
from gateway.config import Settings
from tests.console_support import sign_in
from tests.helpers import (
    PASSWORD,
    LiveServer,
    allowed,
    assert_problem,
    close_app,
    create_workspaces,
    invite_and_accept,
    onboard,
    serving,
)

AUDITOR = {
    "name": "auditor",
    "description": "Reads documents and the audit log",
    "permissions": ["documents:read", "audit:read"],
}


def roles_of(client: httpx.Client, workspace: str) -> dict[str, dict[str, object]]:
    response = client.get("/roles", params={"workspace": workspace})
    assert response.status_code == 200, response.text
    return {role["name"]: role for role in response.json()}


def test_an_admin_defines_a_role_within_their_permissions_in_force_at_once(
    server: LiveServer,
) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    _, adam = invite_and_accept(server, root, "adam@example.com", "Adam", [("acme", "admin")])
    eve = onboard(server, root, "eve@example.com", "Eve", [("acme", "viewer")])

    created = adam.post("/workspaces/acme/custom-roles", json=AUDITOR)
    assert created.status_code == 201, created.text
    assert created.json()["permissions"] == ["audit:read", "documents:read"]
    assert created.json()["workspace"] == "acme"
    listed = roles_of(adam, "acme")["auditor"]
    assert listed["custom"] is True and listed["source"] is None
    assert listed["effective_permissions"] == ["audit:read", "documents:read"]
    # Only in acme: the shared list does not know it.
    assert "auditor" not in roles_of(root, "*")

    # Granted like any role, and in force at the revision the grant answers with.
    assert not allowed(server, f"user:{eve}", "acme", "read", "audit")
    granted = adam.post(f"/users/{eve}/grants", json={"workspace": "acme", "role": "auditor"})
    assert granted.status_code == 201, granted.text
    assert allowed(server, f"user:{eve}", "acme", "read", "audit")

    # Narrowing it takes the permission from its holders at once.
    changed = adam.put(
        "/workspaces/acme/custom-roles/auditor",
        json={"description": "Reads the audit log", "permissions": ["documents:read"]},
    )
    assert changed.status_code == 200, changed.text
    assert not allowed(server, f"user:{eve}", "acme", "read", "audit")
    assert allowed(server, f"user:{eve}", "acme", "read", "documents")

    # A held role is not deleted from under its holders.
    assert_problem(
        adam.delete("/workspaces/acme/custom-roles/auditor"), 409, "conflict", "held by 1"
    )
    assert adam.delete(f"/users/{eve}/grants/acme/auditor").status_code == 200
    deleted = adam.delete("/workspaces/acme/custom-roles/auditor")
    assert deleted.status_code == 200, deleted.text
    assert "auditor" not in roles_of(adam, "acme")
    assert_problem(adam.get("/workspaces/acme/custom-roles/auditor"), 404, "not-found")

    trail = root.get("/audit", params={"workspace": "acme", "target_type": "role"}).json()
    assert [e["action"] for e in trail] == ["role.deleted", "role.updated", "role.created"]
    assert trail[1]["before"]["permissions"] == ["audit:read", "documents:read"]
    assert trail[1]["after"]["permissions"] == ["documents:read"]


def test_no_escalation_through_a_custom_role(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    _, adam = invite_and_accept(server, root, "adam@example.com", "Adam", [("acme", "admin")])
    _, olga = invite_and_accept(server, root, "olga@example.com", "Olga", [("acme", "owner")])
    url = "/workspaces/acme/custom-roles"

    # Permissions the author lacks (users:remove is the owner's), wildcards, the
    # installation's permissions, names of the policy's roles: refused, nothing written.
    problem = assert_problem(
        adam.post(url, json={"name": "remover", "permissions": ["users:remove"]}),
        403,
        "forbidden",
        "permissions you do not hold",
    )
    assert problem["missing_permissions"] == ["users:remove"]
    assert_problem(adam.post(url, json={"name": "all", "permissions": ["*"]}), 422, "invalid-input")
    assert_problem(
        root.post(url, json={"name": "creator", "permissions": ["workspaces:create"]}),
        422,
        "invalid-input",
        "not permissions a workspace role may hold",
    )
    assert_problem(
        adam.post(url, json={"name": "admin", "permissions": ["documents:read"]}),
        409,
        "conflict",
        "already a role",
    )
    assert adam.get(url).json() == []

    # An owner's role that removes people: the admin can neither widen nor strip it.
    made = olga.post(url, json={"name": "offboarder", "permissions": ["users:remove"]})
    assert made.status_code == 201, made.text
    widen = {"permissions": ["users:remove", "documents:read"]}
    assert_problem(adam.put(f"{url}/offboarder", json=widen), 403, "forbidden", "cannot change")
    assert_problem(adam.delete(f"{url}/offboarder"), 403, "forbidden", "cannot delete")
    # Nor add to their own role what they lack.
    assert adam.post(url, json={"name": "helper", "permissions": ["users:read"]}).status_code == 201
    assert_problem(
        adam.put(f"{url}/helper", json={"permissions": ["users:read", "users:remove"]}),
        403,
        "forbidden",
    )
    assert adam.get(f"{url}/offboarder").json()["permissions"] == ["users:remove"]
    assert adam.get(f"{url}/helper").json()["permissions"] == ["users:read"]


def test_another_tenants_admin_meets_the_same_walls(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    _, adam = invite_and_accept(server, root, "adam@example.com", "Adam", [("acme", "admin")])
    _, gina = invite_and_accept(server, root, "gina@example.com", "Gina", [("globex", "admin")])
    eve = onboard(server, root, "eve@example.com", "Eve", [("acme", "viewer")])
    assert adam.post("/workspaces/acme/custom-roles", json=AUDITOR).status_code == 201

    # Acme's roles, to globex's admin: the answer of a workspace that does not exist.
    for path in ("/workspaces/acme/custom-roles", "/workspaces/nowhere/custom-roles"):
        assert_problem(gina.get(path), 404, "not-found")
        assert_problem(gina.post(path, json=AUDITOR), 404, "not-found")
    for method in ("GET", "PUT", "DELETE"):
        body = {"permissions": ["documents:read"]} if method == "PUT" else None
        response = gina.request(method, "/workspaces/acme/custom-roles/auditor", json=body)
        assert_problem(response, 404, "not-found", "no workspace")
    # Acme's role is not hers to grant, in acme (the grants' own wall) nor in globex.
    assert_problem(
        gina.post(f"/users/{eve}/grants", json={"workspace": "acme", "role": "auditor"}),
        403,
        "forbidden",
    )
    # The same name in globex is globex's own role, independent of acme's.
    own = {"name": "auditor", "permissions": ["documents:read"]}
    assert gina.post("/workspaces/globex/custom-roles", json=own).status_code == 201
    gus = onboard(server, gina, "gus@example.com", "Gus", [("globex", "viewer")])
    assert_problem(
        gina.post(f"/users/{eve}/grants", json={"workspace": "globex", "role": "auditor"}),
        404,
        "not-found",
    )
    granted = gina.post(f"/users/{gus}/grants", json={"workspace": "globex", "role": "auditor"})
    assert granted.status_code == 201, granted.text
    assert not allowed(server, f"user:{gus}", "globex", "read", "audit")
    assert not allowed(server, f"user:{gus}", "acme", "read", "documents")
    assert adam.get("/workspaces/acme/custom-roles/auditor").json()["permissions"] == [
        "audit:read",
        "documents:read",
    ]


def test_deleting_the_workspace_deletes_its_roles(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    assert root.post("/workspaces/acme/custom-roles", json=AUDITOR).status_code == 201
    assert root.delete("/workspaces/acme").status_code == 200
    create_workspaces(root, "acme")
    assert root.get("/workspaces/acme/custom-roles").json() == []
    assert "auditor" not in roles_of(root, "acme")


def test_turned_off_roles_come_from_git_only(server: LiveServer, settings: Settings) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    assert root.post("/workspaces/acme/custom-roles", json=AUDITOR).status_code == 201
    app = create_app(replace(settings, custom_roles=False))
    try:
        with serving(app) as httpd:
            off = LiveServer(
                f"http://127.0.0.1:{httpd.server_port}", app, settings, server.admin_password
            )
            admin = off.admin()
            url = "/workspaces/acme/custom-roles"
            new = {"name": "other", "permissions": ["documents:read"]}
            assert_problem(admin.post(url, json=new), 403, "forbidden", "turned off")
            change = {"permissions": ["documents:read"]}
            assert_problem(admin.put(f"{url}/auditor", json=change), 403, "forbidden")
            # What exists stays readable, in force and deletable.
            assert [r["name"] for r in admin.get(url).json()] == ["auditor"]
            assert admin.delete(f"{url}/auditor").status_code == 200
    finally:
        close_app(app)


def test_the_console_defines_changes_and_deletes_custom_roles(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    invite_and_accept(server, root, "adam@example.com", "Adam", [("acme", "admin")])
    invite_and_accept(server, root, "gina@example.com", "Gina", [("globex", "admin")])
    adam = sign_in(server, "adam@example.com", PASSWORD)
    gina = sign_in(server, "gina@example.com", PASSWORD)
    page = "/console/workspaces/acme/roles"

    assert 'href="/console/workspaces/acme/roles"' in adam.get("/console/roles").text
    form = adam.get(page).text
    assert 'value="audit:read"' in form and 'value="users:remove"' not in form  # not his

    made = adam.post(page, {"name": "auditor", "permissions": ["audit:read", "documents:read"]})
    assert made.status_code == 200 and "Defined the role auditor" in made.text
    assert [r["name"] for r in root.get("/workspaces/acme/custom-roles").json()] == ["auditor"]
    # Refusals come back on the page, next to the form; nothing is written.
    taken = adam.post(page, {"name": "admin", "permissions": ["audit:read"]})
    assert taken.status_code == 409 and "already a role" in taken.text
    beyond = adam.post(page, {"name": "remover", "permissions": ["users:remove"]})
    assert beyond.status_code == 403 and "permissions you do not hold" in beyond.text
    empty = adam.post(page, {"name": "nothing"})
    assert empty.status_code == 422 and 'id="role-permissions-error"' in empty.text

    changed = adam.post(f"{page}/auditor", {"description": "Audit", "permissions": ["audit:read"]})
    assert changed.status_code == 200 and "Changed the role auditor" in changed.text
    assert root.get("/workspaces/acme/custom-roles/auditor").json()["permissions"] == ["audit:read"]

    # Globex's admin: acme's page and actions are unknown, as a missing workspace's are.
    assert gina.get(page).status_code == 404
    assert gina.post(f"{page}/auditor/delete").status_code == 404
    assert gina.get("/console/workspaces/nowhere/roles").status_code == 404
    assert 'href="/console/workspaces/acme/roles"' not in gina.get("/console/roles").text

    deleted = adam.post(f"{page}/auditor/delete")
    assert deleted.status_code == 200 and "Deleted the role auditor" in deleted.text
    assert root.get("/workspaces/acme/custom-roles").json() == []
