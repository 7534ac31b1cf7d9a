"""Signing in, refreshing the tokens, signing out."""

from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView

from admin_api.schemas import (
    AcceptedSchema,
    LoginSchema,
    PasswordChangeSchema,
    PasswordResetConfirmSchema,
    PasswordResetRequestSchema,
    RefreshSchema,
    SsoExchangeSchema,
    TokenSchema,
)
from gateway.logs import request_id
from gateway.web.background import after_answer
from gateway.web.http import current_actor, current_session_id, services
from gateway.web.json_input import Blueprint
from gateway.web.sso import exchange_code

blp = Blueprint("auth", __name__, url_prefix="/auth", description="Sign in for an access token")


@blp.route("/login")
class Login(MethodView):
    @blp.arguments(LoginSchema)
    @blp.response(200, TokenSchema)
    def post(self, args: dict[str, str]) -> Any:
        """Exchange email and password for a signed access token (JWT)."""
        return services().auth.login(
            args["email"], args["password"], request.remote_addr or "", request_id()
        )


@blp.route("/refresh")
class Refresh(MethodView):
    @blp.arguments(RefreshSchema)
    @blp.response(200, TokenSchema)
    def post(self, args: dict[str, str]) -> Any:
        """Exchange a refresh token (once) for a new access token and refresh token."""
        return services().auth.refresh(args["refresh_token"], request_id())


@blp.route("/logout")
class Logout(MethodView):
    @blp.response(204)
    def post(self) -> None:
        """End this sign-in session: its access and refresh tokens stop working."""
        services().auth.logout(current_session_id(), request_id())


@blp.route("/password")
class PasswordChange(MethodView):
    @blp.arguments(PasswordChangeSchema)
    @blp.response(200, TokenSchema)
    def post(self, args: dict[str, str]) -> Any:
        """Change your password (the current one is required). Every session of yours
        ends, this one included; the answer is a new session (access and refresh token)."""
        actor = current_actor()
        assert actor.user_id is not None  # a signed-in person
        return services().credentials.change_password(
            actor.user_id, args["current_password"], args["new_password"], _client(), request_id()
        )


RESET_ACCEPTED = (
    "If an active account uses this address, an email with a link to choose a new "
    "password is on its way."
)


@blp.route("/password-reset")
class PasswordReset(MethodView):
    @blp.arguments(PasswordResetRequestSchema)
    @blp.response(202, AcceptedSchema)
    def post(self, args: dict[str, str]) -> Any:
        """Ask for a password reset email. The answer is the same whether or not the
        address has an account; requests are throttled per address and per client."""
        email, client, rid = args["email"], _client(), request_id()
        services().credentials.check_reset_allowed(email, client, rid)
        # Looking the address up, and the email, happen after the answer: its content
        # and timing are the same for every address.
        after_answer(
            lambda s: s.credentials.request_reset(email, client, rid), "password reset request"
        )
        return {"detail": RESET_ACCEPTED}


@blp.route("/password-reset/confirm")
class PasswordResetConfirm(MethodView):
    @blp.arguments(PasswordResetConfirmSchema)
    @blp.response(204)
    def post(self, args: dict[str, str]) -> None:
        """Set a new password with the emailed token (once). Every session ends."""
        services().credentials.confirm_reset(
            args["token"], args["new_password"], _client(), request_id()
        )


@blp.route("/sso/exchange")
class SsoExchange(MethodView):
    @blp.arguments(SsoExchangeSchema)
    @blp.response(200, TokenSchema)
    def post(self, args: dict[str, str]) -> Any:
        """Exchange the one-time code from single sign-on for session tokens, once."""
        return exchange_code(args["code"])


def _client() -> str:
    return request.remote_addr or ""
