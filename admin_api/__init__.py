"""The admin REST API: thin flask-smorest handlers over ``gateway.services``."""

from __future__ import annotations

from typing import Any

from flask import request
from flask_smorest import Api

from admin_api import (
    audit,
    auth,
    clients,
    invitations,
    reports,
    reviews,
    settings,
    users,
    workspaces,
)
from gateway.http import current_actor

# Everything else needs a signed-in caller.
PUBLIC_ENDPOINTS = frozenset({"auth.Login", "auth.Refresh", "invitations.Accept"}) | {
    "auth.PasswordReset",
    "auth.PasswordResetConfirm",
    "auth.SsoExchange",
}


def _require_sign_in() -> None:
    # Before argument parsing, so an anonymous caller learns nothing from validation errors.
    if request.endpoint not in PUBLIC_ENDPOINTS:
        current_actor()


BLUEPRINTS: tuple[Any, ...] = (
    auth.blp,
    workspaces.blp,
    users.blp,
    invitations.blp,
    audit.blp,
    settings.blp,
)
BLUEPRINTS += (reviews.blp, reports.blp)
BLUEPRINTS += (clients.blp,)
for _blp in BLUEPRINTS:  # once, at import: blueprints are shared by every app
    _blp.before_request(_require_sign_in)


def register(api: Api) -> None:
    for blp in BLUEPRINTS:
        api.register_blueprint(blp)
