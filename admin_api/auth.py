"""Signing in, refreshing the tokens, signing out."""

from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint

from admin_api.schemas import LoginSchema, RefreshSchema, TokenSchema
from gateway.http import current_session_id, services

blp = Blueprint("auth", __name__, url_prefix="/auth", description="Sign in for an access token")


@blp.route("/login")
class Login(MethodView):
    @blp.arguments(LoginSchema)
    @blp.response(200, TokenSchema)
    def post(self, args: dict[str, str]) -> Any:
        """Exchange email and password for a signed access token (JWT)."""
        return services().auth.login(args["email"], args["password"], request.remote_addr or "")


@blp.route("/refresh")
class Refresh(MethodView):
    @blp.arguments(RefreshSchema)
    @blp.response(200, TokenSchema)
    def post(self, args: dict[str, str]) -> Any:
        """Exchange a refresh token (once) for a new access token and refresh token."""
        return services().auth.refresh(args["refresh_token"])


@blp.route("/logout")
class Logout(MethodView):
    @blp.response(204)
    def post(self) -> None:
        """End this sign-in session: its access and refresh tokens stop working."""
        services().auth.logout(current_session_id())
