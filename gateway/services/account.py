"""The signed-in person's own account, as the console's account page shows it: the roles
they hold in each workspace (by the workspace's name) and the invitations addressed to
their account that wait for an answer (``GET /invitations/mine``), with the workspaces by
name, the roles and who sent each. Accepting one is
:meth:`InvitationService.accept_signed_in`, the API's ``POST /invitations/{id}/accept``.

Only the person's own things: nothing here takes another person's id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from gateway.db.models import Grant, User, Workspace, utcnow
from gateway.engine.rules import ALL_WORKSPACES
from gateway.services.base import Actor
from gateway.services.invitations import InvitationService

EVERY_WORKSPACE = "every workspace"


@dataclass(frozen=True)
class OwnRole:
    workspace: str  # the slug, or "*"
    workspace_name: str  # its name ("every workspace" for "*")
    role: str
    expires_at: datetime | None  # a time limit, if any


@dataclass(frozen=True)
class WaitingInvitation:
    id: int
    inviter: str  # the inviter's name, "" when they were removed (or nobody: the CLI)
    grants: tuple[tuple[str, str], ...]  # (workspace name, role), as the email says them
    expires_at: datetime


class AccountService:
    def __init__(self, session: Session, invitations: InvitationService) -> None:
        self.session = session
        self.invitations = invitations

    def roles(self, actor: Actor) -> list[OwnRole]:
        """The roles ``actor`` holds now, by workspace name then role; a grant whose time
        limit has passed is left out (it no longer gives anything)."""
        if actor.user_id is None:
            return []
        now = utcnow()
        rows = self.session.execute(
            select(Grant.workspace_slug, Workspace.name, Grant.role, Grant.expires_at)
            .outerjoin(Workspace, Workspace.slug == Grant.workspace_slug)
            .where(
                Grant.user_id == actor.user_id,
                or_(Grant.expires_at.is_(None), Grant.expires_at > now),
            )
        ).all()
        held = [
            OwnRole(
                slug,
                EVERY_WORKSPACE if slug == ALL_WORKSPACES else (name or slug),
                role,
                expires_at,
            )
            for slug, name, role, expires_at in rows
        ]
        return sorted(held, key=lambda r: (r.workspace != ALL_WORKSPACES, r.workspace_name, r.role))

    def waiting(self, actor: Actor) -> list[WaitingInvitation]:
        """The live invitations addressed to ``actor``'s account (``GET
        /invitations/mine``), oldest first, each with its workspaces by name."""
        invitations = self.invitations.for_account(actor)
        inviters = {i.invited_by_id for i in invitations} - {None}
        names: dict[int, str] = {
            uid: name
            for uid, name in self.session.execute(
                select(User.id, User.name).where(User.id.in_(inviters))
            )
        }
        return [
            WaitingInvitation(
                id=i.id,
                inviter=names.get(i.invited_by_id, "") if i.invited_by_id is not None else "",
                grants=self.invitations.named_grants(i),
                expires_at=i.expires_at,
            )
            for i in invitations
        ]
