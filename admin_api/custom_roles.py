"""Custom roles: roles a workspace's admins define for that workspace alone (the roles
of ``policies/`` are read-only here). Defining needs ``role_management:define``, and a
role holds only permissions its author holds in the workspace."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from admin_api.schemas import (
    CustomRoleCreateSchema,
    CustomRoleSchema,
    CustomRoleUpdateSchema,
    RevisionSchema,
)
from gateway.services.custom_roles import CustomRoleDraft
from gateway.web.http import current_actor, services
from gateway.web.json_input import Blueprint

blp = Blueprint(
    "custom_roles",
    __name__,
    url_prefix="/workspaces/<slug>/custom-roles",
    description="Custom roles of a workspace",
)


@blp.route("")
class CustomRoles(MethodView):
    @blp.response(200, CustomRoleSchema(many=True))
    def get(self, slug: str) -> Any:
        """The workspace's custom roles, by name; needs ``role_management:read`` there
        (``GET /roles`` lists them with the policy's roles)."""
        return services().custom_roles.in_workspace(current_actor(), slug)

    @blp.arguments(CustomRoleCreateSchema)
    @blp.response(201, CustomRoleSchema)
    def post(self, args: dict[str, Any], slug: str) -> Any:
        """Define a role in this workspace, in force at once (``X-Ringfence-Revision``).
        Needs ``role_management:define``; each permission must be one you hold here, and
        the name must not be a role already (of ``policies/`` or this workspace)."""
        draft = CustomRoleDraft(args["name"], args["description"], args["permissions"])
        role, _ = services().custom_roles.create(current_actor(), slug, draft)
        return role


@blp.route("/<name>")
class CustomRoleByName(MethodView):
    @blp.response(200, CustomRoleSchema)
    def get(self, slug: str, name: str) -> Any:
        """One custom role."""
        return services().custom_roles.get(current_actor(), slug, name)

    @blp.arguments(CustomRoleUpdateSchema)
    @blp.response(200, CustomRoleSchema)
    def put(self, args: dict[str, Any], slug: str, name: str) -> Any:
        """Replace the role's description and permissions; its holders gain and lose
        them at once. You must be able to grant the role as it is and as it becomes."""
        role, _ = services().custom_roles.update(
            current_actor(), slug, name, args["description"], args["permissions"]
        )
        return role

    @blp.response(200, RevisionSchema)
    def delete(self, slug: str, name: str) -> Any:
        """Delete a custom role that nobody holds and no pending invitation offers."""
        return {"revision": services().custom_roles.delete(current_actor(), slug, name)}
