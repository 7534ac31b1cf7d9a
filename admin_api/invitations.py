"""Invitations: create, list, get, resend, revoke, and accept (with the emailed token)."""

from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView

from admin_api.pagination import items, window
from admin_api.schemas import (
    AcceptSchema,
    InvitationCreateSchema,
    InvitationQuerySchema,
    InvitationSchema,
    UserSchema,
)
from gateway.logs import request_id
from gateway.web.http import current_actor, services
from gateway.web.json_input import Blueprint

blp = Blueprint("invitations", __name__, url_prefix="/invitations", description="Inviting people")
# Ids are 32-bit in the database: a larger id is a 404 from routing, not an overflow
# inside the database driver (a 500).
INVITATION_ID = "<int(max=2147483647):invitation_id>"


@blp.route("")
class Invitations(MethodView):
    @blp.arguments(InvitationQuerySchema, location="query")
    @blp.response(200, InvitationSchema(many=True))
    @blp.paginate()
    def get(self, query: dict[str, Any], pagination_parameters: Any) -> Any:
        """Invitations into workspaces where you may invite, newest first."""
        page = services().invitations.list(
            current_actor(),
            query.get("status"),
            *window(pagination_parameters),
            older_than_days=query.get("older_than_days"),
        )
        return items(pagination_parameters, page)

    @blp.arguments(InvitationCreateSchema)
    @blp.response(201, InvitationSchema)
    def post(self, args: dict[str, Any]) -> Any:
        """Invite a person with roles in one or more workspaces; the email is sent after commit."""
        return services().invitations.create(
            current_actor(), args["email"], args["name"], args["roles"]
        )


@blp.route(f"/{INVITATION_ID}")
class InvitationById(MethodView):
    @blp.response(200, InvitationSchema)
    def get(self, invitation_id: int) -> Any:
        """One invitation."""
        return services().invitations.get(current_actor(), invitation_id)


@blp.route(f"/{INVITATION_ID}/resend")
class Resend(MethodView):
    @blp.response(200, InvitationSchema)
    def post(self, invitation_id: int) -> Any:
        """Send a new link (the old one stops working) with a fresh expiry."""
        return services().invitations.resend(current_actor(), invitation_id)


@blp.route(f"/{INVITATION_ID}/revoke")
class Revoke(MethodView):
    @blp.response(200, InvitationSchema)
    def post(self, invitation_id: int) -> Any:
        """Make the invitation link stop working."""
        return services().invitations.revoke(current_actor(), invitation_id)


@blp.route("/accept")
class Accept(MethodView):
    @blp.arguments(AcceptSchema)
    @blp.response(200, UserSchema)
    def post(self, args: dict[str, str]) -> Any:
        """Accept an invitation with the emailed token (no sign-in): a new account chooses
        its password; an existing account gains the roles and keeps its password."""
        user = services().invitations.accept(
            args["token"],
            args.get("password"),
            args.get("name"),
            client=request.remote_addr or "",
            request_id=request_id(),
        )
        return services().users.view(user)


@blp.route("/mine")
class Mine(MethodView):
    @blp.response(200, InvitationSchema(many=True))
    def get(self) -> Any:
        """Invitations waiting for your answer (addressed to your account)."""
        return services().invitations.for_account(current_actor())


@blp.route(f"/{INVITATION_ID}/accept")
class AcceptSignedIn(MethodView):
    @blp.response(200, UserSchema)
    def post(self, invitation_id: int) -> Any:
        """Accept an invitation addressed to your account, signed in: you gain its roles."""
        actor = current_actor()
        user = services().invitations.accept_signed_in(actor, invitation_id)
        return services().users.view(user)
