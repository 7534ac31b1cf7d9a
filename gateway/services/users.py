"""People: listing, status changes (deactivate, reactivate) and removal."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, bindparam, exists, func, or_, select, true
from sqlalchemy.orm import Session, selectinload

from gateway.db.models import (
    DirectoryGrant,
    Grant,
    Invitation,
    InvitationGrant,
    InvitationStatus,
    User,
    UserStatus,
    Workspace,
    WorkspaceActivity,
    utcnow,
)
from gateway.emails import normalise_email
from gateway.engine.engine import SubjectChanged, SubjectRemoved
from gateway.engine.rules import ALL_WORKSPACES, GrantKey, grant_rule
from gateway.errors import Conflict, Forbidden, NotFound
from gateway.services.base import Actor, AuditTarget, Authorizer, Page, UnitOfWork
from gateway.services.permissions import Permission

# Workspace → roles (a module-level name: UserService has a method called ``list``).
RolesByWorkspace = dict[str, list[str]]

SUPERADMIN_ROLE = "superadmin"
OWNER_ROLE = "owner"


@dataclass(frozen=True)
class UserFilter:
    status: UserStatus | None = None
    workspace: str | None = None
    role: str | None = None
    search: str | None = None


@dataclass(frozen=True)
class UserView:
    user: User
    roles: dict[str, list[str]]  # workspace → roles (active grants, or the invited ones)
    invitation: Invitation | None  # the latest invitation, if any
    # Workspace → when the person was last seen there by the check endpoints.
    workspaces_last_seen: dict[str, datetime] = field(default_factory=dict)
    # Workspace → the roles of ``roles`` a company directory gave (its groups' mapping or
    # its connection's default role): taken back by the directory, not by hand.
    directory_roles: dict[str, list[str]] = field(default_factory=dict)

    def ends_in(self, workspace: str) -> dict[str, datetime]:
        """Role → end time of the person's time-limited roles of ``roles`` in
        ``workspace`` (roles without an end are left out)."""
        held = self.roles.get(workspace, [])
        return {
            g.role: g.expires_at
            for g in self.user.grants
            if g.workspace_slug == workspace and g.role in held and g.expires_at is not None
        }


def in_force(grant: Grant, now: datetime | None = None) -> bool:
    """Whether ``grant`` still counts: no end, or an end still to come. A grant whose end
    has passed decides nothing from that moment (gateway.engine.expiry) and reads as gone
    everywhere, though its row waits for the cleanup (``ringfence grants expire``)."""
    return grant.expires_at is None or grant.expires_at > (now or utcnow())


def roles_by_workspace(grants: list[Grant]) -> dict[str, list[str]]:
    """Workspace → the roles of the grants in force (ended time-limited ones left out)."""
    now = utcnow()
    roles: dict[str, list[str]] = defaultdict(list)
    for grant in grants:
        if in_force(grant, now):
            roles[grant.workspace_slug].append(grant.role)
    return {workspace: sorted(r) for workspace, r in sorted(roles.items())}


def grant_in_force() -> ColumnElement[bool]:
    """:func:`in_force` as a query condition on ``Grant``."""
    return Grant.expires_at.is_(None) | (Grant.expires_at > utcnow())


def scoped(view: UserView, readable: set[str] | None) -> UserView:
    """The view with roles only in ``readable`` workspaces (None: all), so that a workspace
    admin does not learn about other workspaces through a shared person."""
    if readable is None:
        return view
    roles = {ws: r for ws, r in view.roles.items() if ws in readable}
    seen = {ws: at for ws, at in view.workspaces_last_seen.items() if ws in readable}
    given = {ws: r for ws, r in view.directory_roles.items() if ws in readable}
    return UserView(view.user, roles, view.invitation, seen, given)


def account_by_email(session: Session, email: str) -> User | None:
    """The account (active or deactivated) with this address, if any. Invitations'
    placeholders (pending) are not accounts: each inviting workspace has its own, so that
    inviting an address never shows whether it has an account or another invitation.
    ``email`` in any spelling: it is normalised as stored addresses are (gateway.emails)."""
    return session.scalar(_ACCOUNT_BY_EMAIL, {"email": normalise_email(email)})


# Built once (a SCIM create and every sign-in run it): building a statement and its cache
# key each time costs half as much again as running it.
_ACCOUNT_BY_EMAIL = select(User).where(
    User.email == bindparam("email"), User.status != UserStatus.PENDING
)


def user_snapshot(user: User) -> dict[str, Any]:
    """What the audit trail records about a user before and after a change."""
    return {
        "email": user.email,
        "name": user.name,
        "status": str(user.status),
        "roles": roles_by_workspace(user.grants),
    }


class UserService:
    def __init__(self, session: Session, uow: UnitOfWork, authorizer: Authorizer) -> None:
        self.session = session
        self.uow = uow
        self.authorizer = authorizer

    # -- reading -------------------------------------------------------------------

    def list(self, actor: Actor, where: UserFilter, offset: int, limit: int) -> Page[UserView]:
        """People ``actor`` may read (``users:read``) matching ``where``, by email."""
        query = select(User)
        readable = self.authorizer.workspaces_where(actor, Permission.USERS_READ)
        if readable is not None:
            query = query.where(self._in_workspaces(readable))
        if where.workspace or where.role:
            # Roles count as the listing shows them (invited ones too), and only in
            # workspaces the actor may read: a filter must not reveal other workspaces.
            scope = {where.workspace} if where.workspace else readable
            if scope is not None and readable is not None:
                scope = scope & readable
            query = query.where(self._in_workspaces(scope, where.role))
        if where.status:
            query = query.where(User.status == where.status)
        if where.search:
            pattern = where.search.strip().lower()
            query = query.where(
                or_(
                    User.email.contains(pattern, autoescape=True),
                    func.lower(User.name).contains(pattern, autoescape=True),
                )
            )
        total = self.session.scalar(select(func.count()).select_from(query.subquery())) or 0
        users = self.session.scalars(
            query.options(selectinload(User.grants))
            .order_by(User.email)
            .offset(offset)
            .limit(limit)
        ).all()
        seen = self.last_seen_by_workspace(user.id for user in users)
        given = self.directory_roles_by_user(user.id for user in users)
        return Page(
            [
                scoped(self.view(user, seen.get(user.id, {}), given.get(user.id, {})), readable)
                for user in users
            ],
            total,
        )

    def get(self, actor: Actor, user_id: int) -> UserView:
        """One person with roles and invitation status; NotFound if not visible to ``actor``."""
        user = self.visible_user(actor, user_id)
        return scoped(
            self.view(user), self.authorizer.workspaces_where(actor, Permission.USERS_READ)
        )

    def _in_workspaces(self, workspaces: set[str] | None, role: str | None = None) -> Any:
        """Users with a grant in force in one of ``workspaces`` (None: any), or people without an
        account yet invited into one of them. An existing account invited into a workspace
        is not visible there until the person accepts: an invitation must not open
        someone else's account to the inviter."""
        grant: ColumnElement[bool] = grant_in_force() & (
            true() if workspaces is None else Grant.workspace_slug.in_(workspaces)
        )
        invited: ColumnElement[bool] = (
            true() if workspaces is None else InvitationGrant.workspace_slug.in_(workspaces)
        )
        if role:
            grant = grant & (Grant.role == role)
            invited = invited & (InvitationGrant.role == role)
        pending_invitation = (User.status == UserStatus.PENDING) & exists().where(
            Invitation.user_id == User.id,
            Invitation.status == InvitationStatus.PENDING,
            Invitation.grants.any(invited),
        )
        return or_(User.grants.any(grant), pending_invitation)

    def count_by_workspace(self, actor: Actor, slugs: Iterable[str]) -> dict[str, int]:
        """Members per workspace as :meth:`list` counts them (a grant there, or invited
        there and not yet an account), for the workspaces among ``slugs`` where ``actor``
        may read people; the others are left out."""
        readable = self.authorizer.workspaces_where(actor, Permission.USERS_READ)
        wanted = [s for s in slugs if readable is None or s in readable]
        counts = dict.fromkeys(wanted, 0)
        if not wanted:
            return counts
        granted = (
            select(Grant.workspace_slug, func.count(func.distinct(Grant.user_id)))
            .where(Grant.workspace_slug.in_(wanted), grant_in_force())
            .group_by(Grant.workspace_slug)
        )
        invited = (
            select(InvitationGrant.workspace_slug, func.count(func.distinct(User.id)))
            .join(Invitation, Invitation.id == InvitationGrant.invitation_id)
            .join(User, User.id == Invitation.user_id)
            .where(
                InvitationGrant.workspace_slug.in_(wanted),
                Invitation.status == InvitationStatus.PENDING,
                User.status == UserStatus.PENDING,
            )
            .group_by(InvitationGrant.workspace_slug)
        )
        for query in (granted, invited):  # disjoint: a pending person holds no grant
            for slug, count in self.session.execute(query):
                counts[slug] += count
        return counts

    def visible_user(self, actor: Actor, user_id: int) -> User:
        """The user, if ``actor`` may read them through a workspace (``users:read``);
        otherwise NotFound, worded exactly as for an id that does not exist."""
        user = self.session.get(User, user_id)
        readable = self.authorizer.workspaces_where(actor, Permission.USERS_READ)
        if user is None or (
            readable is not None
            and not self.session.scalar(
                select(User.id).where(User.id == user_id, self._in_workspaces(readable))
            )
        ):
            raise NotFound(f"No user {user_id}")
        return user

    def last_seen_by_workspace(self, user_ids: Iterable[int]) -> dict[int, dict[str, datetime]]:
        """User id → workspace → last seen there (every workspace: scope it for readers)."""
        ids = list(user_ids)
        seen: dict[int, dict[str, datetime]] = defaultdict(dict)
        if ids:
            rows = self.session.execute(
                select(WorkspaceActivity.user_id, Workspace.slug, WorkspaceActivity.last_seen_at)
                .join(Workspace, Workspace.id == WorkspaceActivity.workspace_id)
                .where(WorkspaceActivity.user_id.in_(ids))
                .order_by(Workspace.slug)
            )
            for user_id, slug, at in rows:
                seen[user_id][slug] = at
        return seen

    def directory_roles_by_user(self, user_ids: Iterable[int]) -> dict[int, RolesByWorkspace]:
        """User id → workspace → the roles a directory connection gave them there (every
        workspace: scope it for readers)."""
        ids = list(user_ids)
        given: dict[int, defaultdict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        if ids:
            rows = self.session.execute(
                select(Grant.user_id, Grant.workspace_slug, Grant.role)
                .join(DirectoryGrant, DirectoryGrant.grant_id == Grant.id)
                .where(Grant.user_id.in_(ids))
                .order_by(Grant.workspace_slug, Grant.role)
            )
            for user_id, workspace, role in rows:
                given[user_id][workspace].append(role)
        return {user_id: dict(roles) for user_id, roles in given.items()}

    def view(
        self,
        user: User,
        last_seen: dict[str, datetime] | None = None,
        directory_roles: RolesByWorkspace | None = None,
    ) -> UserView:
        """A person with their roles per workspace (and which a directory gave), latest
        invitation and where they were last seen (``last_seen`` and ``directory_roles``,
        if the caller read them for many people at once)."""
        invitation = self.session.scalar(
            select(Invitation)
            .where(Invitation.user_id == user.id)
            .options(selectinload(Invitation.grants))
            .order_by(Invitation.id.desc())
            .limit(1)
        )
        roles = roles_by_workspace(user.grants)
        if user.status == UserStatus.PENDING and invitation is not None:
            invited: dict[str, list[str]] = defaultdict(list)
            for entry in invitation.grants:
                invited[entry.workspace_slug].append(entry.role)
            roles = {ws: sorted(r) for ws, r in sorted(invited.items())}
        if last_seen is None:
            last_seen = self.last_seen_by_workspace([user.id]).get(user.id, {})
        if directory_roles is None:
            directory_roles = self.directory_roles_by_user([user.id]).get(user.id, {})
        return UserView(user, roles, invitation, last_seen, directory_roles)

    # -- changing ------------------------------------------------------------------

    def deactivate(self, actor: Actor, user_id: int) -> UserView:
        """Every check for the user denies and their sessions end; grants are kept."""
        user = self._target(actor, user_id, Permission.USERS_DEACTIVATE)
        if user.status != UserStatus.ACTIVE:
            raise Conflict(f"User {user_id} is {user.status}, not active")
        self.protect_last_holders(user, "deactivate")
        return self._set_status(actor, user, UserStatus.DEACTIVATED, "user.deactivated")

    def reactivate(self, actor: Actor, user_id: int) -> UserView:
        """A deactivated user becomes active again, with the grants they had."""
        user = self._target(actor, user_id, Permission.USERS_DEACTIVATE)
        if user.status != UserStatus.DEACTIVATED:
            raise Conflict(f"User {user_id} is {user.status}, not deactivated")
        return self._set_status(actor, user, UserStatus.ACTIVE, "user.reactivated")

    def _set_status(self, actor: Actor, user: User, status: UserStatus, action: str) -> UserView:
        with self.uow.change(actor) as changes:
            before = user_snapshot(user)
            user.status = status
            if status != UserStatus.ACTIVE:
                user.session_version += 1  # ends every existing token at once
            changes.engine(SubjectChanged(user.id, user.email, active=status == UserStatus.ACTIVE))
            changes.audit_each(
                before["roles"],
                action,
                AuditTarget.USER,
                user.id,
                user.name,
                before,
                user_snapshot(user),
            )
        return self.view(user)

    def remove(self, actor: Actor, user_id: int) -> int:
        """Delete the account and its grants (and their rules); audit history stays."""
        user = self._target(actor, user_id, Permission.USERS_REMOVE)
        self.protect_last_holders(user, "remove")
        with self.uow.change(actor) as changes:
            before = user_snapshot(user)
            for grant in user.grants:
                changes.remove_rule(grant_rule(GrantKey(user.id, grant.role, grant.workspace_slug)))
            for invitation in self.session.scalars(
                select(Invitation).where(
                    Invitation.user_id == user.id, Invitation.status == InvitationStatus.PENDING
                )
            ):
                invitation.status = InvitationStatus.REVOKED
                invitation.revoked_at = utcnow()
            self.session.delete(user)
            changes.engine(SubjectRemoved(user.id, user.email))
            changes.audit_each(
                before["roles"], "user.removed", AuditTarget.USER, user.id, user.name, before
            )
        return changes.revision

    def _target(self, actor: Actor, user_id: int, permission: Permission) -> User:
        """The user ``actor`` wants to change, if they may (:meth:`_require_may_change`)."""
        user = self.visible_user(actor, user_id)
        self._require_may_change(actor, user, permission)
        return user

    def _require_may_change(
        self, actor: Actor, user: User, permission: Permission, view: UserView | None = None
    ) -> None:
        """Forbidden unless ``actor`` may change ``user``'s status with ``permission``: it
        is needed in every workspace where the user holds a role (or is invited; ``view``
        is the user's, when the caller has it)."""
        if actor.user_id == user.id:
            raise Forbidden("You cannot change your own account status")
        workspaces = {grant.workspace_slug for grant in user.grants}
        workspaces |= set((view or self.view(user)).roles)
        self.authorizer.require_all(actor, permission, workspaces)
        # Deactivating or removing someone takes all their roles: only who could have
        # granted each of them may (an admin does not remove the workspace's owner).
        verb = "remove" if permission == Permission.USERS_REMOVE else "deactivate"
        for grant in sorted(user.grants, key=lambda g: (g.workspace_slug, g.role)):
            self.authorizer.require_can_grant(actor, grant.role, grant.workspace_slug, verb=verb)

    def allowed_actions(self, actor: Actor, view: UserView) -> set[str]:
        """Which of "deactivate", "reactivate" and "remove" :meth:`deactivate`,
        :meth:`reactivate` and :meth:`remove` would carry out for ``actor`` on the
        person of ``view`` now, by the same checks: what a console offers. The person is
        one ``actor`` sees (their view came from this service)."""
        user = view.user

        def permitted(permission: Permission, taking_roles: str | None = None) -> bool:
            try:
                self._require_may_change(actor, user, permission, view)
                if taking_roles:
                    self.protect_last_holders(user, taking_roles)
            except (Forbidden, Conflict):
                return False
            return True

        actions: set[str] = set()
        if user.status == UserStatus.ACTIVE and permitted(
            Permission.USERS_DEACTIVATE, "deactivate"
        ):
            actions.add("deactivate")
        if user.status == UserStatus.DEACTIVATED and permitted(Permission.USERS_DEACTIVATE):
            actions.add("reactivate")
        if permitted(Permission.USERS_REMOVE, "remove"):
            actions.add("remove")
        return actions

    def protect_last_holders(self, user: User, verb: str) -> None:
        """Conflict if ``user`` is the last active holder of a role that must always have
        one (see :func:`must_keep_a_holder`), in any workspace."""
        for grant in sorted(user.grants, key=lambda g: (g.workspace_slug, g.role)):
            self.protect_last_holder(user, grant.role, grant.workspace_slug, verb)

    def protect_last_holder(self, user: User, role: str, workspace: str, verb: str) -> None:
        """Conflict if taking ``role`` in ``workspace`` from ``user`` leaves nobody active
        holding it there, for the roles that must keep a holder: the installation keeps a
        super admin, and a workspace that has an owner keeps one."""
        if not must_keep_a_holder(role, workspace) or not any(
            g.role == role and g.workspace_slug == workspace for g in user.grants
        ):
            return
        others = self.session.scalar(
            select(func.count(Grant.id))
            .join(User, User.id == Grant.user_id)
            .where(
                Grant.role == role,
                Grant.workspace_slug == workspace,
                User.status == UserStatus.ACTIVE,
                User.id != user.id,
            )
        )
        if not others:
            if role == SUPERADMIN_ROLE:
                raise Conflict(f"Cannot {verb} the last super admin")
            raise Conflict(
                f"Cannot {verb} the last {role} of '{workspace}'; make someone else {role} first"
            )


def must_keep_a_holder(role: str, workspace: str) -> bool:
    """Roles that may not lose their last active holder: the super admin (everywhere)
    and a workspace's owner (nobody else can change or delete the workspace)."""
    if workspace == ALL_WORKSPACES:
        return role == SUPERADMIN_ROLE
    return role == OWNER_ROLE
