"""Invitations: a person is invited with roles in one or more workspaces, accepts with
a one-time token (stored hashed), and becomes an active user with those grants."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy import ColumnElement, String, cast, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from gateway.config import Settings
from gateway.db.models import (
    AuditEvent,
    DeliveryStatus,
    Grant,
    Invitation,
    InvitationGrant,
    InvitationStatus,
    InvitationToken,
    OutboxMessage,
    User,
    UserStatus,
    Workspace,
    utcnow,
)
from gateway.emails import normalise_email
from gateway.engine.engine import SubjectChanged
from gateway.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    InvalidInvitationToken,
    NotFound,
    SsoRefused,
    TooManyRequests,
)
from gateway.identity.passwords import require_acceptable_password
from gateway.identity.security import hash_password, new_token, seal, token_digest
from gateway.notifier import InvitationNotice, Notifier, invitation_payload
from gateway.services.base import (
    SYSTEM,
    Actor,
    AuditTarget,
    Authorizer,
    ChangeSet,
    Page,
    UnitOfWork,
)
from gateway.services.grants import GrantService, add_grant
from gateway.services.permissions import Permission
from gateway.services.settings import SettingsService
from gateway.services.users import account_by_email, user_snapshot


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
    """What an admin sees: a pending invitation past its expiry is expired (whether or
    not stored so yet), and one whose email went out or failed says so."""
    if invitation.status != InvitationStatus.PENDING:
        return invitation.status
    if invitation.expires_at <= utcnow():
        return InvitationStatus.EXPIRED
    if invitation.delivery_status == DeliveryStatus.SENT:
        return InvitationStatus.SENT
    if invitation.delivery_status == DeliveryStatus.FAILED:
        return InvitationStatus.FAILED
    return InvitationStatus.PENDING


def can_resend(invitation: Invitation) -> bool:
    """Whether the invitation may be resent: it is still waiting for an answer, expired
    or not (its :func:`effective_status` is pending, sent, failed or expired). The
    resend interval is a separate, passing limit (:meth:`InvitationService.resend`)."""
    return invitation.status in (InvitationStatus.PENDING, InvitationStatus.EXPIRED)


def can_revoke(invitation: Invitation) -> bool:
    """Whether the invitation may be revoked: its link still works (pending, sent or
    failed, not expired)."""
    return invitation.status == InvitationStatus.PENDING and invitation.expires_at > utcnow()


def status_condition(status: InvitationStatus, now: datetime) -> ColumnElement[bool]:
    """The SQL condition for invitations whose :func:`effective_status` is ``status``."""
    live = (Invitation.status == InvitationStatus.PENDING) & (Invitation.expires_at > now)
    if status == InvitationStatus.PENDING:
        return live & Invitation.delivery_status.not_in(
            [DeliveryStatus.SENT, DeliveryStatus.FAILED]
        )
    if status == InvitationStatus.SENT:
        return live & (Invitation.delivery_status == DeliveryStatus.SENT)
    if status == InvitationStatus.FAILED:
        return live & (Invitation.delivery_status == DeliveryStatus.FAILED)
    if status == InvitationStatus.EXPIRED:
        return (Invitation.status == InvitationStatus.EXPIRED) | (
            (Invitation.status == InvitationStatus.PENDING) & (Invitation.expires_at <= now)
        )
    return Invitation.status == status


def email_domain_allowed(email: str, allowed: Sequence[str]) -> bool:
    return not allowed or email.rpartition("@")[2].lower() in allowed


@dataclass(frozen=True)
class TokenState:
    """What an accept link leads to, for the acceptance page."""

    invitation: Invitation | None
    usable: bool
    reason: str  # why not, naming whom to ask
    inviter: str
    # The address has an account already: accepting adds the roles, sets no password.
    has_account: bool = False


def _workspaces_of(invitation: Invitation) -> set[str]:
    return {g.workspace_slug for g in invitation.grants}


def _roles_of(invitation: Invitation) -> list[RoleInWorkspace]:
    return [RoleInWorkspace(g.workspace_slug, g.role) for g in invitation.grants]


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
        AuditTarget.INVITATION,
        invitation.id,
        invitation.email,
        before,
        after,
    )


class ScopedInvitation:
    """An invitation as one admin may see it: the invitation's attributes, with
    ``grants`` and ``invited_by_id`` limited to what they may see (see
    :meth:`InvitationService.scoped`). Read-only: the invitation itself is unchanged."""

    def __init__(
        self, invitation: Invitation, grants: list[InvitationGrant], invited_by_id: int | None
    ) -> None:
        self.invitation = invitation
        self.grants = grants
        self.invited_by_id = invited_by_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self.invitation, name)


class InvitationService:
    def __init__(
        self,
        session: Session,
        uow: UnitOfWork,
        authorizer: Authorizer,
        grants: GrantService,
        notifier: Notifier,
        settings: Settings,
        settings_service: SettingsService,
    ) -> None:
        self.session = session
        self.uow = uow
        self.authorizer = authorizer
        self.grants = grants
        self.notifier = notifier
        self.settings = settings
        self.settings_service = settings_service

    # -- inviting ------------------------------------------------------------------

    def create(
        self, actor: Actor, email: str, name: str, roles: Sequence[RoleInWorkspace]
    ) -> Invitation:
        """Invite ``email`` with ``roles``; needs ``users:invite`` in each workspace.
        The email is written to the outbox in the same transaction and sent after commit.
        The answer is the same whether or not the address has an account: an existing
        account gains the roles only when its owner accepts (by the emailed link or
        signed in), never by the inviter's word alone."""
        email, entries, user = self._admissible(actor, email, roles)
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
                expires_at=utcnow() + timedelta(days=self.settings.invitation_ttl_days),
                invited_by_id=actor.user_id,
                grants=[InvitationGrant(workspace_slug=r.workspace, role=r.role) for r in entries],
            )
            self.session.add(invitation)
            self.session.flush()
            self._queue_email(changes, invitation, "invitation")
            audit_each_workspace(
                changes, invitation, "invitation.created", after=invitation_snapshot(invitation)
            )
        # Delivery may have happened already (eager mode), recorded by another session.
        self.session.refresh(invitation)
        return invitation

    def check(self, actor: Actor, email: str, roles: Sequence[RoleInWorkspace]) -> None:
        """Raise what :meth:`create` would refuse this invitation with, changing nothing:
        a bulk invite's preview flags its bad rows with it before anything is sent."""
        self._admissible(actor, email, roles)

    def _admissible(
        self, actor: Actor, email: str, roles: Sequence[RoleInWorkspace]
    ) -> tuple[str, list[RoleInWorkspace], User | None]:
        """:meth:`create`'s checks: the normalised email, the roles in order, and the
        person's placeholder in the inviter's workspaces (if any)."""
        email = normalise_email(email)
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
            self.grants.require_grantable_here(
                workspace, [r.role for r in entries if r.workspace == workspace]
            )
            for entry in entries:
                if entry.workspace == workspace:
                    self.authorizer.require_can_grant(actor, entry.role, workspace)
        allowed = self.settings_service.email().allowed_domains
        if not email_domain_allowed(email, allowed):
            raise InvalidInput(
                f"{email} is not a company address: invitations may go only to "
                f"{', '.join('@' + d for d in allowed)}",
                errors={"email": ["not in the allowed email domains"]},
                allowed_domains=allowed,
            )
        account = account_by_email(self.session, email)
        if account is not None and account.id == actor.user_id:
            raise Forbidden("You cannot change your own roles")
        # The person as the inviter's workspaces know them: their own placeholder (an
        # earlier invitation of theirs), never another workspace's nor the account, so
        # that the answer is the same whoever else knows the address.
        user = self._placeholder(actor, email)
        if user is not None and (live := self._live_invitation(user.id)) is not None:
            raise Conflict(
                f"{email} already has a pending invitation ({live.id}); resend or revoke it",
                invitation_id=live.id,
            )
        return email, entries, user

    # -- reading -------------------------------------------------------------------

    def list(
        self,
        actor: Actor,
        status: InvitationStatus | None,
        offset: int,
        limit: int,
        older_than_days: int | None = None,
    ) -> Page[ScopedInvitation]:
        """Invitations into workspaces where ``actor`` may invite, newest first, as
        they may see them (:meth:`scoped`).
        ``older_than_days`` keeps those created at least that long ago and (without a
        ``status``) still waiting for an answer: the pending-invitations report."""
        query = select(Invitation)
        visible = self.authorizer.workspaces_where(actor, Permission.USERS_INVITE)
        if visible is not None:
            query = query.where(Invitation.grants.any(InvitationGrant.workspace_slug.in_(visible)))
        now = utcnow()
        if status is not None:
            query = query.where(status_condition(status, now))
        elif older_than_days is not None:  # the report: everyone still waiting
            query = query.where(
                Invitation.status == InvitationStatus.PENDING, Invitation.expires_at > now
            )
        if older_than_days is not None:
            query = query.where(Invitation.created_at <= now - timedelta(days=older_than_days))
        total = self.session.scalar(select(func.count()).select_from(query.subquery())) or 0
        items = self.session.scalars(
            query.options(selectinload(Invitation.grants))
            .order_by(Invitation.id.desc())
            .offset(offset)
            .limit(limit)
        ).all()
        return Page(self.scoped(actor, items), total)

    def get(self, actor: Actor, invitation_id: int) -> ScopedInvitation:
        """One invitation into a workspace where ``actor`` may invite, as they may see it
        (:meth:`scoped`); NotFound otherwise."""
        return self.scoped(actor, [self._visible(actor, invitation_id)])[0]

    def scoped(self, actor: Actor, invitations: Sequence[Invitation]) -> Sequence[ScopedInvitation]:
        """The invitations with their roles only in workspaces ``actor`` may see (where
        they may read people or invite), and the inviter's id only if ``actor`` may see
        that person: an invitation into several workspaces must not tell one
        workspace's admin about the others (as users.scoped does for people)."""
        readable = self.authorizer.workspaces_where(actor, Permission.USERS_READ)
        invitable = self.authorizer.workspaces_where(actor, Permission.USERS_INVITE)
        if readable is None or invitable is None:
            return [ScopedInvitation(i, list(i.grants), i.invited_by_id) for i in invitations]
        workspaces = readable | invitable
        inviters = {i.invited_by_id for i in invitations} - {None, actor.user_id}
        seen = set(
            self.session.scalars(
                select(Grant.user_id).where(
                    Grant.user_id.in_(inviters), Grant.workspace_slug.in_(workspaces)
                )
            )
        ) | {actor.user_id}
        return [
            ScopedInvitation(
                i,
                [g for g in i.grants if g.workspace_slug in workspaces],
                i.invited_by_id if i.invited_by_id in seen else None,
            )
            for i in invitations
        ]

    def _visible(self, actor: Actor, invitation_id: int) -> Invitation:
        invitation = self.session.get(Invitation, invitation_id)
        if invitation is None:
            raise NotFound(f"No invitation {invitation_id}")
        visible = self.authorizer.workspaces_where(actor, Permission.USERS_INVITE)
        if visible is not None and not {g.workspace_slug for g in invitation.grants} & visible:
            raise NotFound(f"No invitation {invitation_id}")
        return invitation

    # -- changing ------------------------------------------------------------------

    def allowed_actions(self, actor: Actor, invitation: Invitation) -> frozenset[str]:
        """What ``actor`` may do to ``invitation`` now, of ``resend``, ``revoke`` and
        ``invite_again``: exactly what :meth:`resend`, :meth:`revoke` and
        :meth:`invite_again` would not refuse (bar the resend interval), so that a form
        offers no button the service turns down."""
        if not self.authorizer.can_all(actor, Permission.USERS_INVITE, _workspaces_of(invitation)):
            return frozenset()
        allowed = set()
        if can_resend(invitation):
            allowed.add("resend")
        if can_revoke(invitation):
            allowed.add("revoke")
        if invitation.status == InvitationStatus.REVOKED:
            try:  # create's own checks: roles still grantable, no newer live invitation
                self._admissible(actor, invitation.email, _roles_of(invitation))
            except (Forbidden, NotFound, InvalidInput, Conflict):
                pass
            else:
                allowed.add("invite_again")
        return frozenset(allowed)

    def invite_again(self, actor: Actor, invitation_id: int) -> Invitation:
        """A fresh invitation to a revoked one's person, with its name and roles: a new
        invitation (link, expiry, email, audit event) made by :meth:`create`, with all of
        its checks (``users:invite`` and each role grantable in each workspace, the
        company domains, no other live invitation). The revoked one stays revoked."""
        invitation = self._manageable(actor, invitation_id)
        if invitation.status != InvitationStatus.REVOKED:
            raise Conflict(
                f"Invitation {invitation_id} is {effective_status(invitation)}, not revoked; "
                "resend it instead"
            )
        return self.create(actor, invitation.email, invitation.name, _roles_of(invitation))

    def resend(self, actor: Actor, invitation_id: int) -> Invitation:
        """A new token and expiry, and a new email; the old link stops working.
        Pending (or sent, failed, expired) invitations only, at most once per interval."""
        invitation = self._manageable(actor, invitation_id)
        if not can_resend(invitation):
            raise Conflict(
                f"Invitation {invitation_id} is {effective_status(invitation)}; it cannot be resent"
            )
        interval = timedelta(seconds=self.settings.resend_interval_seconds)
        if invitation.resent_at is not None and utcnow() < invitation.resent_at + interval:
            wait = int((invitation.resent_at + interval - utcnow()).total_seconds()) + 1
            raise TooManyRequests(
                f"Invitation {invitation_id} was resent moments ago; try again in {wait} s",
                retry_after=wait,
            )
        with self.uow.change(actor) as changes:
            before = invitation_snapshot(invitation)
            invitation.status = InvitationStatus.PENDING
            invitation.expires_at = utcnow() + timedelta(days=self.settings.invitation_ttl_days)
            invitation.resent_at = utcnow()
            invitation.resend_count += 1
            self._queue_email(changes, invitation, "invitation")
            audit_each_workspace(
                changes, invitation, "invitation.resent", before, invitation_snapshot(invitation)
            )
        self.session.refresh(invitation)
        return invitation

    def revoke(self, actor: Actor, invitation_id: int) -> Invitation:
        """The link stops working; the person stays pending with no live invitation."""
        invitation = self._manageable(actor, invitation_id)
        if not can_revoke(invitation):
            raise Conflict(f"Invitation {invitation_id} is {effective_status(invitation)}")
        with self.uow.change(actor) as changes:
            before = invitation_snapshot(invitation)
            invitation.status = InvitationStatus.REVOKED
            invitation.revoked_at = utcnow()
            self._supersede_tokens(invitation)
            audit_each_workspace(
                changes, invitation, "invitation.revoked", before, invitation_snapshot(invitation)
            )
        return invitation

    def queue_reminders(self, older_than_days: int) -> Sequence[int]:
        """Remind, once, everyone whose invitation has been pending ``older_than_days``:
        a new link (the old one stops) in a reminder email. The outbox message ids."""
        if older_than_days <= 0:
            return []
        now = utcnow()
        due = self.session.scalars(
            select(Invitation).where(
                Invitation.status == InvitationStatus.PENDING,
                Invitation.expires_at > now,
                Invitation.reminded_at.is_(None),
                Invitation.created_at <= now - timedelta(days=older_than_days),
            )
        ).all()
        return [self._remind(invitation, now) for invitation in due]

    def audit_expired(self) -> int:
        """Record ``invitation.expired`` once for each invitation whose link has expired
        since it was last sent; how many. (Expiry itself needs no change: a pending
        invitation past its expiry reads as expired everywhere.)"""
        now = utcnow()
        already = (
            select(AuditEvent.id)
            .where(
                AuditEvent.action == "invitation.expired",
                AuditEvent.target_type == AuditTarget.INVITATION,
                AuditEvent.target_id == cast(Invitation.id, String),
                # Since it was last sent: a resent invitation may expire (again) later.
                AuditEvent.at >= func.coalesce(Invitation.resent_at, Invitation.created_at),
            )
            .exists()
        )
        due = self.session.scalars(
            select(Invitation)
            .where(
                Invitation.status == InvitationStatus.PENDING,
                Invitation.expires_at <= now,
                ~already,
            )
            .order_by(Invitation.id)
            .limit(1000)
        ).all()
        if not due:
            return 0
        with self.uow.events_only(SYSTEM) as changes:
            for invitation in due:
                audit_each_workspace(
                    changes, invitation, "invitation.expired", after=invitation_snapshot(invitation)
                )
        return len(due)

    def _remind(self, invitation: Invitation, now: datetime) -> int:
        with self.uow.change(SYSTEM) as changes:
            invitation.reminded_at = now
            message = self._queue_email(changes, invitation, "reminder", notify=False)
            audit_each_workspace(changes, invitation, "invitation.reminded")
        return message.id

    # -- accepting -----------------------------------------------------------------

    def token_state(self, token: str) -> TokenState:
        """Where an accept link stands, with a reason that names whom to ask."""
        row = self.session.scalar(
            select(InvitationToken).where(InvitationToken.token_hash == token_digest(token))
        )
        invitation = self.session.get(Invitation, row.invitation_id) if row else None
        if row is None or invitation is None:
            return TokenState(None, False, "This invitation link is not valid.", "")
        inviter = self._inviter(invitation)
        ask = f"Ask {inviter} for a new invitation." if inviter else "Ask your administrator."
        status = effective_status(invitation)
        if status == InvitationStatus.ACCEPTED:
            return TokenState(
                invitation, False, "This invitation was accepted already; sign in.", inviter
            )
        if status == InvitationStatus.REVOKED:
            return TokenState(invitation, False, f"This invitation was revoked. {ask}", inviter)
        if status == InvitationStatus.EXPIRED:
            return TokenState(invitation, False, f"This invitation has expired. {ask}", inviter)
        if row.superseded_at is not None:
            return TokenState(
                invitation,
                False,
                "This link was replaced by a newer invitation email; use the latest one. " + ask,
                inviter,
            )
        has_account = account_by_email(self.session, invitation.email) is not None
        return TokenState(invitation, True, "", inviter, has_account)

    def accept(
        self,
        token: str,
        password: str | None,
        name: str | None = None,
        client: str = "",
        request_id: str | None = None,
    ) -> User:
        """Redeem a one-time token: the person becomes active with the invited roles, or,
        with an account already, gains them (its password and name stay as they are).
        Of two concurrent accepts of one token exactly one succeeds. ``client`` and
        ``request_id`` go on the audit events."""

        def set_password(user: User) -> None:
            if password is None:
                raise InvalidInput(
                    "Choose a password to create your account",
                    errors={"password": ["required to create an account"]},
                )
            require_acceptable_password(password)
            user.password_hash = hash_password(password, self.settings.password_hash_profile)

        return self._redeem(token, name, set_password, client=client, request_id=request_id)

    def accept_signed_in(self, actor: Actor, invitation_id: int) -> User:
        """The signed-in person accepts an invitation addressed to their own account
        (as the emailed link would); NotFound for any invitation that is not theirs."""
        invitation = self.session.get(Invitation, invitation_id)
        account = self.session.get(User, actor.user_id) if actor.user_id is not None else None
        if invitation is None or account is None or invitation.email != account.email:
            raise NotFound(f"No invitation {invitation_id}")
        if effective_status(invitation) in (InvitationStatus.ACCEPTED, InvitationStatus.REVOKED):
            raise Conflict(f"Invitation {invitation_id} is {effective_status(invitation)}")
        if invitation.expires_at <= utcnow():
            raise Conflict(f"Invitation {invitation_id} has expired; ask for a new one")
        return self._claim(invitation, account, None, lambda user: None, "signed_in", actor)

    def for_account(self, actor: Actor) -> Sequence[Invitation]:
        """The live invitations addressed to the signed-in person's account."""
        account = self.session.get(User, actor.user_id) if actor.user_id is not None else None
        if account is None:
            return []
        return self.session.scalars(
            select(Invitation)
            .where(
                Invitation.email == account.email,
                Invitation.status == InvitationStatus.PENDING,
                Invitation.expires_at > utcnow(),
            )
            .options(selectinload(Invitation.grants))
            .order_by(Invitation.id)
        ).all()

    def accept_with_identity(
        self,
        token: str,
        email: str,
        issuer: str,
        subject: str,
        name: str | None = None,
        client: str = "",
        request_id: str | None = None,
    ) -> User:
        """Redeem a one-time token through single sign-on: the identity provider's
        verified ``email`` must be the invited address; the account is linked to
        (``issuer``, ``subject``) and has no password (a reset can set one later)."""
        state = self.token_state(token)
        invitation = state.invitation
        if not state.usable or invitation is None:
            raise InvalidInvitationToken(state.reason)
        if normalise_email(email) != invitation.email:
            raise SsoRefused(
                f"The identity provider signed you in as {email}, but the invitation is "
                f"for {invitation.email}; sign in there with that address",
                email=email,
            )
        holder = self.session.scalar(
            select(User).where(User.oidc_issuer == issuer, User.oidc_subject == subject)
        )
        if holder is not None and holder.id != self._invited_person(invitation).id:
            raise SsoRefused("This single sign-on identity belongs to another account already")

        def link(user: User) -> None:
            user.oidc_issuer, user.oidc_subject = issuer, subject

        return self._redeem(token, name, link, via="sso", client=client, request_id=request_id)

    def _redeem(
        self,
        token: str,
        name: str | None,
        set_credentials: Callable[[User], None],
        via: str = "password",
        client: str = "",
        request_id: str | None = None,
    ) -> User:
        state = self.token_state(token)
        invitation = state.invitation
        if not state.usable or invitation is None or invitation.user_id is None:
            raise InvalidInvitationToken(state.reason)

        def claim() -> User:
            user = self._invited_person(invitation)
            actor = Actor(
                user.id,
                f"{name or user.name} <{user.email}>",
                request_id=request_id,
                source_address=client or None,
            )
            return self._claim(invitation, user, name, set_credentials, via, actor)

        try:
            return claim()
        except IntegrityError:
            # Another workspace's invitation to the same address made the account a
            # moment ago (one account per address): accept into that account instead.
            if account_by_email(self.session, invitation.email) is None:
                raise
            return claim()

    def _invited_person(self, invitation: Invitation) -> User:
        """Who accepting ``invitation`` makes a member: the account with its address if
        there is one by now, else the invitation's placeholder (to become the account)."""
        placeholder = self.session.get(User, invitation.user_id) if invitation.user_id else None
        if placeholder is None:
            raise InvalidInvitationToken("This invitation link is not valid.")
        if placeholder.status != UserStatus.PENDING:
            return placeholder
        return account_by_email(self.session, placeholder.email) or placeholder

    def _claim(
        self,
        invitation: Invitation,
        user: User,
        name: str | None,
        set_credentials: Callable[[User], None],
        via: str,
        actor: Actor,
    ) -> User:
        """Give the invited roles to ``user``: a new account (the invitation's
        placeholder) becomes active with ``set_credentials``; an existing one keeps its
        password and name, and the placeholder is folded into it."""
        if user.status == UserStatus.DEACTIVATED:
            raise InvalidInvitationToken(
                "Your account is deactivated; ask your administrator to reactivate it first."
            )
        new_account = user.status == UserStatus.PENDING
        if new_account:
            set_credentials(user)  # may refuse (a weak password) before anything is written
        existing = set(self.session.scalars(select(Workspace.slug)).all())
        held = {(g.workspace_slug, g.role) for g in user.grants}
        with self.uow.change(actor) as changes:
            # The conditional update is the single-use guarantee: a concurrent accept
            # of the same token finds the invitation no longer pending and changes nothing.
            claimed = self.session.execute(
                update(Invitation)
                .where(
                    Invitation.id == invitation.id, Invitation.status == InvitationStatus.PENDING
                )
                .values(status=InvitationStatus.ACCEPTED, accepted_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                raise InvalidInvitationToken("This invitation was accepted already; sign in.")
            before = user_snapshot(user)
            if new_account:
                user.name = name or invitation.name or user.name
                user.status = UserStatus.ACTIVE
                changes.engine(SubjectChanged(user.id, user.email, active=True))
            elif invitation.user_id != user.id:
                self._fold_placeholder(invitation.user_id, user)
            # Roles of workspaces deleted (or roles removed from policies/) since the
            # invitation was sent are skipped rather than failing the acceptance.
            for entry in invitation.grants:
                if (
                    entry.workspace_slug in existing
                    and (entry.workspace_slug, entry.role) not in held
                    and entry.role in self.grants.engine.roles_in(entry.workspace_slug)
                ):
                    add_grant(
                        changes, user, entry.workspace_slug, entry.role, invitation.invited_by_id
                    )
            accepted = user_snapshot(user) | ({"via": via} if via != "password" else {})
            audit_each_workspace(changes, invitation, "invitation.accepted", before, accepted)
        self.session.refresh(invitation)
        return user

    # -- helpers -------------------------------------------------------------------

    def _live_invitation(self, user_id: int) -> Invitation | None:
        return self.session.scalars(
            select(Invitation)
            .where(
                Invitation.user_id == user_id,
                Invitation.status == InvitationStatus.PENDING,
                Invitation.expires_at > utcnow(),
            )
            .order_by(Invitation.id)
        ).first()

    def _fold_placeholder(self, placeholder_id: int | None, account: User) -> None:
        """The placeholder's invitations now name the account, and the placeholder
        goes (it never held a grant; the audit trail keeps its id as history)."""
        placeholder = self.session.get(User, placeholder_id) if placeholder_id else None
        if placeholder is None or placeholder.status != UserStatus.PENDING:
            return
        self.session.execute(
            update(Invitation)
            .where(Invitation.user_id == placeholder.id)
            .values(user_id=account.id)
            .execution_options(synchronize_session=False)
        )
        self.session.delete(placeholder)

    def _placeholder(self, actor: Actor, email: str) -> User | None:
        """The pending person ``actor`` invited before under ``email`` (through a
        workspace where they may invite), if any."""
        query = select(User).where(User.email == email, User.status == UserStatus.PENDING)
        visible = self.authorizer.workspaces_where(actor, Permission.USERS_INVITE)
        if visible is not None:
            query = query.where(
                select(Invitation.id)
                .where(
                    Invitation.user_id == User.id,
                    Invitation.grants.any(InvitationGrant.workspace_slug.in_(visible)),
                )
                .exists()
            )
        return self.session.scalars(query.order_by(User.id)).first()

    def _manageable(self, actor: Actor, invitation_id: int) -> Invitation:
        invitation = self._visible(actor, invitation_id)
        self.authorizer.require_all(actor, Permission.USERS_INVITE, _workspaces_of(invitation))
        return invitation

    def _supersede_tokens(self, invitation: Invitation) -> None:
        self.session.execute(
            update(InvitationToken)
            .where(
                InvitationToken.invitation_id == invitation.id,
                InvitationToken.superseded_at.is_(None),
            )
            .values(superseded_at=utcnow())
        )

    def _queue_email(
        self, changes: ChangeSet, invitation: Invitation, kind: str, *, notify: bool = True
    ) -> OutboxMessage:
        """A new token (older ones stop working) and the email carrying it, written to
        the outbox in this transaction and handed to the notifier after commit."""
        self._supersede_tokens(invitation)
        token = new_token()
        self.session.add(
            InvitationToken(token_hash=token_digest(token), invitation_id=invitation.id)
        )
        notice = self._notice(invitation, token)
        message = OutboxMessage(
            kind=kind,
            invitation_id=invitation.id,
            to_address=invitation.email,
            sealed_payload=seal(self.settings.secret_key, invitation_payload(notice)),
        )
        self.session.add(message)
        invitation.delivery_status = DeliveryStatus.QUEUED
        invitation.delivery_detail = None
        invitation.delivery_attempts = 0
        self.session.flush()
        if notify:
            message_id = message.id
            changes.on_commit(lambda: self.notifier.message_queued(message_id))
        return message

    def _inviter(self, invitation: Invitation) -> str:
        inviter = (
            self.session.get(User, invitation.invited_by_id) if invitation.invited_by_id else None
        )
        return f"{inviter.name} <{inviter.email}>" if inviter else ""

    def named_grants(self, invitation: Invitation) -> tuple[tuple[str, str], ...]:
        """The invitation's roles as (workspace name, role): as its email and its
        acceptance page show them (a workspace gone since keeps its slug)."""
        names = dict(
            self.session.execute(
                select(Workspace.slug, Workspace.name).where(
                    Workspace.slug.in_({g.workspace_slug for g in invitation.grants})
                )
            ).all()
        )
        return tuple(
            (names.get(g.workspace_slug, g.workspace_slug), g.role) for g in invitation.grants
        )

    def _notice(self, invitation: Invitation, token: str) -> InvitationNotice:
        inviter = self._inviter(invitation).split(" <")[0] or "Your administrator"
        return InvitationNotice(
            invitation_id=invitation.id,
            to_address=invitation.email,
            to_name=invitation.name,
            inviter_name=inviter,
            grants=self.named_grants(invitation),
            accept_url=f"{self.settings.public_url.rstrip('/')}/invite/{quote(token)}",
            expires_at=invitation.expires_at.isoformat(),
        )
