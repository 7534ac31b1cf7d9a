"""The audit trail: who changed what, where, when, from what to what."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from admin_api.pagination import items, window
from admin_api.schemas import AuditEventSchema, AuditQuerySchema
from gateway.http import current_actor, services
from gateway.services.audit import AuditFilter

blp = Blueprint("audit", __name__, url_prefix="/audit", description="The audit trail")


@blp.route("")
class Audit(MethodView):
    @blp.arguments(AuditQuerySchema, location="query")
    @blp.response(200, AuditEventSchema(many=True))
    @blp.paginate()
    def get(self, query: dict[str, Any], pagination_parameters: Any) -> Any:
        """Changes in the workspaces you may audit, newest first."""
        page = services().audit.list(
            current_actor(),
            AuditFilter(**query),
            *window(pagination_parameters),
        )
        return items(pagination_parameters, page)
