"""The decision HTTP API: ``POST /v1/check`` (AuthZEN is in :mod:`gateway.web.authzen_api`).

It answers from the in-memory engine; any error on this path is a deny or a 5xx,
never an allow.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from flask.views import MethodView
from marshmallow import EXCLUDE, Schema, fields, post_dump, validate

from gateway.engine.engine import Decision
from gateway.web.http import decision_services
from gateway.web.json_input import Blueprint

blp = Blueprint(
    "decisions",
    __name__,
    description="Decisions for other services: may subject X do Y in workspace W?",
)

MAX_NAME = 255
_name = validate.Length(min=1, max=MAX_NAME)


class StrictBoolean(fields.Boolean):
    """JSON ``true`` or ``false``, as the OpenAPI document says: fields.Boolean also takes
    ``1``, ``"yes"`` or ``"on"``, which a caller meaning something else might send."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


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
    explain = StrictBoolean(
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


# -- the plain body, without the schemas (gateway.web.check_lane) ---------------------------

PLAIN_FIELDS = frozenset({"subject", "workspace", "resource", "action"})
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]


class _Plain(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """Exactly the four names (PLAIN_FIELDS), each a string of 1-255 characters."""

    subject: _Name
    workspace: _Name
    resource: _Name
    action: _Name


_PLAIN = msgspec.json.Decoder(_Plain)
# Keys sorted, compact, as flask.jsonify writes them (the lane's answer, byte for byte).
_ENCODER = msgspec.json.Encoder(order="sorted")


def plain_question(raw: bytes) -> tuple[str, str, str, str] | None:
    """The four names of a body that is exactly ``{"subject", "workspace", "resource",
    "action"}``, each a string of 1-255 characters (what CheckRequestSchema accepts of
    it, read as webargs reads it: UTF-8, then JSON); None for any other body, which
    Flask then answers (refusing a malformed or too deeply nested one with its 400,
    gateway.web.json_input). msgspec reads JSON as the json module does (the last of
    duplicate members; what it refuses that the json module takes, NaN say, is not a
    plain body either)."""
    try:
        body = _PLAIN.decode(raw)
    except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
        return None
    return (body.subject, body.workspace, body.resource, body.action)


def plain_json(decision: Decision) -> bytes:
    """:func:`plain_answer` as flask.jsonify writes it (sorted, compact, a final newline)."""
    return _ENCODER.encode(plain_answer(decision)) + b"\n"


def plain_answer(decision: Decision) -> dict[str, Any]:
    """CheckResponseSchema's dump of a decision made without ``explain`` (so without an
    explanation)."""
    return {"allowed": decision.allowed, "revision": decision.revision, "reason": decision.reason}


@blp.route("/v1/check")
class Check(MethodView):
    @blp.arguments(CheckRequestSchema())
    @blp.response(200, CheckResponseSchema)
    def post(self, args: dict[str, Any]) -> Any:
        """May the subject do the action on the resource in the workspace?"""
        return decision_services().decisions.check(
            args["subject"],
            args["workspace"],
            args["resource"],
            args["action"],
            owner=args.get("owner"),
            explain=args["explain"],
        )
