"""The decision HTTP API: ``POST /v1/check`` (AuthZEN is in :mod:`gateway.authzen_api`).

It answers from the in-memory engine; any error on this path is a deny or a 5xx,
never an allow.
"""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import EXCLUDE, Schema, fields, post_dump, validate

from gateway.http import services

blp = Blueprint(
    "decisions",
    __name__,
    description="Decisions for other services: may subject X do Y in workspace W?",
)

_name = validate.Length(min=1, max=255)


class CheckRequestSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    subject = fields.String(
        required=True, validate=_name, metadata={"description": "User email, id or user:<id>"}
    )
    workspace = fields.String(required=True, validate=_name)
    resource = fields.String(required=True, validate=_name, metadata={"example": "documents"})
    action = fields.String(required=True, validate=_name, metadata={"example": "write"})
    owner = fields.String(
        validate=_name,
        metadata={
            "description": "The resource's owner (email, id or user:<id>), for "
            "owner-only permissions (resource:action:own)"
        },
    )
    explain = fields.Boolean(
        load_default=False, metadata={"description": "Also say why (rule and role path)"}
    )


class CheckResponseSchema(Schema):
    allowed = fields.Boolean(required=True)
    revision = fields.Integer(
        required=True, metadata={"description": "Policy revision the answer was made at"}
    )
    reason = fields.String()
    explanation = fields.Dict(metadata={"description": "With explain: the rule and role path"})

    @post_dump
    def _without_explanation(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        # Only there when asked for; not a null on every answer.
        if data.get("explanation") is None:
            data.pop("explanation", None)
        return data


@blp.route("/v1/check")
class Check(MethodView):
    @blp.arguments(CheckRequestSchema)
    @blp.response(200, CheckResponseSchema)
    def post(self, args: dict[str, Any]) -> Any:
        """May the subject do the action on the resource in the workspace?"""
        return services().decisions.check(
            args["subject"],
            args["workspace"],
            args["resource"],
            args["action"],
            owner=args.get("owner"),
            explain=args["explain"],
        )
