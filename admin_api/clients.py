"""OAuth 2.0 clients of services: create (the secret is shown once), list, show, rotate
the secret, delete. Installation-wide: needs ``clients:read`` / ``clients:write`` in
every workspace (a super admin)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import Schema, fields, validate

from admin_api.schemas import NAME, LenientQuery, StrictSchema
from gateway.services.oauth import SCOPES
from gateway.web.http import current_actor, services
from gateway.web.json_input import Blueprint

blp = Blueprint(
    "clients",
    __name__,
    url_prefix="/clients",
    description="OAuth 2.0 clients of services (client credentials for POST /oauth/token)",
)

CLIENT_ID = "<client_id>"


class ClientCreateSchema(StrictSchema):
    name = fields.String(required=True, validate=NAME)
    scopes = fields.List(
        fields.String(validate=validate.OneOf(sorted(SCOPES))),
        required=True,
        validate=validate.Length(min=1, max=len(SCOPES)),
        metadata={"description": f"Any of: {', '.join(sorted(SCOPES))}"},
    )


class ClientListQuery(LenientQuery):
    # As the OpenAPI document says it: true or false (not 1, yes or on).
    include_deleted = fields.Boolean(load_default=False, truthy={"true"}, falsy={"false"})


class ClientSchema(Schema):
    client_id = fields.String()
    name = fields.String()
    scopes = fields.Function(lambda client: client.scopes.split())
    created_by = fields.String(attribute="created_by_name")
    created_at = fields.DateTime()
    secret_rotated_at = fields.DateTime(allow_none=True)
    deleted_at = fields.DateTime(attribute="revoked_at", allow_none=True)


class ClientWithSecretSchema(Schema):
    client = fields.Nested(ClientSchema)
    client_secret = fields.String(
        metadata={"description": "Shown this once; stored only as a hash. Keep it now."}
    )


@blp.route("")
class Clients(MethodView):
    @blp.arguments(ClientListQuery, location="query")
    @blp.response(200, ClientSchema(many=True))
    def get(self, args: dict[str, Any]) -> Any:
        """Every client (deleted ones with ``include_deleted=true``)."""
        return services().clients.list(current_actor(), args["include_deleted"])

    @blp.arguments(ClientCreateSchema)
    @blp.response(201, ClientWithSecretSchema)
    def post(self, args: dict[str, Any]) -> Any:
        """Create a client; the answer holds its secret, shown this once."""
        return services().clients.create(current_actor(), args["name"], args["scopes"])


@blp.route(f"/{CLIENT_ID}")
class ClientById(MethodView):
    @blp.response(200, ClientSchema)
    def get(self, client_id: str) -> Any:
        """One client."""
        return services().clients.get(current_actor(), client_id)

    @blp.response(200, ClientSchema)
    def delete(self, client_id: str) -> Any:
        """Delete a client: it gets no more tokens and its tokens stop working at once."""
        return services().clients.delete(current_actor(), client_id)


@blp.route(f"/{CLIENT_ID}/rotate-secret")
class RotateSecret(MethodView):
    @blp.response(200, ClientWithSecretSchema)
    def post(self, client_id: str) -> Any:
        """A new secret (shown once); the old one stops working at once."""
        return services().clients.rotate_secret(current_actor(), client_id)
