"""Signing in."""

from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint

from admin_api.schemas import LoginSchema, TokenSchema
from gateway.http import services

blp = Blueprint("auth", __name__, url_prefix="/auth", description="Sign in for an access token")


@blp.route("/login")
class Login(MethodView):
    @blp.arguments(LoginSchema)
    @blp.response(200, TokenSchema)
    def post(self, args: dict[str, str]) -> Any:
        """Exchange email and password for a signed access token (JWT)."""
        return services().auth.login(args["email"], args["password"], request.remote_addr or "")
