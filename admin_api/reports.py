"""Access reports, as JSON or CSV (``?format=csv``)."""

from __future__ import annotations

import csv
import io
from datetime import UTC
from typing import Any

from flask import Response
from flask.views import MethodView
from marshmallow import Schema, fields, validate

from admin_api.schemas import LenientQuery
from gateway.db.models import utcnow
from gateway.services.reports import Report, ReportParams
from gateway.web.http import current_actor, services
from gateway.web.json_input import Blueprint

blp = Blueprint(
    "reports", __name__, url_prefix="/reports", description="Access reports for compliance"
)


class ReportQuerySchema(LenientQuery):
    format = fields.String(load_default="json", validate=validate.OneOf(["json", "csv"]))
    days = fields.Integer(
        validate=validate.Range(min=0, max=3650),
        metadata={"description": "dormant-accounts (default 90), pending-invitations (7)"},
    )
    min_workspaces = fields.Integer(
        validate=validate.Range(min=1, max=100_000),
        metadata={"description": "many-workspaces (default 3)"},
    )
    since = fields.AwareDateTime(default_timezone=UTC, metadata={"description": "grants-changed"})
    until = fields.AwareDateTime(default_timezone=UTC, metadata={"description": "grants-changed"})


class ReportSchema(Schema):
    report = fields.String(attribute="name")
    description = fields.String()
    generated_at = fields.Function(lambda _: utcnow().isoformat())
    parameters = fields.Dict()
    columns = fields.List(fields.String())
    rows = fields.List(fields.Dict())
    truncated = fields.Boolean()


class ReportListSchema(Schema):
    reports = fields.List(fields.String())


@blp.route("")
class Reports(MethodView):
    @blp.response(200, ReportListSchema)
    def get(self) -> Any:
        """The names of the reports."""
        current_actor()
        return {"reports": services().reports.names()}


@blp.route("/<name>")
class ReportByName(MethodView):
    @blp.arguments(ReportQuerySchema, location="query")
    @blp.response(200, ReportSchema)
    @blp.alt_response(200, description="With ?format=csv: text/csv", content_type="text/csv")
    def get(self, query: dict[str, Any], name: str) -> Any:
        """One report over the workspaces where you hold ``reviews:read``."""
        params = ReportParams(
            days=query.get("days"),
            min_workspaces=query.get("min_workspaces"),
            since=query.get("since"),
            until=query.get("until"),
        )
        report = services().reports.run(current_actor(), name, params)
        if query["format"] == "csv":
            return csv_response(report)
        return report


# A cell a spreadsheet would run as a formula (names and addresses are typed by people).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_response(report: Report) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(report.columns)
    for row in report.rows:
        writer.writerow([_cell(row.get(column)) for column in report.columns])
    response = Response(out.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{report.name}.csv"'
    return response
