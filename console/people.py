"""A person's page in the console: everything about one person in one place (roles per
workspace and where each came from, invitations and their delivery, sign-in sessions,
last sign-in and last seen per workspace, their audit trail), from
``gateway.services.people`` behind the same walls as the API's ``GET /users/{id}``: a
person the admin may not see is the 404 of an unknown id.

Also here: resetting the person's two-step sign-in (the API's ``POST
/users/{id}/mfa/reset``), shown and offered as ``MfaService.factors_for_admin`` says, after
a confirmation naming the person and saying what happens (a panel with htmx, a page of
its own without script), then the same service call and audit event (``mfa.reset``)."""

from __future__ import annotations

from flask import Response, url_for

from console.views import _htmx, _panel, _render, _row, bp, viewer
from gateway.services.invitations import effective_status
from gateway.web.http import services

USER_ID = "<int(max=2147483647):user_id>"


def _person_page(user_id: int, notice: str | None = None) -> Response:
    v = viewer()
    found = services().people.get(v.actor, user_id)
    workspaces = sorted(set(found.view.roles) | set(found.view.workspaces_last_seen))
    return _render(
        "person.html",
        active="users",
        p=found,
        u=found.view.user,
        row=_row(found.view),
        workspaces=workspaces,
        statuses={i.id: str(effective_status(i.invitation)) for i in found.invitations},
        may_audit=services().people.may_audit(v.actor),
        # None: this admin may not reset them (their own, or beyond their rights), and
        # is not shown their factors either.
        factors=services().mfa.factors_for_admin(v.actor, user_id),
        notice=notice,
    )


@bp.get(f"/users/{USER_ID}")
def person(user_id: int) -> Response:
    return _person_page(user_id)


@bp.get(f"/users/{USER_ID}/two-step/reset")
def mfa_reset_confirm(user_id: int) -> Response:
    """The confirmation, only for what the service would carry out now (it refuses as
    the reset would: unknown or another workspace's person 404, beyond the admin's
    rights 403, nothing to reset 409)."""
    v = viewer()
    services().mfa.require_resettable(v.actor, user_id)
    view = services().users.get(v.actor, user_id)
    return _panel(
        "_mfa_reset.html",
        u=view.user,
        action=url_for("console.mfa_reset", user_id=user_id),
        cancel=url_for("console.person", user_id=user_id),
        htmx=_htmx(),
    )


@bp.post(f"/users/{USER_ID}/two-step/reset")
def mfa_reset(user_id: int) -> Response:
    ended = services().mfa.reset(viewer().actor, user_id)
    name = services().users.get(viewer().actor, user_id).user.name
    sessions = "1 sign-in session" if ended == 1 else f"{ended} sign-in sessions"
    return _person_page(
        user_id,
        notice=f"Reset {name}'s two-step sign-in: their authenticator app and recovery codes "
        f"no longer work, and {sessions} of theirs ended. Their password alone signs them "
        "in until they set up two-step sign-in again.",
    )
