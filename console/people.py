"""A person's page in the console: everything about one person in one place (roles per
workspace and where each came from, invitations and their delivery, sign-in sessions,
last sign-in and last seen per workspace, their audit trail), from
``gateway.services.people`` behind the same walls as the API's ``GET /users/{id}``: a
person the admin may not see is the 404 of an unknown id."""

from __future__ import annotations

from flask import Response

from console.views import _render, _row, bp, viewer
from gateway.services.invitations import effective_status
from gateway.web.http import services

USER_ID = "<int(max=2147483647):user_id>"


@bp.get(f"/users/{USER_ID}")
def person(user_id: int) -> Response:
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
    )
