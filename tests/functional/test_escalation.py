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
    # superadmin is granted in every workspace only (scope: installation), never in one.
    assert_problem(
        adam.put(f"/users/{eve}/workspaces/acme/roles", json={"roles": ["superadmin"]}),
        422,
        "invalid-input",
        "'superadmin' is an installation-wide role",
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

    # Taking a role away needs the right to grant it: only a super admin demotes one.
    assert_problem(
        olga.put("/users/1/workspaces/*/roles", json={"roles": []}),
        403,
        "forbidden",
        "cannot remove 'superadmin'",
    )
    assert_problem(
        olga.delete("/users/1/grants/*/superadmin"), 403, "forbidden", "cannot remove 'superadmin'"
    )
    assert root.get("/users/1").json()["roles"] == {"*": ["superadmin"]}


def test_nobody_strips_a_role_they_could_not_grant(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    olive_id, olive = invite_and_accept(
        server, root, "olive@example.com", "Olive", [("acme", "owner")]
    )
    adam_id, adam = invite_and_accept(server, root, "adam@example.com", "Adam", [("acme", "admin")])
    _, anna = invite_and_accept(server, root, "anna@example.com", "Anna", [("acme", "admin")])

    # An admin can neither demote nor sideline the owner: owner gives what admin lacks.
    for response, verb in (
        (adam.delete(f"/users/{olive_id}/grants/acme/owner"), "remove"),
        (
            adam.put(f"/users/{olive_id}/workspaces/acme/roles", json={"roles": ["viewer"]}),
            "remove",
        ),
        (adam.post(f"/users/{olive_id}/deactivate"), "deactivate"),
    ):
        problem = assert_problem(response, 403, "forbidden", f"cannot {verb} 'owner'")
        assert "users:remove" in problem["missing_permissions"]
    assert root.get(f"/users/{olive_id}").json()["status"] == "active"
    assert root.get(f"/users/{olive_id}").json()["roles"] == {"acme": ["owner"]}

    # A role the admin could grant, they may take away (the admin role of a peer included).
    response = anna.put(f"/users/{adam_id}/workspaces/acme/roles", json={"roles": ["editor"]})
    assert response.status_code == 200, response.text

    # The workspace keeps an owner: not even a super admin removes the last one...
    for response in (
        root.delete(f"/users/{olive_id}/grants/acme/owner"),
        root.put(f"/users/{olive_id}/workspaces/acme/roles", json={"roles": ["admin"]}),
        root.post(f"/users/{olive_id}/deactivate"),
        root.delete(f"/users/{olive_id}"),
    ):
        assert_problem(response, 409, "conflict", "last owner of 'acme'")
    # ...until there is another.
    assert (
        root.post(
            f"/users/{adam_id}/grants", json={"workspace": "acme", "role": "owner"}
        ).status_code
        == 201
    )
    response = olive.delete(f"/users/{adam_id}/grants/acme/owner")
    assert response.status_code == 200, response.text  # an owner may remove a peer owner
    assert_problem(
        root.delete(f"/users/{olive_id}/grants/acme/owner"), 409, "conflict", "last owner"
    )
    root.post(f"/users/{adam_id}/grants", json={"workspace": "acme", "role": "owner"})
    response = root.delete(f"/users/{olive_id}/grants/acme/owner")
    assert response.status_code == 200, response.text
