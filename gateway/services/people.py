"""One person in one place (the console's person page): their roles per workspace and
where each came from, their invitations and how each was delivered, their sign-in
sessions, where they were last seen, and their audit trail.

All of it within what the asking admin may see, behind the walls of
:meth:`UserService.get`: a person visible through none of the admin's workspaces is
NotFound, worded as an id that does not exist; roles, invitations and last-seen times
only of the workspaces the admin may read; audit events only of the workspaces where
they may read the audit trail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from gateway.db.models import AuditEvent, AuthSession, Invitation, User, UserStatus
from gateway.services.audit import AuditFilter, AuditService
from gateway.services.base import Actor, AuditTarget, Authorizer, Page
from gateway.services.invitations import InvitationService, ScopedInvitation
from gateway.services.permissions import Permission
from gateway.services.users import UserService, UserView

MAX_INVITATIONS = 50
MAX_SESSIONS = 20

# Where a role came from.
INVITATION, ADMIN, DIRECTORY, UNATTENDED = "invitation", "admin", "directory", "unattended"


@dataclass(frozen=True)
class HeldRole:
    workspace: str
    role: str
    granted_at: datetime
    origin: str  # INVITATION, ADMIN, DIRECTORY (SCIM), or UNATTENDED (the set-up: no person)
    granted_by: str | None  # the admin's (or inviter's) name, if any
    invitation_id: int | None  # the invitation accepted, for INVITATION
    expires_at: datetime | None  # a time limit, if any


@dataclass(frozen=True)
class SignInSession:
    started: datetime
    ended: datetime | None
    reason: str | None
    live: bool


@dataclass(frozen=True)
class Person:
    view: UserView  # scoped: roles and last seen only in the admin's workspaces
    roles: list[HeldRole]
    invitations: Sequence[ScopedInvitation]  # newest first, those with a visible role
    sessions: list[SignInSession]  # newest first
    changes: Page[AuditEvent]  # events about them, newest first
    actions: Page[AuditEvent]  # events they caused, newest first


class PersonService:
    def __init__(
        self,
        session: Session,
        authorizer: Authorizer,
        users: UserService,
        invitations: InvitationService,
        audit: AuditService,
    ) -> None:
        self.session = session
        self.authorizer = authorizer
        self.users = users
        self.invitations = invitations
        self.audit = audit

    def get(self, actor: Actor, user_id: int, events: int = 20) -> Person:
        """Everything about one person that ``actor`` may see (``users:read`` in one of
        their workspaces); NotFound otherwise, as for an unknown id."""
        view = self.users.get(actor, user_id)
        user = view.user
        invitations = self.session.scalars(
            select(Invitation)
            .where(Invitation.user_id == user.id)
            .options(selectinload(Invitation.grants))
            .order_by(Invitation.id.desc())
            .limit(MAX_INVITATIONS)
        ).all()
        visible = [i for i in self.invitations.scoped(actor, invitations) if i.grants]
        sessions = self.session.scalars(
            select(AuthSession)
            .where(AuthSession.user_id == user.id)
            .order_by(AuthSession.created_at.desc(), AuthSession.id)
            .limit(MAX_SESSIONS)
        ).all()
        return Person(
            view=view,
            roles=self._roles(user, view, invitations),
            invitations=visible,
            sessions=[
                SignInSession(
                    s.created_at,
                    s.revoked_at,
                    s.revoked_reason,
                    live=user.status == UserStatus.ACTIVE
                    and s.revoked_at is None
                    and s.session_version == user.session_version,
                )
                for s in sessions
            ],
            changes=self.audit.list(
                actor,
                AuditFilter(target_type=AuditTarget.USER.value, target_id=str(user.id)),
                0,
                events,
            ),
            actions=self.audit.list(actor, AuditFilter(actor_id=user.id), 0, events),
        )

    def _roles(
        self, user: User, view: UserView, invitations: Sequence[Invitation]
    ) -> list[HeldRole]:
        """The person's grants in the workspaces of ``view`` (already scoped), each with
        its origin: a company directory (SCIM), the accepted invitation that named it,
        the admin who gave it, else nobody (the installation's set-up)."""
        grants = [
            g
            for g in user.grants
            if g.workspace_slug in view.roles and g.role in view.roles[g.workspace_slug]
        ]
        ids = {g.granted_by_id for g in grants} - {None}
        names: dict[int, str] = {
            uid: name
            for uid, name in self.session.execute(
                select(User.id, User.name).where(User.id.in_(ids))
            )
        }
        held = []
        for grant in sorted(grants, key=lambda g: (g.workspace_slug, g.role)):
            invitation = next(
                (
                    i
                    for i in invitations
                    if i.accepted_at is not None
                    and i.invited_by_id == grant.granted_by_id
                    and any(
                        e.workspace_slug == grant.workspace_slug and e.role == grant.role
                        for e in i.grants
                    )
                ),
                None,
            )
            by = (
                names.get(grant.granted_by_id, f"removed user {grant.granted_by_id}")
                if grant.granted_by_id is not None
                else None
            )
            if grant.role in view.directory_roles.get(grant.workspace_slug, []):
                origin = DIRECTORY
            elif invitation is not None:
                origin = INVITATION
            else:
                origin = ADMIN if by else UNATTENDED
            held.append(
                HeldRole(
                    workspace=grant.workspace_slug,
                    role=grant.role,
                    granted_at=grant.granted_at,
                    origin=origin,
                    granted_by=by,
                    invitation_id=invitation.id if invitation else None,
                    expires_at=grant.expires_at,
                )
            )
        return held

    def may_audit(self, actor: Actor) -> bool:
        return self.authorizer.workspaces_where(actor, Permission.AUDIT_READ) != set()
