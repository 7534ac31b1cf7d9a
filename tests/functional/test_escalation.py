"""Delegated administration without escalation: an admin grants only roles whose
permissions they hold in that workspace, and the last super admin stays."""

from __future__ import annotations

from tests.helpers import (
    LiveServer,
    assert_problem,
    create_workspaces,
    invite_and_accept,
    onboard,
    post_invitation,
)


def test_an_admin_grants_only_roles_within_their_own_permissions(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    _, adam = invite_and_accept(server, root, "adam@example.com", "Adam", [("acme", "admin")])
    eve = onboard(server, root, "eve@example.com", "Eve", [("acme", "viewer")])

    # owner gives users:remove, workspaces:delete, settings:write... which admin lacks.
    problem = assert_problem(
        adam.post(f"/users/{eve}/grants", json={"workspace": "acme", "role": "owner"}),
        403,
        "forbidden",
        "cannot grant 'owner'",
    )
    assert "users:remove" in problem["missing_permissions"]
    assert_problem(
        adam.put(f"/users/{eve}/workspaces/acme/roles", json={"roles": ["superadmin"]}),
        403,
        "forbidden",
        "cannot grant 'superadmin'",
    )
    assert_problem(
        post_invitation(adam, "mallory@example.com", [("acme", "owner")]),
        403,
        "forbidden",
        "cannot grant 'owner'",
    )
    assert root.get(f"/users/{eve}").json()["roles"] == {"acme": ["viewer"]}
    assert root.get("/users", params={"q": "mallory"}).json() == []

    # Roles within the admin's own permissions are fine, the admin role itself included.
    response = adam.put(f"/users/{eve}/workspaces/acme/roles", json={"roles": ["editor", "admin"]})
    assert response.status_code == 200, response.text
    assert response.json()["user"]["roles"] == {"acme": ["admin", "editor"]}


def test_the_last_super_admin_cannot_be_demoted(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    # An owner of every workspace may manage roles everywhere, but not leave nobody in charge.
    _, olga = invite_and_accept(server, root, "olga@example.com", "Olga", [("acme", "viewer")])
    olga_id = root.get("/users", params={"q": "olga"}).json()[0]["id"]
    assert (
        root.post(f"/users/{olga_id}/grants", json={"workspace": "*", "role": "owner"}).status_code
        == 201
    )

    assert_problem(
        olga.put("/users/1/workspaces/*/roles", json={"roles": []}),
        409,
        "conflict",
        "last super admin",
    )
    assert_problem(olga.delete("/users/1/grants/*/superadmin"), 409, "conflict", "last super admin")
    assert root.get("/users/1").json()["roles"] == {"*": ["superadmin"]}
