"""People and their roles: list, get, deactivate, reactivate, remove; grants."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from admin_api.pagination import items, window
from admin_api.schemas import (
    GrantChangeSchema,
    GrantSchema,
    RevisionSchema,
    RolesSchema,
    UserQuerySchema,
    UserSchema,
)
from gateway.services.users import UserFilter
from gateway.web.http import current_actor, services
from gateway.web.json_input import Blueprint

blp = Blueprint("users", __name__, url_prefix="/users", description="People and their roles")
# Ids are 32-bit in the database: a larger id is a 404 from routing, not an overflow
# inside the database driver (a 500).
USER_ID = "<int(max=2147483647):user_id>"


@blp.route("")
class Users(MethodView):
    @blp.arguments(UserQuerySchema, location="query")
    @blp.response(200, UserSchema(many=True))
    @blp.paginate()
    def get(self, query: dict[str, Any], pagination_parameters: Any) -> Any:
        """People you may read, filtered by status, workspace, role or a search text."""
        where = UserFilter(
            status=query.get("status"),
            workspace=query.get("workspace"),
            role=query.get("role"),
            search=query.get("q"),
        )
        page = services().users.list(
            current_actor(),
            where,
            *window(pagination_parameters),
        )
        return items(pagination_parameters, page)


@blp.route(f"/{USER_ID}")
class UserById(MethodView):
    @blp.response(200, UserSchema)
    def get(self, user_id: int) -> Any:
        """One person: status, roles per workspace, invitation status."""
        return services().users.get(current_actor(), user_id)

    @blp.response(200, RevisionSchema)
    def delete(self, user_id: int) -> Any:
        """Remove the account and its grants; the audit history is kept."""
        return {"revision": services().users.remove(current_actor(), user_id)}


@blp.route(f"/{USER_ID}/deactivate")
class Deactivate(MethodView):
    @blp.response(200, UserSchema)
    def post(self, user_id: int) -> Any:
        """Deny every check and end every session of this person; grants are kept."""
        return services().users.deactivate(current_actor(), user_id)


@blp.route(f"/{USER_ID}/reactivate")
class Reactivate(MethodView):
    @blp.response(200, UserSchema)
    def post(self, user_id: int) -> Any:
        """Restore a deactivated person with the grants they had."""
        return services().users.reactivate(current_actor(), user_id)


@blp.route(f"/{USER_ID}/workspaces/<workspace>/roles")
class WorkspaceRoles(MethodView):
    @blp.arguments(RolesSchema)
    @blp.response(200, GrantChangeSchema)
    def put(self, args: dict[str, list[str]], user_id: int, workspace: str) -> Any:
        """Replace the person's roles in one workspace (an empty list removes them all)."""
        revision = services().grants.replace(current_actor(), user_id, workspace, args["roles"])
        return {"revision": revision, "user": services().users.get(current_actor(), user_id)}


@blp.route(f"/{USER_ID}/grants")
class Grants(MethodView):
    @blp.arguments(GrantSchema)
    @blp.response(201, GrantChangeSchema)
    def post(self, args: dict[str, Any], user_id: int) -> Any:
        """Give the person a role in a workspace, optionally until ``expires_at``."""
        revision = services().grants.add(
            current_actor(), user_id, args["workspace"], args["role"], args.get("expires_at")
        )
        return {"revision": revision, "user": services().users.get(current_actor(), user_id)}


@blp.route(f"/{USER_ID}/grants/<workspace>/<role>")
class GrantByKey(MethodView):
    @blp.response(200, GrantChangeSchema)
    def delete(self, user_id: int, workspace: str, role: str) -> Any:
        """Take a role in a workspace away from the person."""
        revision = services().grants.remove(current_actor(), user_id, workspace, role)
        return {"revision": revision, "user": services().users.get(current_actor(), user_id)}
