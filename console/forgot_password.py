"""``/console/forgot-password``: ask for a password reset email from the sign-in page.

The same service and the same answer as ``POST /auth/password-reset``: the request is
counted (throttled per address and per client) before the answer, and the address is
looked up and the email sent after it, so the page reads and takes the same for every
address, with an account or not. The emailed link opens ``/reset/<token>``
(:mod:`gateway.web.reset_page`).
"""

from __future__ import annotations

from flask import Response, g, request
from marshmallow import ValidationError

from admin_api.auth import RESET_ACCEPTED
from admin_api.schemas import PasswordResetRequestSchema
from console import session as console_session
from console.views import PUBLIC_ENDPOINTS, _field_errors, _render, bp
from gateway.errors import TooManyRequests
from gateway.logs import request_id
from gateway.web.background import after_answer
from gateway.web.http import services

PUBLIC_ENDPOINTS.add("console.forgot_password")  # signed out, by its nature


def _page(status: int = 200, **context: object) -> Response:
    token, new_cookie = console_session.pre_session_token()
    g.console_pre_token = token  # the form's CSRF token, as on the sign-in page
    context.setdefault("errors", {})
    context.setdefault("email", "")
    response = _render("forgot_password.html", status=status, **context)
    if new_cookie:
        console_session.set_pre_session(response, new_cookie)
    return response


@bp.route("/forgot-password", methods=["GET", "POST"])
def forgot_password() -> Response:
    if request.method == "GET":
        return _page()
    typed = request.form.get("email", "").strip()
    try:
        email = PasswordResetRequestSchema().load({"email": typed})["email"]
    except ValidationError as error:
        errors = _field_errors(error)
        errors["email"] = ["Enter the email address you sign in with"]
        return _page(422, errors=errors, email=typed[:320])
    client, rid = request.remote_addr or "", request_id()
    try:
        services().credentials.check_reset_allowed(email, client, rid)
    except TooManyRequests as refused:
        return _page(429, errors={"_form": [refused.detail or refused.title]}, email=email)
    after_answer(
        lambda s: s.credentials.request_reset(email, client, rid), "password reset request"
    )
    return _page(sent=RESET_ACCEPTED)
