"""The admin REST API: thin flask-smorest handlers over ``gateway.services``."""

from __future__ import annotations

from flask_smorest import Api

from admin_api import audit, auth, invitations, users, workspaces


def register(api: Api) -> None:
    for module in (auth, workspaces, users, invitations, audit):
        api.register_blueprint(module.blp)
