"""The applied policy and the grants in force, read-only: what ``ringfence policy plan
--gateway URL`` computes its plan on when it reads a running gateway instead of the
database. Needs ``role_management:read``; shows only the workspaces where the caller
holds it (everything, and grants in every workspace, only to those who hold it
everywhere)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import request
from flask.views import MethodView
from marshmallow import Schema, fields, validate

from admin_api.schemas import LenientQuery
from gateway.web.http import current_actor, services
from gateway.web.json_input import Blueprint

blp = Blueprint("policy", __name__, url_prefix="/policy", description="The applied policy")

MAX_PAGE_SIZE = 10_000


class PolicyRuleSchema(Schema):
    ptype = fields.String(metadata={"description": "p (a permission) or g (inheritance)"})
    values = fields.List(fields.String(), metadata={"description": "As stored (model.conf)"})


class AppliedPolicySchema(Schema):
    revision = fields.Integer(metadata={"description": "The policy revision when read"})
    everything = fields.Boolean(
        metadata={
            "description": "The caller reads roles in every workspace: every workspace and "
            "every grant (those in every workspace, *, too) are shown"
        }
    )
    workspaces = fields.List(
        fields.String(), metadata={"description": "The workspaces shown, sorted"}
    )
    rules = fields.List(
        fields.Nested(PolicyRuleSchema),
        metadata={
            "description": "The applied rules of policies/ (custom roles left out) shared by "
            "every workspace or written for one of those shown"
        },
    )
    custom_rules = fields.List(
        fields.Nested(PolicyRuleSchema),
        metadata={"description": "The rules of the custom roles of the workspaces shown"},
    )
    installation_roles = fields.List(
        fields.String(),
        metadata={
            "description": "The roles granted only in every workspace (*), never in one "
            "(scope: installation), as the policy last applied recorded them"
        },
    )


class PolicyGrantsQuerySchema(LenientQuery):
    cursor = fields.String(
        validate=validate.Length(max=200),
        metadata={"description": "X-Next-Cursor of the previous page (opaque)"},
    )
    page_size = fields.Integer(load_default=1000, validate=validate.Range(min=1, max=MAX_PAGE_SIZE))


class LiveGrantSchema(Schema):
    id = fields.Integer()
    user_id = fields.Integer()
    email = fields.String()
    name = fields.String()
    active = fields.Boolean(metadata={"description": "False: deactivated, holds nothing"})
    role = fields.String()
    workspace = fields.String(metadata={"description": "A workspace, or * for every one"})


GRANT_PAGE_HEADERS = {
    "X-Next-Cursor": {
        "description": "The cursor of the next page; absent on the last one",
        "schema": {"type": "string"},
    },
    "Link": {"description": '<next page URL>; rel="next"', "schema": {"type": "string"}},
}


@blp.route("/applied")
class Applied(MethodView):
    @blp.response(200, AppliedPolicySchema)
    def get(self) -> Any:
        """The applied policy's rules and the workspaces shown, as far as you may read
        roles (``role_management:read``)."""
        return services().plan_inputs.applied(current_actor())


@blp.route("/grants")
class Grants(MethodView):
    @blp.arguments(PolicyGrantsQuerySchema, location="query")
    @blp.response(200, LiveGrantSchema(many=True), headers=GRANT_PAGE_HEADERS)
    def get(self, query: dict[str, Any]) -> Any:
        """The grants in force with their holders, by id, in the workspaces where you may
        read roles (``role_management:read``; grants in every workspace, ``*``, only if
        you may everywhere). The next page is at ``cursor`` = the ``X-Next-Cursor``
        header (also in ``Link: rel="next"``)."""
        page = services().plan_inputs.grants(
            current_actor(), query.get("cursor"), query["page_size"]
        )
        headers = {}
        if page.next_cursor:
            params = {**request.args.to_dict(), "cursor": page.next_cursor}
            headers["X-Next-Cursor"] = page.next_cursor
            headers["Link"] = f'<{request.base_url}?{urlencode(params)}>; rel="next"'
        return page.items, 200, headers
