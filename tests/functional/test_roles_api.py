"""GET /roles and GET /permissions: the roles a grant in a workspace accepts, with their
definitions, and the permission catalogue; each only for those who may read roles, and
nothing about a workspace its caller may not see."""

from __future__ import annotations

import pytest

from gateway.policy.validation import load_policies
from tests.helpers import (
    AUTHZEN_POLICIES,
    LiveServer,
    assert_problem,
    create_workspaces,
    invite_and_accept,
)

PRODUCT_ROLES = ["admin", "editor", "owner", "superadmin", "viewer"]
# superadmin is installation-wide (scope: installation): granted in "*" only.
WORKSPACE_ROLES = ["admin", "editor", "owner", "viewer"]


@pytest.mark.policies_dir(AUTHZEN_POLICIES)  # workspace-specific and owner-only roles
def test_roles_of_a_workspace_with_their_definitions(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme", "todo")

    response = admin.get("/roles", params={"workspace": "acme"})
    assert response.status_code == 200, response.text
    roles = {role["name"]: role for role in response.json()}
    assert list(roles) == WORKSPACE_ROLES  # sorted; no other workspace's roles
    assert roles["editor"] == {
        "name": "editor",
        "description": "Viewer who also writes documents",
        "workspace": None,
        "source": "roles.yaml",
        "custom": False,
        "scope": "workspace",
        "inherits": ["viewer"],
        "permissions": ["documents:write"],
        "effective_permissions": [
            "documents:read",
            "documents:write",
            "reports:read",
            "workspaces:read",
        ],
    }
    todo = {role["name"]: role for role in admin.get("/roles?workspace=todo").json()}
    assert set(todo) == {*WORKSPACE_ROLES, "todo_admin", "todo_editor", "todo_evil_genius"} | {
        "todo_viewer"
    }
    editor = todo["todo_editor"]
    assert (editor["workspace"], editor["source"]) == ("todo", "todo.yaml")
    assert editor["effective_permissions"] == [
        "todo:can_create_todo",
        "todo:can_delete_todo:own",
        "todo:can_read_todos",
        "todo:can_update_todo:own",
        "user:can_read_user",
    ]

    # "*": the roles shared by every workspace, which a grant in "*" accepts.
    shared = {role["name"]: role for role in admin.get("/roles?workspace=*").json()}
    assert list(shared) == PRODUCT_ROLES
    catalogue = load_policies(AUTHZEN_POLICIES).permissions
    assert shared["superadmin"]["effective_permissions"] == sorted(catalogue)
    assert shared["superadmin"]["scope"] == "installation"

    # What the list says exists is what a grant accepts.
    user_id, _ = invite_and_accept(server, admin, "t@example.com", "T", [("acme", "viewer")])
    refused = admin.put(f"/users/{user_id}/workspaces/acme/roles", json={"roles": ["todo_editor"]})
    assert refused.status_code == 422, refused.text
    granted = admin.put(f"/users/{user_id}/workspaces/todo/roles", json={"roles": ["todo_editor"]})
    assert granted.status_code == 200, granted.text


def test_the_permission_catalogue(server: LiveServer) -> None:
    response = server.admin().get("/permissions")
    assert response.status_code == 200, response.text
    catalogue = load_policies(server.settings.policies_dir).permissions
    assert response.json() == [{"name": n, "description": d} for n, d in catalogue.items()]
    assert [item["name"] for item in response.json()] == sorted(catalogue)


def test_tenant_walls(server: LiveServer) -> None:
    """Acme's admin reads acme's roles; about globex it learns exactly what it learns
    about a workspace that does not exist. Readers without role_management:read get a
    403 where they see the workspace, and nothing from /permissions."""
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    _, acme_admin = invite_and_accept(server, root, "a@acme.test", "A", [("acme", "admin")])
    _, globex_admin = invite_and_accept(server, root, "g@globex.test", "G", [("globex", "admin")])
    _, editor = invite_and_accept(server, root, "e@acme.test", "E", [("acme", "editor")])

    assert [r["name"] for r in acme_admin.get("/roles?workspace=acme").json()] == WORKSPACE_ROLES
    assert acme_admin.get("/permissions").status_code == 200

    other = assert_problem(acme_admin.get("/roles?workspace=globex"), 404, "not-found")
    missing = assert_problem(acme_admin.get("/roles?workspace=nowhere"), 404, "not-found")
    assert other["detail"].replace("globex", "X") == missing["detail"].replace("nowhere", "X")
    assert globex_admin.get("/roles?workspace=globex").status_code == 200
    assert_problem(globex_admin.get("/roles?workspace=acme"), 404, "not-found")
    # "*" is no tenant: reading every workspace's roles needs the permission in "*".
    assert_problem(acme_admin.get("/roles?workspace=*"), 403, "forbidden")

    assert_problem(editor.get("/roles?workspace=acme"), 403, "forbidden", "role_management:read")
    assert_problem(editor.get("/permissions"), 403, "forbidden", "role_management:read")
    assert_problem(editor.get("/roles?workspace=globex"), 404, "not-found")

    with server.client() as anonymous:
        assert anonymous.get("/roles?workspace=acme").status_code == 401
        assert anonymous.get("/permissions").status_code == 401


def test_the_workspace_is_required_and_checked(server: LiveServer) -> None:
    admin = server.admin()
    for query in ("", "?workspace=", "?workspace=Not%20A%20Slug"):
        problem = assert_problem(admin.get(f"/roles{query}"), 422, "invalid-input")
        assert "workspace" in problem["errors"], (query, problem)
