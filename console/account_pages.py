"""The signed-in person's account page (``/console/account``): who they are and what they
can use here, the roles they hold, the invitations waiting for them (the API's ``GET
/invitations/mine``) with **Accept** (``POST /invitations/{id}/accept``), and changing
their own password (``POST /auth/password``). Thin handlers over the same services,
schema and audit events as the API:

- a password change needs the current password and a new one that passes the policy
  (``PasswordChangeSchema``, then ``CredentialService.change_password``: 12 characters or
  more, not a common password, not the current one); wrong current passwords count as
  failed sign-ins. Every session of the person ends, this one too, as in the API; this
  browser carries on in the new session the service starts, everywhere else signs in
  again;
- accepting is ``InvitationService.accept_signed_in``: an invitation not addressed to
  this account is the 404 of an unknown id."""

from __future__ import annotations

from flask import Response, request
from marshmallow import ValidationError

from admin_api.schemas import PasswordChangeSchema
from console import session as console_session
from console.views import _field_errors, _nav, _render, bp, viewer
from gateway.errors import InvalidInput, TooManyRequests
from gateway.logs import request_id
from gateway.services.permissions import Permission
from gateway.web.http import services

INVITATION_ID = "<int(max=2147483647):invitation_id>"
# The order of the form's fields: focus goes to the first one in error.
PASSWORD_FIELDS = ("current_password", "new_password")
EMPTY = {
    "current_password": "Type your current password",
    "new_password": "Type a new password",
}


def _account_page(
    status: int = 200,
    notice: str | None = None,
    errors: dict[str, list[str]] | None = None,
) -> Response:
    v = viewer()
    errors = errors or {}
    return _render(
        "account.html",
        status=status,
        active="account",
        pages=_nav(),
        everywhere=v.where(Permission.USERS_READ) is None,
        roles=services().account.roles(v.actor),
        waiting=services().account.waiting(v.actor),
        errors=errors,
        first_error=next((f for f in PASSWORD_FIELDS if errors.get(f)), None),
        notice=notice,
    )


@bp.get("/account")
def account() -> Response:
    """Who they are and what they can use here (where someone without any admin
    permission lands: then, that they have none), their roles and invitations."""
    return _account_page()


@bp.post("/account/password")
def account_password() -> Response:
    v = viewer()
    typed = {field: request.form.get(field, "") for field in PASSWORD_FIELDS}
    errors = {field: [EMPTY[field]] for field in PASSWORD_FIELDS if not typed[field]}
    if errors:
        return _account_page(422, errors=errors)
    try:
        args = PasswordChangeSchema().load(typed)
        issued = services().credentials.change_password(
            v.user_id,
            args["current_password"],
            args["new_password"],
            request.remote_addr or "",
            request_id(),
        )
    except (ValidationError, InvalidInput) as exc:
        return _account_page(422, errors=_field_errors(exc))
    except TooManyRequests as exc:
        response = _account_page(429, errors={"_form": [exc.detail or exc.title]})
        response.headers["Retry-After"] = str(exc.extensions.get("retry_after", 60))
        return response
    # Every session of theirs ended, this browser's too: it carries on in the new one.
    _, session_id = services().auth.authenticate(issued.access_token)
    assert session_id is not None
    v.session_id = session_id  # the page's CSRF tokens are the new session's
    response = _account_page(
        notice="Your password is changed. Every other sign-in of yours has ended: other "
        "browsers, and API tokens, must sign in again with the new password. This browser "
        "stays signed in."
    )
    console_session.start_session(response, session_id)
    return response


@bp.post(f"/account/invitations/{INVITATION_ID}/accept")
def account_accept(invitation_id: int) -> Response:
    v = viewer()
    waiting = {w.id: w for w in services().account.waiting(v.actor)}
    services().invitations.accept_signed_in(v.actor, invitation_id)  # NotFound if not theirs
    accepted = waiting.get(invitation_id)
    roles = "; ".join(f"{role} in {name}" for name, role in accepted.grants) if accepted else ""
    return _account_page(
        notice=f"Invitation accepted: you are now {roles}." if roles else "Invitation accepted."
    )
