"""Workspaces: create, list, get, rename, delete."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from admin_api.pagination import items, window
from admin_api.schemas import (
    RevisionSchema,
    WorkspaceCreateSchema,
    WorkspaceRenameSchema,
    WorkspaceSchema,
)
from gateway.web.http import current_actor, services
from gateway.web.json_input import Blueprint

blp = Blueprint("workspaces", __name__, url_prefix="/workspaces", description="Workspaces")


@blp.route("")
class Workspaces(MethodView):
    @blp.response(200, WorkspaceSchema(many=True))
    @blp.paginate()
    def get(self, pagination_parameters: Any) -> Any:
        """Workspaces you may read."""
        page = services().workspaces.list(current_actor(), *window(pagination_parameters))
        return items(pagination_parameters, page)

    @blp.arguments(WorkspaceCreateSchema)
    @blp.response(201, WorkspaceSchema)
    def post(self, args: dict[str, str]) -> Any:
        """Create a workspace (its slug is permanent; its name can change)."""
        return services().workspaces.create(current_actor(), args["slug"], args["name"])


@blp.route("/<slug>")
class WorkspaceBySlug(MethodView):
    @blp.response(200, WorkspaceSchema)
    def get(self, slug: str) -> Any:
        """One workspace."""
        return services().workspaces.get(current_actor(), slug)

    @blp.arguments(WorkspaceRenameSchema)
    @blp.response(200, WorkspaceSchema)
    def patch(self, args: dict[str, str], slug: str) -> Any:
        """Rename a workspace."""
        return services().workspaces.rename(current_actor(), slug, args["name"])

    @blp.response(200, RevisionSchema)
    def delete(self, slug: str) -> Any:
        """Delete a workspace, its grants and the pending invitations' roles in it."""
        return {"revision": services().workspaces.delete(current_actor(), slug)}
