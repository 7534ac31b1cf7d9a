"""The audit trail: who changed what, where, when, from what to what, and why."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

from flask import Response, request
from flask.views import MethodView
from marshmallow import RAISE, Schema, fields, validate
from sqlalchemy.orm import Session

from admin_api.schemas import (
    AuditEventSchema,
    AuditExportQuerySchema,
    AuditPageQuerySchema,
)
from gateway.services.audit import AuditFilter, csv_lines, jsonl_lines
from gateway.services.base import Actor, page_offset
from gateway.services.checkpoints import MAX_LIST
from gateway.web.http import current_actor, services
from gateway.web.json_input import Blueprint

blp = Blueprint("audit", __name__, url_prefix="/audit", description="The audit trail")

EXPORT_TYPES = {"jsonl": "application/jsonl", "csv": "text/csv", "bundle": "application/jsonl"}
EXPORT_NAMES = {"jsonl": "audit.jsonl", "csv": "audit.csv", "bundle": "audit-bundle.jsonl"}


def export_response(kind: str, actor: Actor, query: dict[str, Any]) -> Response:
    """The export of ``kind`` (jsonl, csv, bundle) of the events ``query`` selects that
    ``actor`` may audit, streamed (the API's and the console's)."""
    request_services = services()
    records = request_services.audit.export(actor, AuditFilter(**query))
    if kind == "bundle":
        lines = request_services.checkpoints.bundle(actor, records, query)
    else:
        lines = jsonl_lines(records) if kind == "jsonl" else csv_lines(records)
    return Response(
        _closing(lines, request_services.session),
        mimetype=EXPORT_TYPES[kind],
        headers={"Content-Disposition": f'attachment; filename="{EXPORT_NAMES[kind]}"'},
    )


# X-Pagination is JSON (a header with content, as flask-smorest's pages have it).
AUDIT_PAGE_HEADERS = {
    "X-Pagination": {
        "description": "The total of matching events and the page size (and the page, "
        "for numbered pages), as JSON",
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["total", "page_size"],
                    "properties": {
                        "total": {"type": "integer", "minimum": 0},
                        "page_size": {"type": "integer", "minimum": 1},
                        "page": {"type": "integer", "minimum": 1},
                    },
                }
            }
        },
    },
    "X-Next-Cursor": {
        "description": "The cursor of the next page; absent on the last one",
        "schema": {"type": "string"},
    },
    "Link": {"description": '<next page URL>; rel="next"', "schema": {"type": "string"}},
}


@blp.route("")
class Audit(MethodView):
    @blp.arguments(AuditPageQuerySchema, location="query")
    @blp.response(200, AuditEventSchema(many=True), headers=AUDIT_PAGE_HEADERS)
    def get(self, query: dict[str, Any]) -> Any:
        """Changes in the workspaces you may audit, newest first. The next page is at
        ``cursor`` = the ``X-Next-Cursor`` header (also in ``Link: rel="next"``)."""
        cursor, page_size = query.pop("cursor", None), query.pop("page_size")
        page = query.pop("page", None)
        audit = services().audit
        if page is not None:
            offset = page_offset(page, page_size)
            numbered = audit.list(current_actor(), AuditFilter(**query), offset, page_size)
            header = {"total": numbered.total, "page": page, "page_size": page_size}
            return numbered.items, 200, {"X-Pagination": json.dumps(header)}
        result = audit.page(current_actor(), AuditFilter(**query), cursor, page_size)
        headers = {"X-Pagination": json.dumps({"total": result.total, "page_size": page_size})}
        if result.next_cursor:
            params = {**request.args.to_dict(), "cursor": result.next_cursor}
            url = f"{request.base_url}?{urlencode(params)}"
            headers["X-Next-Cursor"] = result.next_cursor
            headers["Link"] = f'<{url}>; rel="next"'
        return result.items, 200, headers


@blp.route("/export")
class Export(MethodView):
    @blp.arguments(AuditExportQuerySchema, location="query")
    @blp.doc(
        responses={
            "200": {
                "description": "The events, oldest first, streamed",
                "content": {"application/jsonl": {}, "text/csv": {}},
            }
        }
    )
    def get(self, query: dict[str, Any]) -> Response:
        """Every matching event you may audit, oldest first, as JSON Lines (with the
        hashes, verifiable by ``ringfence audit verify``) or CSV, streamed."""
        kind = query.pop("format")
        return export_response(kind, current_actor(), query)


class CheckpointSchema(Schema):
    id = fields.Integer(required=True)
    head_id = fields.Integer(
        required=True, metadata={"description": "The audit event the checkpoint signs"}
    )
    head_hash = fields.String(required=True, metadata={"description": "That event's hash"})
    count = fields.Integer(required=True, metadata={"description": "Events chained so far"})
    kid = fields.String(required=True, metadata={"description": "The signing key (JWKS)"})
    jws = fields.String(required=True, metadata={"description": "The compact JWS"})
    trigger = fields.String(required=True, metadata={"description": "auto or manual"})
    created_at = fields.DateTime(required=True)


class CheckpointQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=MAX_LIST))
    before = fields.Integer(
        validate=validate.Range(min=1, max=2**31 - 1),
        metadata={"description": "Only checkpoints with an id below this (the next page)"},
    )


@blp.route("/checkpoints")
class Checkpoints(MethodView):
    @blp.arguments(CheckpointQuerySchema, location="query")
    @blp.response(200, CheckpointSchema(many=True))
    def get(self, query: dict[str, Any]) -> Any:
        """The signed checkpoints of the audit chain, newest first (super admins:
        ``audit:read`` in every workspace)."""
        return services().checkpoints.list(current_actor(), query["limit"], query.get("before"))

    @blp.response(201, CheckpointSchema)
    def post(self) -> Any:
        """Sign the audit chain's head now (super admins). Verify exports with
        ``ringfence audit verify-export``."""
        return services().checkpoints.create(current_actor())


def _closing(chunks: Iterator[str], session: Session) -> Iterator[str]:
    """Stream ``chunks``, then close ``session``: the request's teardown has closed it
    already when streaming starts (Flask tears down before the body is sent), and the
    reads while streaming open a transaction that nothing else would end."""
    try:
        yield from chunks
    finally:
        session.close()
