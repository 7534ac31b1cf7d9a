"""The decision HTTP API: ``POST /v1/check`` and the AuthZEN single evaluation.

Both answer from the in-memory engine; any error on this path is a deny or a 5xx,
never an allow.
"""

from __future__ import annotations

from typing import Any

import werkzeug.exceptions
from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from gateway.errors import BadRequest
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


class CheckResponseSchema(Schema):
    allowed = fields.Boolean(required=True)
    revision = fields.Integer(
        required=True, metadata={"description": "Policy revision the answer was made at"}
    )
    reason = fields.String()


@blp.route("/v1/check")
class Check(MethodView):
    @blp.arguments(CheckRequestSchema)
    @blp.response(200, CheckResponseSchema)
    def post(self, args: dict[str, str]) -> Any:
        """May the subject do the action on the resource in the workspace?"""
        return services().decisions.check(
            args["subject"], args["workspace"], args["resource"], args["action"]
        )


# -- AuthZEN Authorization API 1.0: single evaluation ---------------------------------


class _Entity(Schema):
    class Meta:
        unknown = EXCLUDE

    type = fields.String(required=True, validate=_name)
    id = fields.String(required=True, validate=_name)
    properties = fields.Dict(load_default=dict)


class _Action(Schema):
    class Meta:
        unknown = EXCLUDE

    name = fields.String(required=True, validate=_name)
    properties = fields.Dict(load_default=dict)


class EvaluationRequestSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    subject = fields.Nested(_Entity, required=True)
    resource = fields.Nested(
        _Entity,
        required=True,
        metadata={"description": "type is the resource; properties.workspace the workspace"},
    )
    action = fields.Nested(_Action, required=True)
    context = fields.Dict(load_default=dict)


class EvaluationResponseSchema(Schema):
    decision = fields.Boolean(required=True)
    context = fields.Dict()


@blp.route("/access/v1/evaluation")
class Evaluation(MethodView):
    @blp.doc(requestBody={"content": {"application/json": {"schema": EvaluationRequestSchema}}})
    @blp.response(200, EvaluationResponseSchema)
    def post(self) -> Any:
        """AuthZEN access evaluation; the workspace is ``resource.properties.workspace``."""
        try:
            payload = request.get_json(silent=False)
        except werkzeug.exceptions.BadRequest as exc:
            # Flask hides the parser's message outside debug mode; say what is wrong.
            raise BadRequest("The request body is not valid JSON") from exc
        try:
            body = EvaluationRequestSchema().load(payload or {})
        except ValidationError as exc:
            # AuthZEN asks for 400 (not 422) on a request missing required fields.
            raise BadRequest("The evaluation request is not valid", errors=exc.messages) from exc
        workspace = body["resource"]["properties"].get("workspace")
        if not isinstance(workspace, str) or not workspace:
            raise BadRequest(
                "resource.properties.workspace is required",
                errors={"resource": {"properties": {"workspace": ["required"]}}},
            )
        decision = services().decisions.check(
            body["subject"]["id"], workspace, body["resource"]["type"], body["action"]["name"]
        )
        context: dict[str, Any] = {"revision": decision.revision}
        if not decision.allowed:
            context["reason_admin"] = {"en": decision.reason}
        return {"decision": decision.allowed, "context": context}
