"""The page behind the emailed password reset link, ``/reset/<token>``: choose a new
password, once.

Server-rendered, no script, the same headers as the invitation page; it calls the same
service as ``POST /auth/password-reset/confirm``. Request logs redact the token
(:class:`gateway.web.accept_page.RedactInviteTokens`).
"""

from __future__ import annotations

from flask import Blueprint, render_template, request

from gateway.errors import InvalidInput, RingfenceError
from gateway.identity.passwords import MIN_PASSWORD_LENGTH
from gateway.logs import request_id
from gateway.web.accept_page import HEADERS
from gateway.web.http import services

bp = Blueprint("reset_page", __name__, template_folder="templates")

NOT_WORKING = "This password reset link does not work"


def _page(status: int = 200, **context: object) -> tuple[str, int, dict[str, str]]:
    context.setdefault("title", "Choose a new password")
    context.setdefault("min_length", MIN_PASSWORD_LENGTH)
    context.setdefault("field_errors", [])
    return render_template("reset.html", **context), status, HEADERS


def _form(token: str, status: int = 200, **extra: object) -> tuple[str, int, dict[str, str]]:
    state = services().credentials.reset_link_state(token)
    if not state.usable:
        return _page(410, title=NOT_WORKING, error=state.reason)
    return _page(status, email=state.email, show_form=True, **extra)


@bp.get("/reset/<token>")
def form(token: str) -> tuple[str, int, dict[str, str]]:
    return _form(token[:200])


@bp.post("/reset/<token>")
def reset(token: str) -> tuple[str, int, dict[str, str]]:
    token = token[:200]
    password = request.form.get("password", "")[:1024]
    try:
        user = services().credentials.confirm_reset(
            token, password, request.remote_addr or "", request_id()
        )
    except InvalidInput as exc:
        return _form(token, 422, field_errors=[exc.detail])
    except RingfenceError as exc:
        return _page(exc.status, title=NOT_WORKING, error=exc.detail)
    return _page(
        title="Your password is changed",
        message=f"The password of {user.email} is changed and every session ended. "
        "Sign in with the new password.",
    )
