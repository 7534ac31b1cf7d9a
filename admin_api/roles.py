"""Roles and the permission catalogue, read-only (``policies/`` defines them; ``ringfence
policy apply`` applies them): what an API user checks before granting a role."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from admin_api.schemas import PermissionSchema, RoleSchema, RolesQuerySchema
from gateway.web.http import current_actor, services
from gateway.web.json_input import Blueprint

blp = Blueprint("roles", __name__, url_prefix="", description="Roles and permissions")


@blp.route("/roles")
class Roles(MethodView):
    @blp.arguments(RolesQuerySchema, location="query")
    @blp.response(200, RoleSchema(many=True))
    def get(self, query: dict[str, str]) -> Any:
        """The roles that may be granted in a workspace (exactly what a grant there
        accepts), sorted by name, each with its description, the file that defines it
        and its effective permissions. Needs ``role_management:read`` there; a workspace
        you may not see is a 404, like one that does not exist."""
        return services().roles.in_workspace(current_actor(), query["workspace"])


@blp.route("/permissions")
class Permissions(MethodView):
    @blp.response(200, PermissionSchema(many=True))
    def get(self) -> Any:
        """The permission catalogue, sorted: every permission a role may give. The same
        in every workspace; needs ``role_management:read`` in at least one."""
        catalogue = services().roles.catalogue(current_actor())
        return [{"name": name, "description": text} for name, text in catalogue.items()]
