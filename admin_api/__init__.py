"""The admin REST API: thin flask-smorest handlers over ``gateway.services``."""

from __future__ import annotations

from typing import Any

from flask import request
from flask_smorest import Api

from admin_api import (
    audit,
    auth,
    clients,
    custom_roles,
    invitations,
    mfa,
    policy,
    reports,
    reviews,
    roles,
    settings,
    users,
    workspace_sso,
    workspaces,
)
from admin_api import directory as directory_api
from admin_api import streams as event_streams
from gateway.web.http import current_actor

# Everything else needs a signed-in caller.
PUBLIC_ENDPOINTS = frozenset({"auth.Login", "auth.Refresh", "invitations.Accept"}) | {
    "auth.PasswordReset",
    "auth.PasswordResetConfirm",
    "auth.SsoExchange",
    "mfa.Verify",
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
BLUEPRINTS += (directory_api.blp,)
BLUEPRINTS += (workspace_sso.connections_blp, workspace_sso.domains_blp)
BLUEPRINTS += (clients.blp,)
BLUEPRINTS += (event_streams.blp,)
BLUEPRINTS += (roles.blp, custom_roles.blp)
BLUEPRINTS += (policy.blp,)
BLUEPRINTS += (mfa.blp, mfa.users_blp, mfa.workspaces_blp)
for _blp in BLUEPRINTS:  # once, at import: blueprints are shared by every app
    _blp.before_request(_require_sign_in)


def register(api: Api) -> None:
    for blp in BLUEPRINTS:
        api.register_blueprint(blp)
