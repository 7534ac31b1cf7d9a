"""Invitations: a person is invited with roles in one or more workspaces, accepts with
a one-time token (stored hashed), and becomes an active user with those grants."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from gateway.config import Settings
from gateway.engine import SubjectChanged
from gateway.errors import Conflict, InvalidInput, InvalidInvitationToken, NotFound
from gateway.models import (
    Invitation,
    InvitationGrant,
    InvitationStatus,
    User,
    UserStatus,
    Workspace,
    utcnow,
)
from gateway.notifier import InvitationNotice, Notifier
from gateway.permissions import Permission
from gateway.security import hash_password, new_token, token_digest
from gateway.services.base import Actor, Authorizer, ChangeSet, Page, UnitOfWork
from gateway.services.grants import GrantService, add_grant
from gateway.services.users import user_snapshot

MIN_PASSWORD_LENGTH = 12


@dataclass(frozen=True)
class RoleInWorkspace:
    workspace: str
    role: str


def invitation_snapshot(invitation: Invitation) -> dict[str, Any]:
    roles: dict[str, list[str]] = {}
    for grant in invitation.grants:
        roles.setdefault(grant.workspace_slug, []).append(grant.role)
    return {
        "email": invitation.email,
        "name": invitation.name,
        "status": str(effective_status(invitation)),
        "roles": {workspace: sorted(r) for workspace, r in sorted(roles.items())},
        "expires_at": invitation.expires_at.isoformat(),
    }


def effective_status(invitation: Invitation) -> InvitationStatus:
    """Pending invitations past their expiry are expired, whether or not stored so yet."""
    if invitation.status == InvitationStatus.PENDING and invitation.expires_at <= utcnow():
        return InvitationStatus.EXPIRED
    return invitation.status


def audit_each_workspace(
    changes: ChangeSet,
    invitation: Invitation,
    action: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """One event per workspace of the invitation, so each workspace's auditors see it."""
    changes.audit_each(
        {g.workspace_slug for g in invitation.grants},
        action,
        "invitation",
        invitation.id,
        invitation.email,
        before,
        after,
    )


class InvitationService:
    def __init__(
        self,
        session: Session,
        uow: UnitOfWork,
        authorizer: Authorizer,
        grants: GrantService,
        notifier: Notifier,
        settings: Settings,
    ) -> None:
        self.session = session
        self.uow = uow
        self.authorizer = authorizer
        self.grants = grants
        self.notifier = notifier
        self.settings = settings

    def create(
        self, actor: Actor, email: str, name: str, roles: Sequence[RoleInWorkspace]
    ) -> Invitation:
        """Invite ``email`` with ``roles``; needs ``users:invite`` in each workspace.
        The email is queued after commit."""
        email = email.strip().lower()
        entries = sorted(set(roles), key=lambda r: (r.workspace, r.role))
        if not entries:
            raise InvalidInput("An invitation needs at least one role in a workspace")
        for workspace in sorted({r.workspace for r in entries}):
            # Permission first: a 404 must not tell outsiders which workspaces exist.
            self.authorizer.require(actor, Permission.USERS_INVITE, workspace)
            self.grants.workspaces.require_exists(workspace)
            self.grants.require_roles_exist(
                workspace, [r.role for r in entries if r.workspace == workspace]
            )
        user = self.session.scalar(select(User).where(User.email == email))
        if user is not None and user.status != UserStatus.PENDING:
            raise Conflict(
                f"{email} already has an account; give them roles with the grants API instead",
                user_id=user.id,
            )
        if user is not None and self._live_invitation(user.id) is not None:
            raise Conflict(
                f"{email} already has a pending invitation; resend or revoke it",
                user_id=user.id,
            )
        token = new_token()
        with self.uow.change(actor) as changes:
            if user is None:
                user = User(email=email, name=name, status=UserStatus.PENDING)
                self.session.add(user)
            user.name = name
            self.session.flush()
            invitation = Invitation(
                user_id=user.id,
                email=email,
                name=name,
                token_hash=token_digest(token),
                expires_at=utcnow() + timedelta(days=self.settings.invitation_ttl_days),
                invited_by_id=actor.user_id,
                grants=[InvitationGrant(workspace_slug=r.workspace, role=r.role) for r in entries],
            )
            self.session.add(invitation)
            self.session.flush()
            changes.engine(SubjectChanged(user.id, user.email, active=False))
            audit_each_workspace(
                changes, invitation, "invitation.created", after=invitation_snapshot(invitation)
            )
            notice = self._notice(invitation, token, actor)
            changes.on_commit(lambda: self.notifier.invitation_created(notice))
        return invitation

    def list(
        self, actor: Actor, status: InvitationStatus | None, offset: int, limit: int
    ) -> Page[Invitation]:
        """Invitations into workspaces where ``actor`` may invite, newest first."""
        query = select(Invitation)
        visible = self.authorizer.workspaces_where(actor, Permission.USERS_INVITE)
        if visible is not None:
            query = query.where(Invitation.grants.any(InvitationGrant.workspace_slug.in_(visible)))
        now = utcnow()
        if status == InvitationStatus.PENDING:
            query = query.where(
                Invitation.status == InvitationStatus.PENDING, Invitation.expires_at > now
            )
        elif status == InvitationStatus.EXPIRED:
            query = query.where(
                (Invitation.status == InvitationStatus.EXPIRED)
                | ((Invitation.status == InvitationStatus.PENDING) & (Invitation.expires_at <= now))
            )
        elif status is not None:
            query = query.where(Invitation.status == status)
        total = self.session.scalar(select(func.count()).select_from(query.subquery())) or 0
        items = self.session.scalars(
            query.options(selectinload(Invitation.grants))
            .order_by(Invitation.id.desc())
            .offset(offset)
            .limit(limit)
        ).all()
        return Page(items, total)

    def get(self, actor: Actor, invitation_id: int) -> Invitation:
        invitation = self.session.get(Invitation, invitation_id)
        if invitation is None:
            raise NotFound(f"No invitation {invitation_id}")
        visible = self.authorizer.workspaces_where(actor, Permission.USERS_INVITE)
        if visible is not None and not {g.workspace_slug for g in invitation.grants} & visible:
            raise NotFound(f"No invitation {invitation_id}")
        return invitation

    def resend(self, actor: Actor, invitation_id: int) -> Invitation:
        """A new token and expiry; the old link stops working. Pending or expired only."""
        invitation = self._manageable(actor, invitation_id)
        if effective_status(invitation) not in (InvitationStatus.PENDING, InvitationStatus.EXPIRED):
            raise Conflict(
                f"Invitation {invitation_id} is {invitation.status}; it cannot be resent"
            )
        token = new_token()
        with self.uow.change(actor) as changes:
            before = invitation_snapshot(invitation)
            invitation.token_hash = token_digest(token)
            invitation.status = InvitationStatus.PENDING
            invitation.expires_at = utcnow() + timedelta(days=self.settings.invitation_ttl_days)
            audit_each_workspace(
                changes, invitation, "invitation.resent", before, invitation_snapshot(invitation)
            )
            notice = self._notice(invitation, token, actor)
            changes.on_commit(lambda: self.notifier.invitation_created(notice))
        return invitation

    def revoke(self, actor: Actor, invitation_id: int) -> Invitation:
        """The link stops working; the person stays pending with no live invitation."""
        invitation = self._manageable(actor, invitation_id)
        if effective_status(invitation) != InvitationStatus.PENDING:
            raise Conflict(f"Invitation {invitation_id} is {effective_status(invitation)}")
        with self.uow.change(actor) as changes:
            before = invitation_snapshot(invitation)
            invitation.status = InvitationStatus.REVOKED
            invitation.revoked_at = utcnow()
            audit_each_workspace(
                changes, invitation, "invitation.revoked", before, invitation_snapshot(invitation)
            )
        return invitation

    def accept(self, token: str, password: str, name: str | None = None) -> User:
        """Redeem a one-time token: the person becomes active with the invited roles."""
        if len(password) < MIN_PASSWORD_LENGTH:
            raise InvalidInput(
                f"The password must have at least {MIN_PASSWORD_LENGTH} characters",
                errors={"password": [f"at least {MIN_PASSWORD_LENGTH} characters"]},
            )
        invitation = self.session.scalar(
            select(Invitation).where(Invitation.token_hash == token_digest(token))
        )
        if invitation is None or invitation.user_id is None:
            raise InvalidInvitationToken("The invitation link is not valid")
        status = effective_status(invitation)
        if status != InvitationStatus.PENDING:
            raise InvalidInvitationToken(f"This invitation is {status}; ask for a new one")
        user = self.session.get(User, invitation.user_id)
        if user is None or user.status != UserStatus.PENDING:
            raise InvalidInvitationToken("The invitation link is not valid")
        actor = Actor(user.id, f"{name or user.name} <{user.email}>")
        existing = self.session.scalars(select(Workspace.slug)).all()
        with self.uow.change(actor) as changes:
            before = user_snapshot(user)
            user.name = name or user.name
            user.password_hash = hash_password(password)
            user.status = UserStatus.ACTIVE
            # Roles of workspaces deleted (or roles removed from policies/) since the
            # invitation was sent are skipped rather than failing the acceptance.
            for entry in invitation.grants:
                if entry.workspace_slug in existing and entry.role in self.grants.engine.roles_in(
                    entry.workspace_slug
                ):
                    add_grant(
                        changes, user, entry.workspace_slug, entry.role, invitation.invited_by_id
                    )
            invitation.status = InvitationStatus.ACCEPTED
            invitation.accepted_at = utcnow()
            invitation.token_hash = token_digest(new_token())  # single use, even in a race
            changes.engine(SubjectChanged(user.id, user.email, active=True))
            audit_each_workspace(
                changes, invitation, "invitation.accepted", before, user_snapshot(user)
            )
        return user

    def _live_invitation(self, user_id: int) -> Invitation | None:
        return self.session.scalar(
            select(Invitation).where(
                Invitation.user_id == user_id,
                Invitation.status == InvitationStatus.PENDING,
                Invitation.expires_at > utcnow(),
            )
        )

    def _manageable(self, actor: Actor, invitation_id: int) -> Invitation:
        invitation = self.get(actor, invitation_id)
        self.authorizer.require_all(
            actor, Permission.USERS_INVITE, {g.workspace_slug for g in invitation.grants}
        )
        return invitation

    def _notice(self, invitation: Invitation, token: str, actor: Actor) -> InvitationNotice:
        names = dict(
            self.session.execute(
                select(Workspace.slug, Workspace.name).where(
                    Workspace.slug.in_({g.workspace_slug for g in invitation.grants})
                )
            ).all()
        )
        inviter = actor.name.split(" <")[0]
        return InvitationNotice(
            invitation_id=invitation.id,
            to_address=invitation.email,
            to_name=invitation.name,
            inviter_name=inviter,
            grants=tuple(
                (names.get(g.workspace_slug, g.workspace_slug), g.role) for g in invitation.grants
            ),
            accept_url=f"{self.settings.public_url.rstrip('/')}/accept?token={quote(token)}",
            expires_at=invitation.expires_at.isoformat(),
        )
