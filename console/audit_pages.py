"""The audit trail made readable (console/views.py has the page): each change in words
(``gateway.services.audit_words``), the filter's actions from the service, the export of
what the filters show, as the API's ``GET /audit/export`` streams it, and the chain's
signed checkpoints (``GET``/``POST /audit/checkpoints``: super admins)."""

from __future__ import annotations

from typing import Any

from flask import Response, request
from marshmallow import ValidationError

from admin_api.audit import export_response
from admin_api.schemas import AuditExportQuerySchema
from console.views import AUDIT_FIELDS, _field_errors, _render, bp, viewer
from gateway.engine.rules import ALL_WORKSPACES
from gateway.errors import InvalidInput
from gateway.services.audit_words import describe
from gateway.services.permissions import Permission
from gateway.web.http import services
from gateway.web.state import state

CHECKPOINTS_SHOWN = 50


@bp.context_processor
def _audit_words() -> dict[str, Any]:
    return {
        "describe": describe,
        # Asked only by the audit page's template.
        "audit_actions": lambda: _with_families(services().audit.actions(viewer().actor)),
        # Checkpoints speak of the whole trail: whoever reads every workspace's.
        "sees_checkpoints": lambda: viewer().can(Permission.AUDIT_READ, ALL_WORKSPACES),
    }


def _with_families(actions: tuple[str, ...]) -> list[str]:
    """Each family ("grant", which the filter takes for every grant.*), then the actions."""
    return sorted({a.split(".")[0] for a in actions if "." in a}) + list(actions)


@bp.get("/audit/export")
def audit_export() -> Response:
    """The events the audit page's filters select, oldest first, as CSV or JSON Lines."""
    raw = {k: request.args[k] for k in (*AUDIT_FIELDS, "format") if request.args.get(k)}
    try:
        query = AuditExportQuerySchema().load(raw)
    except ValidationError as exc:
        raise InvalidInput("Those filters are not valid", errors=_field_errors(exc)) from exc
    kind = query.pop("format")
    return export_response(kind, viewer().actor, query)


@bp.get("/audit/checkpoints")
def audit_checkpoints(notice: str | None = None, status: int = 200) -> Response:
    """The latest signed checkpoints, and a button to sign the chain's head now."""
    return _render(
        "audit_checkpoints.html",
        status=status,
        active="audit",
        notice=notice,
        checkpoints=services().checkpoints.list(viewer().actor, CHECKPOINTS_SHOWN),
        every=state().settings.audit_checkpoint_every,
    )


@bp.post("/audit/checkpoints")
def audit_checkpoint_now() -> Response:
    made = services().checkpoints.create(viewer().actor)
    return audit_checkpoints(
        f"Signed the head of the chain: event {made.head_id}, with key {made.kid}.", status=201
    )
