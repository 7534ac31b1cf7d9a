"""Event streams: the audit trail sent to SIEMs (webhooks, syslog over TLS, JSON Lines).
A workspace's streams need ``event_streams:write`` there; installation-wide streams
(``workspace: "*"``, every event) are the super admins'."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import Schema, fields, validate

from admin_api.schemas import NAME, SLUG_OR_ALL, LenientQuery, StrictSchema
from gateway.notifier import STREAM_KINDS
from gateway.services.streams import MAX_PATTERNS
from gateway.web.http import current_actor, services
from gateway.web.json_input import Blueprint

blp = Blueprint(
    "event_streams",
    __name__,
    url_prefix="/event-streams",
    description="Audit events sent to SIEMs: signed webhooks, syslog over TLS, JSON Lines",
)
STREAM_ID = "<int(max=2147483647):stream_id>"
EVENT_TYPES_DOC = {
    "description": "Audit actions: exact (`user.created`), a prefix (`user.*`) or `*`",
    "example": ["user.*", "grant.*"],
}
TARGET_DOC = {
    "description": "webhook: an https:// URL; syslog: host:port (TLS); file: a file name "
    "in the installation's streams folder",
    "example": "https://siem.example.com/ringfence",
}


def event_types(required: bool = False) -> fields.List:
    return fields.List(
        fields.String(validate=validate.Length(min=1, max=63)),
        required=required,
        validate=validate.Length(min=1, max=MAX_PATTERNS),
        metadata=EVENT_TYPES_DOC,
    )


def decision_sample() -> fields.Float:
    return fields.Float(
        validate=validate.Range(min=0.0, max=1.0),
        allow_nan=False,
        metadata={
            "description": "The share of the workspace's check decisions sent too, as "
            "decision events (0: none, 1: every decision; each stream samples on its own)",
            "example": 0.01,
        },
    )


def target(required: bool = False) -> fields.String:
    return fields.String(
        required=required, validate=validate.Length(min=1, max=2000), metadata=TARGET_DOC
    )


class StreamCreateSchema(StrictSchema):
    name = fields.String(required=True, validate=NAME, metadata={"example": "Splunk"})
    workspace = fields.String(
        required=True,
        validate=SLUG_OR_ALL,
        metadata={"description": "Its events only, or * for every event (super admins)"},
    )
    kind = fields.String(required=True, validate=validate.OneOf(STREAM_KINDS))
    target = target(required=True)
    event_types = event_types(required=True)
    decision_sample = decision_sample()


class StreamUpdateSchema(StrictSchema):
    name = fields.String(validate=NAME)
    target = target()
    event_types = event_types()
    decision_sample = decision_sample()


class StreamQuerySchema(LenientQuery):
    workspace = fields.String(
        validate=SLUG_OR_ALL,
        metadata={"description": "One workspace's streams, or * for the installation-wide"},
    )


class ReplaySchema(StrictSchema):
    from_audit_id = fields.Integer(
        required=True,
        validate=validate.Range(min=1, max=2**31 - 1),
        metadata={"description": "Deliver again every matching event from this audit id on"},
    )


class StreamSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    workspace = fields.Function(lambda s: s.workspace.slug if s.workspace else "*")
    kind = fields.String()
    target = fields.String()
    event_types = fields.List(fields.String())
    decision_sample = fields.Float(
        metadata={"description": "The share of check decisions sent (0: none)"}
    )
    decision_cursor = fields.Integer(
        metadata={"description": "The last decision event id delivered or skipped"}
    )
    status = fields.String(metadata={"description": "active or paused"})
    paused_reason = fields.String(allow_none=True)
    cursor = fields.Integer(metadata={"description": "The last audit id delivered or skipped"})
    delivered = fields.Integer(metadata={"description": "Events delivered so far"})
    failures = fields.Integer(metadata={"description": "Failed deliveries in a row"})
    last_error = fields.String(allow_none=True)
    next_attempt_at = fields.DateTime(allow_none=True)
    last_delivered_at = fields.DateTime(allow_none=True)
    secret_rotated_at = fields.DateTime(allow_none=True)
    created_by = fields.Function(lambda s: {"id": s.created_by_id, "name": s.created_by_name})
    created_at = fields.DateTime()


class StreamWithSecretSchema(Schema):
    stream = fields.Nested(StreamSchema)
    secret = fields.String(
        allow_none=True,
        metadata={
            "description": "A webhook's new signing secret (Standard Webhooks, whsec_...), "
            "shown this once; null for other kinds"
        },
    )


@blp.route("")
class Streams(MethodView):
    @blp.arguments(StreamQuerySchema, location="query")
    @blp.response(200, StreamSchema(many=True))
    def get(self, query: dict[str, Any]) -> Any:
        """The streams you may manage, by id."""
        return services().streams.list(current_actor(), query.get("workspace"))

    @blp.arguments(StreamCreateSchema)
    @blp.response(201, StreamWithSecretSchema)
    def post(self, args: dict[str, Any]) -> Any:
        """A stream of the events from now on; a webhook's secret is in the answer, once.
        A destination on a loopback, link-local or private address is refused unless the
        installation allows them."""
        return services().streams.create(
            current_actor(),
            args["name"],
            args["workspace"],
            args["kind"],
            args["target"],
            args["event_types"],
            args.get("decision_sample", 0.0),
        )


@blp.route(f"/{STREAM_ID}")
class StreamById(MethodView):
    @blp.response(200, StreamSchema)
    def get(self, stream_id: int) -> Any:
        """One stream, with how far delivery got and why it paused, if it did."""
        return services().streams.get(current_actor(), stream_id)

    @blp.arguments(StreamUpdateSchema)
    @blp.response(200, StreamSchema)
    def patch(self, args: dict[str, Any], stream_id: int) -> Any:
        """Rename it, or change its destination, event types or decision sample rate."""
        return services().streams.update(current_actor(), stream_id, **args)

    @blp.response(204)
    def delete(self, stream_id: int) -> None:
        """Delete it: nothing more is sent."""
        services().streams.delete(current_actor(), stream_id)


@blp.route(f"/{STREAM_ID}/rotate-secret")
class RotateStreamSecret(MethodView):
    @blp.response(200, StreamWithSecretSchema)
    def post(self, stream_id: int) -> Any:
        """A new signing secret (shown once); the previous one stays valid beside it
        (each request is signed with both) until the next rotation."""
        return services().streams.rotate_secret(current_actor(), stream_id)


@blp.route(f"/{STREAM_ID}/resume")
class ResumeStream(MethodView):
    @blp.response(200, StreamSchema)
    def post(self, stream_id: int) -> Any:
        """Deliver again at once, from where it stopped (a paused stream, or one waiting
        to retry)."""
        return services().streams.resume(current_actor(), stream_id)


@blp.route(f"/{STREAM_ID}/replay")
class ReplayStream(MethodView):
    @blp.arguments(ReplaySchema)
    @blp.response(200, StreamSchema)
    def post(self, args: dict[str, Any], stream_id: int) -> Any:
        """Deliver again every matching event from an audit id on (as far as the trail
        still holds them); resumes a paused stream."""
        return services().streams.replay(current_actor(), stream_id, args["from_audit_id"])
