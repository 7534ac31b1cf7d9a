"""Directory connections: a company directory provisioning a workspace over SCIM 2.0
(``/scim/v2``, gateway.web.scim). Create one (its bearer token is shown once), list,
show, rotate the token, revoke, and set the roles it gives. ``directory:manage`` in the
connection's workspace."""

from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView
from marshmallow import Schema, fields, validate

from admin_api.schemas import NAME, ROLE, SLUG, LenientQuery, StrictSchema
from gateway.services.directory import ConnectionWithToken
from gateway.web.http import current_actor, services
from gateway.web.json_input import Blueprint

blp = Blueprint(
    "directory",
    __name__,
    url_prefix="/directory-connections",
    description="Company directories provisioning a workspace over SCIM 2.0",
)
# 32-bit ids, as elsewhere: a larger one is a 404 from routing, not a driver overflow.
CONNECTION_ID = "<int(max=2147483647):connection_id>"
SCIM_PATH = "/scim/v2"

GROUP_ROLES = fields.Dict(
    keys=fields.String(validate=validate.Length(min=1, max=255)),
    values=fields.String(validate=ROLE),
    load_default=dict,
    validate=validate.Length(max=500),
    metadata={
        "description": "Directory group name (any case) -> workspace role its members get",
        "example": {"engineering": "editor", "it-admins": "admin"},
    },
)
DEFAULT_ROLE = fields.String(
    load_default=None,
    allow_none=True,
    validate=ROLE,
    metadata={"description": "The role every active provisioned person gets (null: none)"},
)


class ConnectionCreateSchema(StrictSchema):
    workspace = fields.String(required=True, validate=SLUG)
    name = fields.String(required=True, validate=NAME, metadata={"example": "Okta"})
    default_role = DEFAULT_ROLE
    group_roles = GROUP_ROLES


class ConnectionRolesSchema(StrictSchema):
    default_role = DEFAULT_ROLE
    group_roles = GROUP_ROLES


class ConnectionQuery(LenientQuery):
    workspace = fields.String(validate=SLUG)


class ConnectionSchema(Schema):
    id = fields.Integer()
    workspace = fields.String(attribute="workspace_slug")
    name = fields.String()
    default_role = fields.String(allow_none=True)
    group_roles = fields.Dict(keys=fields.String(), values=fields.String())
    created_by = fields.String(attribute="created_by_name")
    created_at = fields.DateTime()
    token_rotated_at = fields.DateTime(allow_none=True)
    revoked_at = fields.DateTime(allow_none=True)
    last_used_at = fields.DateTime(allow_none=True)
    scim_base_url = fields.Function(lambda _c: scim_base_url())


class ConnectionWithTokenSchema(Schema):
    connection = fields.Nested(ConnectionSchema)
    token = fields.String(
        metadata={
            "description": "The directory's bearer token for scim_base_url. Shown this "
            "once; stored only as a hash. Keep it now."
        }
    )


def scim_base_url() -> str:
    return request.host_url.rstrip("/") + SCIM_PATH


def _with_token(made: ConnectionWithToken) -> dict[str, Any]:
    return {"connection": made.connection, "token": made.token}


@blp.route("")
class Connections(MethodView):
    @blp.arguments(ConnectionQuery, location="query")
    @blp.response(200, ConnectionSchema(many=True))
    def get(self, args: dict[str, Any]) -> Any:
        """The connections of the workspaces where you hold ``directory:manage``."""
        return services().directory.connections(current_actor(), args.get("workspace"))

    @blp.arguments(ConnectionCreateSchema)
    @blp.response(201, ConnectionWithTokenSchema)
    def post(self, args: dict[str, Any]) -> Any:
        """Connect a directory to a workspace; the answer holds its token, shown once."""
        return _with_token(
            services().directory.create(
                current_actor(),
                args["workspace"],
                args["name"],
                args["default_role"],
                args["group_roles"],
            )
        )


@blp.route(f"/{CONNECTION_ID}")
class ConnectionById(MethodView):
    @blp.response(200, ConnectionSchema)
    def get(self, connection_id: int) -> Any:
        """One connection."""
        return services().directory.get(current_actor(), connection_id)

    @blp.response(200, ConnectionSchema)
    def delete(self, connection_id: int) -> Any:
        """Revoke the connection: its token stops working at once. The people it
        provisioned and their roles stay."""
        return services().directory.revoke(current_actor(), connection_id)


@blp.route(f"/{CONNECTION_ID}/rotate-token")
class RotateToken(MethodView):
    @blp.response(200, ConnectionWithTokenSchema)
    def post(self, connection_id: int) -> Any:
        """A new token (shown once); the old one stops working at once."""
        return _with_token(services().directory.rotate_token(current_actor(), connection_id))


@blp.route(f"/{CONNECTION_ID}/roles")
class ConnectionRoles(MethodView):
    @blp.arguments(ConnectionRolesSchema)
    @blp.response(200, ConnectionSchema)
    def put(self, args: dict[str, Any], connection_id: int) -> Any:
        """Replace the default role and the group -> role mapping; provisioned people's
        roles follow at once. Only roles you could grant in the workspace."""
        return services().directory.set_roles(
            current_actor(), connection_id, args["default_role"], args["group_roles"]
        )
