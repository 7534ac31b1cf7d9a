"""A workspace's own single sign-on: its OpenID Connect connection (``/sso-connections``)
and the email domains it proves by DNS (``/sso-domains``). ``sso:manage`` in the
workspace (owners); thin handlers over ``gateway.services.sso_connections`` and
``gateway.services.sso_domains``."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import Schema, fields, validate

from admin_api.schemas import NAME, ROLE, SLUG, LenientQuery, PlainText, StrictSchema
from gateway.web.http import current_actor, services
from gateway.web.json_input import Blueprint

connections_blp = Blueprint(
    "sso_connections",
    __name__,
    url_prefix="/sso-connections",
    description="A workspace's own single sign-on (OpenID Connect) connection",
)
# 32-bit ids, as elsewhere: a larger one is a 404 from routing, not a driver overflow.
CONNECTION_ID = "<int(max=2147483647):connection_id>"

ISSUER: dict[str, Any] = {
    "validate": [validate.Length(min=1, max=255), PlainText()],
    "metadata": {
        "description": "The provider's issuer URL (discovery from "
        "<issuer>/.well-known/openid-configuration); https on a public address",
        "example": "https://idp.example.com",
    },
}
CLIENT_ID: dict[str, Any] = {
    "validate": [validate.Length(min=1, max=255), PlainText()],
    "metadata": {"description": "This gateway's client id at the provider"},
}
CLIENT_SECRET: dict[str, Any] = {
    "load_only": True,
    "validate": [validate.Length(min=1, max=1000), PlainText()],
    "metadata": {
        "description": "That client's secret: write-only (stored sealed, never returned); "
        "required again whenever the issuer changes"
    },
}
JIT_ROLE: dict[str, Any] = {
    "allow_none": True,
    "validate": ROLE,
    "metadata": {
        "description": "Just-in-time provisioning: the role a person of a verified domain "
        "without an account gets at their first sign-on (null: off, the default); only a "
        "role you could grant in the workspace"
    },
}


class SsoConnectionCreateSchema(StrictSchema):
    workspace = fields.String(required=True, validate=SLUG)
    name = fields.String(required=True, validate=NAME, metadata={"example": "Okta"})
    issuer = fields.String(required=True, **ISSUER)
    client_id = fields.String(required=True, **CLIENT_ID)
    client_secret = fields.String(required=True, **CLIENT_SECRET)
    enabled = fields.Boolean(load_default=True)
    require_sso = fields.Boolean(
        load_default=False,
        metadata={
            "description": "Refuse password sign-in to people of the workspace's verified "
            "domains: they sign in through this connection"
        },
    )
    jit_role = fields.String(load_default=None, **JIT_ROLE)


class SsoConnectionUpdateSchema(StrictSchema):
    name = fields.String(validate=NAME)
    issuer = fields.String(**ISSUER)
    client_id = fields.String(**CLIENT_ID)
    client_secret = fields.String(**CLIENT_SECRET)
    enabled = fields.Boolean(
        metadata={
            "description": "false: nobody signs in through it, and the people who have no "
            "password and signed in through it lose their sessions at once"
        }
    )
    require_sso = fields.Boolean()
    jit_role = fields.String(**JIT_ROLE)


class SsoConnectionQuery(LenientQuery):
    workspace = fields.String(validate=SLUG)


class SsoConnectionSchema(Schema):
    id = fields.Integer()
    workspace = fields.String(attribute="workspace_slug")
    name = fields.String()
    issuer = fields.String()
    client_id = fields.String()
    client_secret_set = fields.Function(lambda _c: True)
    enabled = fields.Boolean()
    require_sso = fields.Boolean()
    jit_role = fields.String(allow_none=True)
    redirect_uri = fields.String(
        metadata={"description": "The redirect URI to register at the provider"}
    )
    backchannel_logout_uri = fields.String(
        metadata={
            "description": "The back-channel logout URI to register at the provider "
            "(OpenID Connect Back-Channel Logout 1.0): its logout tokens end the sessions "
            "started through this connection"
        }
    )
    created_by = fields.String(attribute="created_by_name")
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class SsoConnectionCheckSchema(Schema):
    ok = fields.Boolean()
    detail = fields.String()


class SsoLinkSchema(Schema):
    user_id = fields.Integer()
    name = fields.String()
    email = fields.String()
    status = fields.String()
    subject = fields.String(metadata={"description": "The provider's subject (sub)"})
    linked_at = fields.DateTime()
    last_sign_in_at = fields.DateTime(allow_none=True)


class SsoUnlinkedSchema(Schema):
    link = fields.Nested(SsoLinkSchema, metadata={"description": "The link that was removed"})
    sessions_ended = fields.Integer(
        metadata={"description": "Sessions the person had started through the connection"}
    )
    other_ways_in = fields.List(
        fields.String(),
        metadata={
            "description": "How the person can still sign in: password, passkey, another "
            "workspace's single sign-on, the installation's single sign-on"
        },
    )
    no_other_way_in = fields.Function(
        lambda u: not u.other_ways_in,
        metadata={
            "description": "true: the person can sign in only through this connection "
            "again (which links them anew if the provider still vouches for them)"
        },
    )


@connections_blp.route("")
class Connections(MethodView):
    @connections_blp.arguments(SsoConnectionQuery, location="query")
    @connections_blp.response(200, SsoConnectionSchema(many=True))
    def get(self, args: dict[str, Any]) -> Any:
        """The connections of the workspaces where you hold ``sso:manage``."""
        return services().sso_connections.connections(current_actor(), args.get("workspace"))

    @connections_blp.arguments(SsoConnectionCreateSchema)
    @connections_blp.response(201, SsoConnectionSchema)
    def post(self, args: dict[str, Any]) -> Any:
        """Set up the workspace's connection (one per workspace)."""
        workspace = args.pop("workspace")
        return services().sso_connections.create(current_actor(), workspace, args)


@connections_blp.route(f"/{CONNECTION_ID}")
class ConnectionById(MethodView):
    @connections_blp.response(200, SsoConnectionSchema)
    def get(self, connection_id: int) -> Any:
        """One connection (never its secret)."""
        return services().sso_connections.get(current_actor(), connection_id)

    @connections_blp.arguments(SsoConnectionUpdateSchema)
    @connections_blp.response(200, SsoConnectionSchema)
    def patch(self, args: dict[str, Any], connection_id: int) -> Any:
        """Change some of its settings; turn it off or on."""
        return services().sso_connections.update(current_actor(), connection_id, args)


@connections_blp.route(f"/{CONNECTION_ID}/check")
class ConnectionCheck(MethodView):
    @connections_blp.response(200, SsoConnectionCheckSchema)
    def post(self, connection_id: int) -> Any:
        """Fetch the provider's discovery document now and say whether it answers as the
        sign-in needs. Changes nothing."""
        return services().sso_connections.check(current_actor(), connection_id)


@connections_blp.route(f"/{CONNECTION_ID}/links")
class ConnectionLinks(MethodView):
    @connections_blp.response(200, SsoLinkSchema(many=True))
    def get(self, connection_id: int) -> Any:
        """The accounts linked to the connection's subjects, of people with a role in its
        workspace: who, which subject, since when, their last sign-in through it."""
        return services().sso_connections.links(current_actor(), connection_id)


@connections_blp.route(f"/{CONNECTION_ID}/links/<int(max=2147483647):user_id>")
class ConnectionLink(MethodView):
    @connections_blp.response(200, SsoUnlinkedSchema)
    def delete(self, connection_id: int, user_id: int) -> Any:
        """Unlink a person: the link is forgotten and the sessions they started through
        the connection end at once (audited ``sso.unlinked``). The answer says whether
        they have another way in. It does not bar them: a person the provider still signs
        in is linked again by their verified email; deactivate them to keep them out.
        404 for someone not linked, without a role in the workspace, or unknown."""
        return services().sso_connections.unlink(current_actor(), connection_id, user_id)


domains_blp = Blueprint(
    "sso_domains",
    __name__,
    url_prefix="/sso-domains",
    description="Email domains a workspace proves it owns by a DNS TXT record",
)
DOMAIN_ID = "<int(max=2147483647):domain_id>"


class SsoDomainClaimSchema(StrictSchema):
    workspace = fields.String(required=True, validate=SLUG)
    domain = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=253), PlainText()],
        metadata={"example": "acme.com"},
    )


class SsoDomainQuery(LenientQuery):
    workspace = fields.String(validate=SLUG)


class SsoDomainSchema(Schema):
    id = fields.Integer(attribute="domain.id")
    workspace = fields.String(attribute="domain.workspace_slug")
    domain = fields.String(attribute="domain.domain")
    verified = fields.Boolean()
    verified_at = fields.DateTime(attribute="domain.verified_at", allow_none=True)
    last_checked_at = fields.DateTime(attribute="domain.last_checked_at", allow_none=True)
    last_check = fields.String(
        attribute="domain.last_check",
        allow_none=True,
        metadata={"description": "The last lookup's outcome, in words"},
    )
    txt_name = fields.String(metadata={"description": "Where to publish the TXT record"})
    txt_value = fields.String(metadata={"description": "The TXT record's value"})
    created_by = fields.String(attribute="domain.created_by_name")
    created_at = fields.DateTime(attribute="domain.created_at")


@domains_blp.route("")
class Domains(MethodView):
    @domains_blp.arguments(SsoDomainQuery, location="query")
    @domains_blp.response(200, SsoDomainSchema(many=True))
    def get(self, args: dict[str, Any]) -> Any:
        """The domains claimed by the workspaces where you hold ``sso:manage``."""
        return services().sso_domains.domains(current_actor(), args.get("workspace"))

    @domains_blp.arguments(SsoDomainClaimSchema)
    @domains_blp.response(201, SsoDomainSchema)
    def post(self, args: dict[str, Any]) -> Any:
        """Claim a domain for a workspace: the answer says which TXT record to publish.
        409 if the workspace claimed it already, or another holds it verified."""
        return services().sso_domains.claim(current_actor(), args["workspace"], args["domain"])


@domains_blp.route(f"/{DOMAIN_ID}")
class DomainById(MethodView):
    @domains_blp.response(200, SsoDomainSchema)
    def get(self, domain_id: int) -> Any:
        """One claim."""
        return services().sso_domains.get(current_actor(), domain_id)

    @domains_blp.response(204)
    def delete(self, domain_id: int) -> None:
        """Withdraw the claim: the domain's people are no longer routed to the
        workspace's single sign-on, nor held to it."""
        services().sso_domains.release(current_actor(), domain_id)


@domains_blp.route(f"/{DOMAIN_ID}/verify")
class DomainVerify(MethodView):
    @domains_blp.response(200, SsoDomainSchema)
    def post(self, domain_id: int) -> Any:
        """Look the TXT record up now. A pending claim with its record is verified (409
        ``domain-not-verified`` if the record is not there or another workspace holds the
        domain; changes nothing); a verified one is checked again, and unverified if the
        record is gone. 503 ``dns-unavailable`` when DNS does not answer (nothing
        changes)."""
        return services().sso_domains.verify(current_actor(), domain_id)
