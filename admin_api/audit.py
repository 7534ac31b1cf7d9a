"""The audit trail: who changed what, where, when, from what to what, and why."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

from flask import Response, request
from flask.views import MethodView
from sqlalchemy.orm import Session

from admin_api.schemas import (
    AuditEventSchema,
    AuditExportQuerySchema,
    AuditPageQuerySchema,
)
from gateway.services.audit import AuditFilter, csv_lines, jsonl_lines
from gateway.services.base import page_offset
from gateway.web.http import current_actor, services
from gateway.web.json_input import Blueprint

blp = Blueprint("audit", __name__, url_prefix="/audit", description="The audit trail")

EXPORT_TYPES = {"jsonl": "application/jsonl", "csv": "text/csv"}


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
        records = services().audit.export(current_actor(), AuditFilter(**query))
        lines = jsonl_lines(records) if kind == "jsonl" else csv_lines(records)
        return Response(
            _closing(lines, services().session),
            mimetype=EXPORT_TYPES[kind],
            headers={"Content-Disposition": f'attachment; filename="audit.{kind}"'},
        )


def _closing(chunks: Iterator[str], session: Session) -> Iterator[str]:
    """Stream ``chunks``, then close ``session``: the request's teardown has closed it
    already when streaming starts (Flask tears down before the body is sent), and the
    reads while streaming open a transaction that nothing else would end."""
    try:
        yield from chunks
    finally:
        session.close()
