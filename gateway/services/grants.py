"""Grants: a user holds a role in a workspace; each grant is one Casbin ``g`` rule,
written in the same transaction."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.db.models import DirectoryGrant, Grant, User, UserStatus, utcnow
from gateway.engine.engine import DecisionEngine
from gateway.engine.rules import ALL_WORKSPACES, GrantKey, grant_rule
from gateway.errors import Conflict, Forbidden, InvalidInput, NotFound
from gateway.services.base import Actor, AuditTarget, Authorizer, ChangeSet, UnitOfWork
from gateway.services.permissions import Permission
from gateway.services.users import UserService, in_force
from gateway.services.workspaces import WorkspaceService


def add_grant(
    changes: ChangeSet,
    user: User,
    workspace: str,
    role: str,
    granted_by: int | None,
    expires_at: datetime | None = None,
) -> None:
    """Add the grant row and its rule to an open change (shared with invitations)."""
    grant = Grant(
        user_id=user.id,
        workspace_slug=workspace,
        role=role,
        granted_by_id=granted_by,
        expires_at=expires_at,
    )
    changes.session.add(grant)
    user.grants.append(grant)
    rule = grant_rule(GrantKey(user.id, role, workspace))
    changes.add_rule(rule)
    if expires_at is not None:
        changes.expire_rule(rule, expires_at)


def require_not_from_directory(session: Session, grant: Grant) -> None:
    """A role a company directory gave (its default role, or a group's mapped role) is
    changed in the directory or its mapping, not by hand: the directory would give it
    back at its next change (gateway.services.directory)."""
    if session.get(DirectoryGrant, grant.id) is not None:
        raise Conflict(
            f"'{grant.role}' in '{grant.workspace_slug}' is given by a company directory: "
            "change the person's groups there, or the connection's role mapping",
            role=grant.role,
            workspace=grant.workspace_slug,
        )


def remove_grant(changes: ChangeSet, user: User, grant: Grant) -> None:
    changes.remove_rule(grant_rule(GrantKey(user.id, grant.role, grant.workspace_slug)))
    user.grants.remove(grant)
    changes.session.delete(grant)


def require_future_end(expires_at: datetime | None, role: str | None = None) -> None:
    """A grant's end, if it has one, is in the future (422 otherwise; ``role``, when
    given, is named in the problem so that a form can put the message beside its field)."""
    if expires_at is not None and expires_at <= utcnow():
        named = {} if role is None else {"role": role}
        raise InvalidInput(
            "expires_at must be in the future"
            if role is None
            else f"The end of '{role}' must be in the future",
            errors={"expires_at": ["must be in the future"]},
            **named,
        )


def ends_snapshot(grants: Iterable[Grant]) -> dict[str, str]:
    """Role → end time (ISO 8601) of the time-limited ones among ``grants``: what the
    audit trail records (``expires_at``) beside the roles."""
    return {
        g.role: g.expires_at.isoformat()
        for g in sorted(grants, key=lambda g: g.role)
        if g.expires_at is not None
    }


class GrantService:
    def __init__(
        self,
        session: Session,
        uow: UnitOfWork,
        authorizer: Authorizer,
        engine: DecisionEngine,
        users: UserService,
        workspaces: WorkspaceService,
        installation_roles: Callable[[], frozenset[str]] = frozenset,
    ) -> None:
        self.session = session
        self.uow = uow
        self.authorizer = authorizer
        self.engine = engine
        self.users = users
        self.workspaces = workspaces
        # The roles granted only in every workspace (``scope: installation`` in policies/).
        self.installation_roles = installation_roles

    def require_grantable_here(self, workspace: str, roles: Iterable[str]) -> None:
        """An installation-wide role (``scope: installation``, the super admin's) is
        granted in every workspace at once (``*``), never in one: 422 naming it."""
        if workspace == ALL_WORKSPACES:
            return
        everywhere = sorted(set(roles) & self.installation_roles())
        if everywhere:
            names = ", ".join(map(repr, everywhere))
            what = (
                "an installation-wide role" if len(everywhere) == 1 else "installation-wide roles"
            )
            raise InvalidInput(
                f"{names} {'is' if len(everywhere) == 1 else 'are'} {what}: granted only in "
                f"every workspace (workspace '*'), never in one such as '{workspace}'",
                errors={
                    "role": [f"'{r}' is granted only in every workspace (*)" for r in everywhere]
                },
                installation_roles=everywhere,
            )

    def require_roles_exist(self, workspace: str, roles: Iterable[str]) -> None:
        """Roles must be defined in ``policies/`` (shared, or of this workspace)."""
        known = self.engine.roles_in(workspace)
        unknown = sorted(set(roles) - known)
        if unknown:
            raise InvalidInput(
                f"Unknown role {', '.join(map(repr, unknown))} in workspace '{workspace}'",
                errors={"role": [f"unknown role '{r}'" for r in unknown]},
                known_roles=sorted(known),
            )

    def replace(
        self,
        actor: Actor,
        user_id: int,
        workspace: str,
        roles: list[str],
        ends: Mapping[str, datetime | None] | None = None,
    ) -> int:
        """Make ``roles`` exactly the user's roles in ``workspace``; the new revision.

        ``ends`` sets the end of roles of ``roles`` (None: no end), each in the future: a
        role given gets its end, a role held gets it in place of the one it had (a time
        limit set, moved or lifted: the same grant, its rule's end changed in memory and
        in the change log). A role not named in ``ends`` is given without an end, or kept
        with the end it has. Putting an end on a role counts as taking it at that time:
        the permission to grant and remove it, not a directory's role, not a last owner's.
        A grant whose end has passed is gone: ticking its role gives it again."""
        user = self._target(actor, user_id, workspace)
        self.require_roles_exist(workspace, roles)
        now = utcnow()
        here = [g for g in user.grants if g.workspace_slug == workspace]
        current = {g.role: g for g in here if in_force(g, now)}
        ended = {g.role: g for g in here if not in_force(g, now)}
        wanted = set(roles)
        ends = {role: at for role, at in (ends or {}).items() if role in wanted}
        for role, at in sorted(ends.items()):
            require_future_end(at, role)
        retimed = {
            role: at
            for role, at in ends.items()
            if role in current and current[role].expires_at != at
        }
        if wanted == set(current) and not retimed:
            return self.engine.revision
        # Only roles newly given: one held from before scopes can still be kept or taken.
        self.require_grantable_here(workspace, wanted - set(current))
        for role in sorted(wanted - set(current)):
            self.authorizer.require_can_grant(actor, role, workspace)
        for role in sorted(set(current) - wanted):
            self.authorizer.require_can_grant(actor, role, workspace, verb="remove")
            self.users.protect_last_holder(user, role, workspace, "demote")
            require_not_from_directory(self.session, current[role])
        for role, at in sorted(retimed.items(), key=lambda item: item[0]):
            self.authorizer.require_can_grant(actor, role, workspace)
            self.authorizer.require_can_grant(actor, role, workspace, verb="remove")
            require_not_from_directory(self.session, current[role])
            if at is not None:
                self.users.protect_last_holder(user, role, workspace, "put an end to")
        with self.uow.change(actor) as changes:
            before = sorted(current)
            ends_before = ends_snapshot(current.values())
            for role in sorted(wanted - set(current)):
                if role in ended:
                    self._clear_ended(changes, user, ended[role])
            for role in sorted(set(current) - wanted):
                remove_grant(changes, user, current[role])
            for role in sorted(wanted - set(current)):
                add_grant(changes, user, workspace, role, actor.user_id, ends.get(role))
            for role, at in sorted(retimed.items(), key=lambda item: item[0]):
                current[role].expires_at = at
                changes.expire_rule(grant_rule(GrantKey(user.id, role, workspace)), at)
            ends_after = ends_snapshot(
                g for g in user.grants if g.workspace_slug == workspace and g.role in wanted
            )
            changes.audit(
                "grant.replaced",
                AuditTarget.USER,
                user.id,
                user.name,
                workspace,
                {"roles": before, **({"expires_at": ends_before} if ends_before else {})},
                {"roles": sorted(wanted), **({"expires_at": ends_after} if ends_after else {})},
            )
        return changes.revision

    def _clear_ended(self, changes: ChangeSet, user: User, grant: Grant) -> None:
        """Remove a grant whose end has passed (it already decides nothing) before its role
        is given again, audited as the cleanup would (``grant.expired``)."""
        assert grant.expires_at is not None
        self.revoke_in(
            changes,
            user,
            grant,
            "grant.expired",
            role=grant.role,
            expired_at=grant.expires_at.isoformat(),
        )
        # The row goes before its successor is written (one grant per role and workspace).
        changes.session.flush()

    def add(
        self,
        actor: Actor,
        user_id: int,
        workspace: str,
        role: str,
        expires_at: datetime | None = None,
    ) -> int:
        """Give the user ``role`` in ``workspace`` (until ``expires_at``, if given, which
        must be in the future); the new revision."""
        user = self._target(actor, user_id, workspace)
        self.require_roles_exist(workspace, [role])
        self.require_grantable_here(workspace, [role])
        self.authorizer.require_can_grant(actor, role, workspace)
        require_future_end(expires_at)
        now = utcnow()
        here = [g for g in user.grants if g.workspace_slug == workspace]
        roles = sorted(g.role for g in here if in_force(g, now))
        if role in roles:
            raise Conflict(f"User {user_id} already has role '{role}' in '{workspace}'")
        # A grant of the role whose end has passed is gone: given again, as after the cleanup.
        ended = next((g for g in here if g.role == role), None)
        with self.uow.change(actor) as changes:
            if ended is not None:
                self._clear_ended(changes, user, ended)
            add_grant(changes, user, workspace, role, actor.user_id, expires_at)
            after: dict[str, Any] = {"roles": sorted([*roles, role])}
            if expires_at is not None:
                after["expires_at"] = {role: expires_at.isoformat()}
            changes.audit(
                "grant.added",
                AuditTarget.USER,
                user.id,
                user.name,
                workspace,
                {"roles": roles},
                after,
            )
        return changes.revision

    def revoke_in(
        self, changes: ChangeSet, user: User, grant: Grant, action: str, **why: Any
    ) -> None:
        """Remove ``grant`` inside an open change and audit it as ``action`` (reviews and
        expiry revoke through here, so every revocation looks the same in the trail)."""
        workspace = grant.workspace_slug
        roles = sorted(g.role for g in user.grants if g.workspace_slug == workspace)
        remove_grant(changes, user, grant)
        changes.audit(
            action,
            AuditTarget.USER,
            user.id,
            user.name,
            workspace,
            {"roles": roles},
            {"roles": [r for r in roles if r != grant.role], **why},
        )

    def expire_ended(self, actor: Actor, now: datetime | None = None) -> int:
        """Remove every grant whose end time has passed, audited as ``grant.expired``, in
        one change; how many. (Decisions denied already: see gateway.engine.expiry.)"""
        now = now or utcnow()
        ended = self.session.scalars(
            select(Grant)
            .where(Grant.expires_at.is_not(None), Grant.expires_at <= now)
            .order_by(Grant.id)
            .limit(1000)
        ).all()
        if not ended:
            return 0
        with self.uow.change(actor) as changes:
            for grant in ended:
                assert grant.expires_at is not None
                self.revoke_in(
                    changes,
                    grant.user,
                    grant,
                    "grant.expired",
                    role=grant.role,
                    expired_at=grant.expires_at.isoformat(),
                )
        return len(ended)

    def remove(self, actor: Actor, user_id: int, workspace: str, role: str) -> int:
        """Take ``role`` in ``workspace`` away from the user; the new revision."""
        user = self._target(actor, user_id, workspace)
        grant = next(
            (g for g in user.grants if g.workspace_slug == workspace and g.role == role), None
        )
        if grant is None:
            raise NotFound(f"User {user_id} has no role '{role}' in '{workspace}'")
        self.authorizer.require_can_grant(actor, role, workspace, verb="remove")
        self.users.protect_last_holder(user, role, workspace, "demote")
        require_not_from_directory(self.session, grant)
        roles = sorted(g.role for g in user.grants if g.workspace_slug == workspace)
        with self.uow.change(actor) as changes:
            remove_grant(changes, user, grant)
            changes.audit(
                "grant.removed",
                AuditTarget.USER,
                user.id,
                user.name,
                workspace,
                {"roles": roles},
                {"roles": [r for r in roles if r != role]},
            )
        return changes.revision

    def _target(self, actor: Actor, user_id: int, workspace: str) -> User:
        # Permission first: a 404 must not tell outsiders which workspaces exist.
        self.authorizer.require(actor, Permission.ROLE_MANAGEMENT_WRITE, workspace)
        if workspace != ALL_WORKSPACES:
            self.workspaces.require_exists(workspace)
        # Only people the actor can already see through a workspace they read: anyone
        # else (another workspace's people, the super admin) is reached by an invitation
        # the person accepts, and answers exactly like an id that does not exist.
        user = self.users.visible_user(actor, user_id)
        if actor.user_id == user.id:
            raise Forbidden("You cannot change your own roles")
        if user.status == UserStatus.PENDING:
            raise Conflict(
                f"User {user_id} has not accepted their invitation yet; "
                "change the invitation instead"
            )
        return user
