"""Confirmations before the changes that take something away at once (issue 23):
deactivating a person (their sessions end and every check denies) and revoking an
invitation (its emailed link stops working). Each is a panel naming the person and
saying what happens, with Confirm and Cancel, as "Remove…" has (``console.remove_confirm``):
an htmx panel above the Users table, a page of its own without script, and a card on a
workspace's members page. The confirmed POSTs are the existing ones (``console.deactivate``,
``console.revoke``, ``console.member_deactivate``): the services refuse there what they
refuse, whatever the confirmation showed.

Also here: **Invite again** for a revoked invitation, a fresh invitation with its name and
roles made by ``InvitationService.invite_again`` (``create``'s own checks), offered when
the invitation service says it would carry it out (``allowed_actions``)."""

from __future__ import annotations

from flask import Response, request, url_for

from console.views import (
    Row,
    _after_change,
    _panel,
    _row,
    _safe_next,
    bp,
    viewer,
)
from console.workspace_pages import _members_page
from gateway.db.models import InvitationStatus
from gateway.errors import Conflict
from gateway.services.invitations import effective_status
from gateway.web.http import services

USER_ID = "<int(max=2147483647):user_id>"
INVITATION_ID = "<int(max=2147483647):invitation_id>"


def _offered(row: Row, action: str, words: str) -> None:
    """Conflict unless ``row`` offers ``action``: a confirmation only for what the
    services would carry out (they check again when it is confirmed)."""
    if action not in row.actions:
        raise Conflict(f"{row.view.user.name} is not someone you may {words} now")


def _back() -> str:
    """Where Cancel leads without script: the console page the confirmation came from
    (``back``, a path under /console/), else Users."""
    return _safe_next(request.args.get("back"), "console.users")


@bp.get(f"/users/{USER_ID}/deactivate")
def deactivate_confirm(user_id: int) -> Response:
    row = _row(services().users.get(viewer().actor, user_id))
    _offered(row, "deactivate", "deactivate")
    target = url_for("console.deactivate", user_id=user_id)
    return _panel("_deactivate.html", row=row, action=target, htmx=True, cancel=_back())


@bp.get(f"/workspaces/<slug>/members/{USER_ID}/deactivate")
def member_deactivate_confirm(slug: str, user_id: int) -> Response:
    """The members page with the confirmation card above its table."""
    return _members_page(slug, confirm_deactivate=user_id)


@bp.get(f"/invitations/{INVITATION_ID}/revoke")
def revoke_confirm(invitation_id: int) -> Response:
    v = viewer()
    invitation = services().invitations.get(v.actor, invitation_id)
    if "revoke" not in services().invitations.allowed_actions(v.actor, invitation.invitation):
        raise Conflict(
            f"The invitation of {invitation.email} is {effective_status(invitation.invitation)}; "
            "it cannot be revoked"
        )
    return _panel(
        "_revoke.html",
        invitation=invitation,
        action=url_for("console.revoke", invitation_id=invitation_id),
        cancel=_back(),
    )


@bp.post(f"/invitations/{INVITATION_ID}/invite-again")
def invite_again(invitation_id: int) -> Response:
    invitation = services().invitations.invite_again(viewer().actor, invitation_id)
    if effective_status(invitation) == InvitationStatus.FAILED:
        return _after_change(
            f"Invited {invitation.name} <{invitation.email}> again, but the invitation email "
            "could not be sent; their row says why. Resend it once email works.",
            invitation.user_id,
            kind="error",
        )
    return _after_change(
        f"Invited {invitation.name} <{invitation.email}> again with the same roles; "
        f"invitation {effective_status(invitation)}.",
        invitation.user_id,
    )
