"""Company directories (Okta, Microsoft Entra ID, ...) provisioning one workspace over
SCIM 2.0 (RFC 7643/7644): the connections an admin manages, and what the directory's
requests change.

A **connection** belongs to one workspace. Creating it (or rotating its token) returns a
bearer token once; only its SHA-256 is stored. Every directory request names the
connection through its token, so it reads and changes the people and groups of that
connection alone: the workspace is never taken from the request.

A directory **user** is a person's membership of the workspace, linked to their account:
a new account (active, no password: single sign-on or a password reset; no invitation
email), or the existing account with that email, which is linked, never duplicated, and
never changed (name, email, status) by a directory that did not create it.

The workspace roles a directory user holds are derived: the connection's default role
and the roles its groups map to (``group_roles``), while the user is active. Every change
of a user, a group's members or the mapping brings the grants to that at once, in the
same change (unit of work, change log, audit, replicas), marked as given by the
directory (:class:`~gateway.db.models.DirectoryGrant`) so that it takes back only what it
gave. ``active: false`` and deletion take every role the person holds in the workspace
(those granted by hand too: they left); a person left with no role anywhere has their
sessions ended. The last owner of a workspace is protected as everywhere else.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import bindparam, delete, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased, selectinload

from gateway.db.models import (
    DirectoryConnection,
    DirectoryGrant,
    DirectoryGroup,
    DirectoryGroupMember,
    DirectoryUser,
    Grant,
    User,
    UserStatus,
    utcnow,
)
from gateway.emails import normalise_email
from gateway.engine.engine import DecisionEngine, SubjectChanged
from gateway.errors import Conflict, InvalidInput, NotFound, RingfenceError
from gateway.identity.security import new_token, token_digest
from gateway.services.base import Actor, AuditTarget, Authorizer, ChangeSet, UnitOfWork
from gateway.services.grants import GrantService, add_grant, remove_grant
from gateway.services.permissions import Permission
from gateway.services.settings import STORED_EMAIL
from gateway.services.users import UserService, account_by_email

# A directory user or group: what the membership links either side to.
_Member = TypeVar("_Member", DirectoryUser, DirectoryGroup)


def _key(external_id: str | None) -> str | None:
    """What an externalId is unique as within a connection: any case, as userName."""
    return external_id.lower() if external_id is not None else None


TOKEN_PREFIX = "rfd_"  # noqa: S105 - the visible prefix of directory tokens, not a secret
# How often a connection's last use is written (a directory may call many times a second).
LAST_USED_EVERY = timedelta(minutes=1)


# Built once: every SCIM request runs the first, every create or replace the second, and
# building a statement (its cache key too) each time costs half as much again as running
# it.
_LIVE_CONNECTION = select(DirectoryConnection).where(
    DirectoryConnection.token_hash == bindparam("token_hash"),
    DirectoryConnection.revoked_at.is_(None),
)
_TAKEN = aliased(DirectoryUser)
_LINKED = aliased(DirectoryUser)
_ACCOUNT = (
    select(User.id)
    .where(User.email == bindparam("email"), User.status != UserStatus.PENDING)
    .scalar_subquery()
)
# One read before a create or a replace: whether another of the connection's users has
# the userName or the externalId (any case; an externalId of None matches no row), the
# account the person's email names (pending invitations' placeholders are not accounts),
# whether the connection already provisions that account as another of its users, and
# the stored email settings (the company domains a new account's address must be in).
# Each part is an index lookup (the last by the connection's account, not its users).
_PREFLIGHT = select(
    exists()
    .where(
        _TAKEN.connection_id == bindparam("connection_id"),
        _TAKEN.user_name_key == bindparam("user_name_key"),
        _TAKEN.id != bindparam("own"),
    )
    .label("user_name_taken"),
    exists()
    .where(
        _TAKEN.connection_id == bindparam("connection_id"),
        _TAKEN.external_id_key == bindparam("external_id_key"),
        _TAKEN.id != bindparam("own"),
    )
    .label("external_id_taken"),
    _ACCOUNT.label("account_id"),
    select(_LINKED.id)
    .where(
        _LINKED.connection_id == bindparam("connection_id"),
        _LINKED.user_id == _ACCOUNT,
        _LINKED.id != bindparam("own"),
    )
    .limit(1)
    .scalar_subquery()
    .label("linked_as_another"),
    STORED_EMAIL.label("email_settings"),
)


class DirectoryConflict(Conflict):
    """A SCIM 409: ``scim_type`` is RFC 7644's (uniqueness, mutability)."""

    def __init__(self, detail: str, scim_type: str = "uniqueness") -> None:
        super().__init__(detail, scim_type=scim_type)


class VersionMismatch(RingfenceError):
    status = 412
    type = "precondition-failed"
    title = "The resource changed since the version given"


@dataclass(frozen=True)
class ConnectionWithToken:
    """A connection and its bearer token, which exists only in this answer."""

    connection: DirectoryConnection
    token: str


@dataclass(frozen=True)
class DirectoryPerson:
    """A SCIM User as the directory sent it, read by the web layer."""

    user_name: str
    external_id: str | None
    active: bool
    email: str | None
    display_name: str
    resource: dict[str, Any]  # the whole resource, for reading back (no password)


@dataclass(frozen=True)
class DirectoryTeam:
    """A SCIM Group as the directory sent it: its members by their SCIM ids."""

    display_name: str
    external_id: str | None
    members: Sequence[str]
    resource: dict[str, Any]


@dataclass(frozen=True)
class ProvisionedPerson:
    """A directory user as an admin sees them: their roles in the workspace, each
    marked whether the directory gave it (True) or it was granted by hand."""

    member: DirectoryUser
    roles: list[tuple[str, bool]]


@dataclass(frozen=True)
class DirectoryOverview:
    connection: DirectoryConnection
    people: list[ProvisionedPerson]
    groups: list[tuple[DirectoryGroup, int, str | None]]  # group, members, mapped role


def directory_actor(
    connection: DirectoryConnection,
    request_id: str | None = None,
    source_address: str | None = None,
) -> Actor:
    """The directory, as the audit trail names it: by connection, workspace and id."""
    return Actor(
        None,
        f"directory {connection.name} ({connection.workspace_slug})",
        request_id=request_id,
        source_address=source_address,
        client_id=f"directory:{connection.id}",
    )


def connection_view(connection: DirectoryConnection) -> dict[str, Any]:
    return {
        "workspace": connection.workspace_slug,
        "name": connection.name,
        "default_role": connection.default_role,
        "group_roles": dict(sorted(connection.group_roles.items())),
    }


class DirectoryService:
    def __init__(
        self,
        session: Session,
        uow: UnitOfWork,
        authorizer: Authorizer,
        engine: DecisionEngine,
        users: UserService,
        grants: GrantService,
        allowed_domains: Callable[[Any], Sequence[str]],
    ) -> None:
        self.session = session
        self.uow = uow
        self.authorizer = authorizer
        self.engine = engine
        self.users = users
        self.grants = grants
        # The stored email settings (``STORED_EMAIL``) → the company domains new
        # accounts' addresses must be in (gateway.services.settings.allowed_domains_in).
        self.allowed_domains = allowed_domains

    # -- connections (an admin with directory:manage in the workspace) ---------------

    def create(
        self,
        actor: Actor,
        workspace: str,
        name: str,
        default_role: str | None = None,
        group_roles: dict[str, str] | None = None,
    ) -> ConnectionWithToken:
        """A new connection of ``workspace``; its token is returned this once."""
        self.authorizer.require(actor, Permission.DIRECTORY_MANAGE, workspace)
        self.grants.workspaces.require_exists(workspace)
        name = name.strip()
        if not name:
            raise InvalidInput("The connection needs a name", errors={"name": ["required"]})
        mapping = self._checked_roles(actor, workspace, default_role, group_roles or {})
        token = TOKEN_PREFIX + new_token()
        connection = DirectoryConnection(
            workspace_slug=workspace,
            name=name,
            token_hash=token_digest(token),
            default_role=default_role,
            group_roles=mapping,
            created_by_id=actor.user_id,
            created_by_name=actor.name,
            created_at=utcnow(),
        )
        with self.uow.events_only(actor) as changes:
            self.session.add(connection)
            self.session.flush()
            changes.audit(
                "directory.connection.created",
                AuditTarget.DIRECTORY_CONNECTION,
                connection.id,
                name,
                workspace,
                after=connection_view(connection),
            )
        return ConnectionWithToken(connection, token)

    def connections(self, actor: Actor, workspace: str | None = None) -> list[DirectoryConnection]:
        """The connections of the workspaces where ``actor`` holds ``directory:manage``
        (of ``workspace`` alone, if given), newest first, revoked ones included."""
        where = self.authorizer.workspaces_where(actor, Permission.DIRECTORY_MANAGE)
        query = select(DirectoryConnection).order_by(DirectoryConnection.id.desc())
        if workspace is not None:
            if where is not None and workspace not in where:
                return []
            query = query.where(DirectoryConnection.workspace_slug == workspace)
        elif where is not None:
            query = query.where(DirectoryConnection.workspace_slug.in_(where))
        return list(self.session.scalars(query))

    def get(self, actor: Actor, connection_id: int) -> DirectoryConnection:
        """One connection; NotFound, as for an id that does not exist, unless ``actor``
        holds ``directory:manage`` in its workspace."""
        connection = self.session.get(DirectoryConnection, connection_id)
        if connection is None or not self.authorizer.can(
            actor, Permission.DIRECTORY_MANAGE, connection.workspace_slug
        ):
            raise NotFound(f"No directory connection {connection_id}")
        return connection

    def overview(self, actor: Actor, connection_id: int, limit: int = 500) -> DirectoryOverview:
        """A connection with the people it provisioned (the first ``limit``), their roles
        in the workspace and where each came from, and its groups with their roles."""
        connection = self.get(actor, connection_id)
        workspace = connection.workspace_slug
        marked = set(
            self.session.scalars(
                select(DirectoryGrant.grant_id).where(DirectoryGrant.connection_id == connection.id)
            )
        )
        people = [
            ProvisionedPerson(
                member,
                sorted(
                    (g.role, g.id in marked)
                    for g in (member.user.grants if member.user else [])
                    if g.workspace_slug == workspace
                ),
            )
            for member in self._users_of(connection)[:limit]
        ]
        teams = self.list_groups(connection)
        members = self.members(teams)
        groups = [
            (team, len(members[team.id]), connection.group_roles.get(team.display_name_key))
            for team in teams
        ]
        return DirectoryOverview(connection, people, groups)

    def rotate_token(self, actor: Actor, connection_id: int) -> ConnectionWithToken:
        """A new token (shown once); the old one stops working at once."""
        connection = self._live(actor, connection_id)
        token = TOKEN_PREFIX + new_token()
        with self.uow.events_only(actor) as changes:
            connection.token_hash = token_digest(token)
            connection.token_rotated_at = utcnow()
            changes.audit(
                "directory.connection.token_rotated",
                AuditTarget.DIRECTORY_CONNECTION,
                connection.id,
                connection.name,
                connection.workspace_slug,
            )
        return ConnectionWithToken(connection, token)

    def revoke(self, actor: Actor, connection_id: int) -> DirectoryConnection:
        """The token stops working at once; the people and roles it provisioned stay."""
        connection = self._live(actor, connection_id)
        with self.uow.events_only(actor) as changes:
            connection.revoked_at = utcnow()
            # A random hash: the old token can never match again, even by accident.
            connection.token_hash = token_digest(new_token())
            changes.audit(
                "directory.connection.revoked",
                AuditTarget.DIRECTORY_CONNECTION,
                connection.id,
                connection.name,
                connection.workspace_slug,
            )
        return connection

    def set_roles(
        self,
        actor: Actor,
        connection_id: int,
        default_role: str | None,
        group_roles: dict[str, str],
    ) -> DirectoryConnection:
        """Replace the default role and the group → role mapping; every provisioned
        person's roles follow at once, in the same change."""
        connection = self._live(actor, connection_id)
        workspace = connection.workspace_slug
        mapping = self._checked_roles(actor, workspace, default_role, group_roles)
        # Taking a mapped role away takes it from its holders: as removing it by hand.
        old = set(connection.group_roles.values()) | {connection.default_role}
        for role in sorted(r for r in old - {default_role, *mapping.values()} if r):
            self.authorizer.require_can_grant(actor, role, workspace, verb="remove")
        with self.uow.change(actor) as changes:
            before = connection_view(connection)
            connection.default_role = default_role
            connection.group_roles = mapping
            self.session.flush()
            self._sync_many(changes, connection, self._users_of(connection))
            changes.audit(
                "directory.connection.roles_changed",
                AuditTarget.DIRECTORY_CONNECTION,
                connection.id,
                connection.name,
                workspace,
                before,
                connection_view(connection),
            )
        return connection

    def _live(self, actor: Actor, connection_id: int) -> DirectoryConnection:
        connection = self.get(actor, connection_id)
        if connection.revoked_at is not None:
            raise Conflict(f"Directory connection {connection_id} is revoked")
        return connection

    def _checked_roles(
        self,
        actor: Actor,
        workspace: str,
        default_role: str | None,
        group_roles: dict[str, str],
    ) -> dict[str, str]:
        """The mapping keyed by lower-cased group name; every role must exist and be
        one ``actor`` could grant there (no escalation through a directory)."""
        mapping = {name.strip().lower(): role for name, role in group_roles.items()}
        if any(not name for name in mapping):
            raise InvalidInput("A group name is empty", errors={"group_roles": ["empty name"]})
        roles = set(mapping.values()) | ({default_role} if default_role else set())
        self.grants.require_roles_exist(workspace, roles)
        self.grants.require_grantable_here(workspace, roles)
        for role in sorted(roles):
            self.authorizer.require_can_grant(actor, role, workspace)
        return dict(sorted(mapping.items()))

    # -- the directory's requests (a connection, found by its token) ----------------

    def connection_for_token(self, token: str) -> DirectoryConnection | None:
        """The live connection whose token this is; notes its use (once a minute)."""
        connection = self.session.scalar(_LIVE_CONNECTION, {"token_hash": token_digest(token)})
        if connection is not None:
            now = utcnow()
            if connection.last_used_at is None or now - connection.last_used_at > LAST_USED_EVERY:
                connection.last_used_at = now
                self.session.commit()
        return connection

    def list_users(self, connection: DirectoryConnection) -> list[DirectoryUser]:
        return self._users_of(connection)

    def user(self, connection: DirectoryConnection, scim_id: str) -> DirectoryUser:
        found = self.session.scalar(
            select(DirectoryUser).where(
                DirectoryUser.connection_id == connection.id, DirectoryUser.scim_id == scim_id
            )
        )
        if found is None:
            raise NotFound(f"No user {scim_id!r}")
        return found

    def users_where(
        self,
        connection: DirectoryConnection,
        user_name: str | None = None,
        external_id: str | None = None,
    ) -> list[DirectoryUser]:
        """The users with this userName or externalId (any case): the indexed lookups
        directories make before creating someone."""
        query = select(DirectoryUser).where(DirectoryUser.connection_id == connection.id)
        if user_name is not None:
            query = query.where(DirectoryUser.user_name_key == user_name.lower())
        if external_id is not None:
            query = query.where(DirectoryUser.external_id_key == _key(external_id))
        return list(self.session.scalars(query.order_by(DirectoryUser.id)))

    def group_names_of(self, members: Iterable[DirectoryUser]) -> dict[int, list[DirectoryGroup]]:
        """Directory user id → the groups they are in."""
        return self._across_membership(
            [member.id for member in members],
            DirectoryGroupMember.member_id,
            DirectoryGroup,
            DirectoryGroupMember.group_id,
        )

    def create_user(
        self, actor: Actor, connection: DirectoryConnection, person: DirectoryPerson
    ) -> DirectoryUser:
        """Provision a person: link the account with their email, or create one (none
        yet if the directory sent no email address: no access until it does)."""
        email = self._email_of(person)
        return _again_if_raced(partial(self._create_user, actor, connection, person, email))

    def _create_user(
        self,
        actor: Actor,
        connection: DirectoryConnection,
        person: DirectoryPerson,
        email: str | None,
    ) -> DirectoryUser:
        account = self._preflight(connection, person, email)
        with (
            self._raced(lambda: self._preflight(connection, person, email)),
            self.uow.change(actor) as changes,
        ):
            member = DirectoryUser(
                scim_id=uuid.uuid4().hex,
                connection_id=connection.id,
                user_name=person.user_name,
                user_name_key=person.user_name.lower(),
                external_id=person.external_id,
                external_id_key=_key(person.external_id),
                active=person.active,
                created_account=False,
                resource=person.resource,
                version=1,
            )
            self.session.add(member)
            if email:
                self._attach(changes, member, account, email, person.display_name)
            self.session.flush()
            self._audit_member(
                changes,
                connection,
                member,
                "directory.user.created"
                if member.created_account or not email
                else "directory.user.linked",
                after={"user_name": person.user_name, "active": person.active},
            )
            # Someone just provisioned is in no group yet: no need to read theirs.
            self._sync(changes, connection, member, names=[])
        return member

    def replace_user(
        self,
        actor: Actor,
        connection: DirectoryConnection,
        scim_id: str,
        person: DirectoryPerson,
        expected_version: str | None = None,
    ) -> DirectoryUser:
        """The directory's new state of a person (PUT, or PATCH applied)."""
        return _again_if_raced(
            partial(self._replace_user, actor, connection, scim_id, person, expected_version)
        )

    def _replace_user(
        self,
        actor: Actor,
        connection: DirectoryConnection,
        scim_id: str,
        person: DirectoryPerson,
        expected_version: str | None,
    ) -> DirectoryUser:
        member = self.user(connection, scim_id)
        self._require_version(member.version, expected_version)
        email = self._email_of(person)
        account = member.user
        linking = account is None and email is not None
        found = self._preflight(connection, person, email if linking else None, member.id)
        if account is not None and member.created_account and email and email != account.email:
            taken = account_by_email(self.session, email)
            if taken is not None and taken.id != account.id:
                raise DirectoryConflict(f"{email} belongs to another account")
        own, linked = member.id, email if linking else None
        with (
            self._raced(lambda: self._preflight(connection, person, linked, own)),
            self.uow.change(actor) as changes,
        ):
            before = {"user_name": member.user_name, "active": member.active}
            if linking and email:
                self._attach(changes, member, found, email, person.display_name)
            elif account is not None and member.created_account:
                # Only the directory that created the account speaks for its identity.
                account.name = person.display_name
                if email and email != account.email:
                    account.email = email
                    changes.engine(
                        SubjectChanged(
                            account.id, email, active=account.status == UserStatus.ACTIVE
                        )
                    )
            member.user_name = person.user_name
            member.user_name_key = person.user_name.lower()
            member.external_id = person.external_id
            member.external_id_key = _key(person.external_id)
            member.active = person.active
            member.resource = person.resource
            member.version += 1
            member.updated_at = utcnow()
            after = {"user_name": member.user_name, "active": member.active}
            action = "directory.user.updated"
            if before["active"] != after["active"]:
                action = "directory.user." + ("reactivated" if member.active else "deactivated")
            self._audit_member(changes, connection, member, action, before, after)
            self._sync(changes, connection, member)
        return member

    def _preflight(
        self,
        connection: DirectoryConnection,
        person: DirectoryPerson,
        email: str | None,
        own: int | None = None,
    ) -> User | None:
        """409 if another user of the connection (not ``own``) has this userName or
        externalId; then the account to link a person with ``email`` to (None: one is
        created, if the address is in the allowed domains), never one the connection
        already provisions as someone else. One read (``_PREFLIGHT``) for all of it."""
        found = (
            self.session.connection()
            .execute(
                _PREFLIGHT,
                {
                    "connection_id": connection.id,
                    "user_name_key": person.user_name.lower(),
                    "external_id_key": _key(person.external_id),
                    "email": email,
                    "own": own or 0,  # no row's id is 0
                },
            )
            .one()
        )
        if found.user_name_taken:
            raise DirectoryConflict(f"userName {person.user_name!r} is taken")
        if found.external_id_taken:
            raise DirectoryConflict(f"externalId {person.external_id!r} is taken")
        if email is None:
            return None
        if found.account_id is None:
            self._require_allowed_domain(email, found.email_settings)
            return None
        if found.linked_as_another is not None:
            raise DirectoryConflict(f"{email} is already provisioned as another user")
        return self.session.get(User, found.account_id)

    @staticmethod
    @contextmanager
    def _raced(check: Callable[[], object]) -> Iterator[None]:
        """A change that another request beat to a uniqueness constraint (a directory
        retrying a creation still in flight, or pushing one person on two connections at
        once: both passed the uniqueness read before either wrote) is answered as that
        read, ``check``, answers now: 409, not an error of the database."""
        try:
            yield
        except IntegrityError:
            check()
            raise

    def _attach(
        self,
        changes: ChangeSet,
        member: DirectoryUser,
        account: User | None,
        email: str,
        name: str,
    ) -> None:
        """Link ``member`` to ``account``, or to a new active account (no password:
        single sign-on or a password reset; no invitation email). The link is made
        before the flush, so that a new member's row is inserted with it (no UPDATE)."""
        if account is not None:
            member.user = account
            return
        # No grants yet: an empty list, known as such, instead of a query for them.
        account = User(email=email, name=name, status=UserStatus.ACTIVE, grants=[])
        self.session.add(account)
        member.created_account = True
        member.user = account
        self.session.flush()  # the account's id, for the engine
        changes.engine(SubjectChanged(account.id, account.email, active=True))

    def _audit_member(
        self,
        changes: ChangeSet,
        connection: DirectoryConnection,
        member: DirectoryUser,
        action: str,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        account = member.user
        if account is not None:
            target = (AuditTarget.USER, account.id, account.name)
        else:  # no account yet: the event is about the connection's directory user
            target = (AuditTarget.DIRECTORY_CONNECTION, connection.id, member.user_name)
        changes.audit(action, *target, connection.workspace_slug, before, after)

    def delete_user(
        self,
        actor: Actor,
        connection: DirectoryConnection,
        scim_id: str,
        expected_version: str | None = None,
    ) -> None:
        """Remove the person from the workspace: every role they hold there goes; the
        account stays (it may have other workspaces; an admin may remove it)."""
        member = self.user(connection, scim_id)
        self._require_version(member.version, expected_version)
        with self.uow.change(actor) as changes:
            member.active = False
            self._sync(changes, connection, member)
            self._audit_member(
                changes,
                connection,
                member,
                "directory.user.removed",
                {"user_name": member.user_name},
            )
            self.session.delete(member)

    def list_groups(self, connection: DirectoryConnection) -> list[DirectoryGroup]:
        return list(
            self.session.scalars(
                select(DirectoryGroup)
                .where(DirectoryGroup.connection_id == connection.id)
                .order_by(DirectoryGroup.id)
            )
        )

    def group(self, connection: DirectoryConnection, scim_id: str) -> DirectoryGroup:
        found = self.session.scalar(
            select(DirectoryGroup).where(
                DirectoryGroup.connection_id == connection.id, DirectoryGroup.scim_id == scim_id
            )
        )
        if found is None:
            raise NotFound(f"No group {scim_id!r}")
        return found

    def members(self, groups: Iterable[DirectoryGroup]) -> dict[int, list[DirectoryUser]]:
        """Group id → its members."""
        return self._across_membership(
            [group.id for group in groups],
            DirectoryGroupMember.group_id,
            DirectoryUser,
            DirectoryGroupMember.member_id,
        )

    def _across_membership(
        self,
        ids: list[int],
        side: InstrumentedAttribute[int],
        other: type[_Member],
        other_side: InstrumentedAttribute[int],
    ) -> dict[int, list[_Member]]:
        """Each of ``ids`` (users or groups, named by the membership's ``side`` column)
        → the ``other`` rows it is linked to (groups or users), in id order: one query."""
        found: dict[int, list[_Member]] = {i: [] for i in ids}
        if ids:
            rows = self.session.execute(
                select(side, other)
                .join(other, other.id == other_side)
                .where(side.in_(ids))
                .order_by(other.id)
            )
            for owner, row in rows:
                found[owner].append(row)
        return found

    def create_group(
        self, actor: Actor, connection: DirectoryConnection, team: DirectoryTeam
    ) -> DirectoryGroup:
        self._require_unique_group(connection, team)
        with (
            self._raced(lambda: self._require_unique_group(connection, team)),
            self.uow.change(actor) as changes,
        ):
            group = DirectoryGroup(
                scim_id=uuid.uuid4().hex,
                connection_id=connection.id,
                display_name=team.display_name,
                display_name_key=team.display_name.strip().lower(),
                external_id=team.external_id,
                resource=team.resource,
                version=1,
            )
            self.session.add(group)
            self.session.flush()
            self._set_members(changes, connection, group, team.members)
        return group

    def replace_group(
        self,
        actor: Actor,
        connection: DirectoryConnection,
        scim_id: str,
        team: DirectoryTeam,
        expected_version: str | None = None,
    ) -> DirectoryGroup:
        group = self.group(connection, scim_id)
        self._require_version(group.version, expected_version)
        own = group.id
        self._require_unique_group(connection, team, own)
        with (
            self._raced(lambda: self._require_unique_group(connection, team, own)),
            self.uow.change(actor) as changes,
        ):
            renamed = group.display_name_key != team.display_name.strip().lower()
            group.display_name = team.display_name
            group.display_name_key = team.display_name.strip().lower()
            group.external_id = team.external_id
            group.resource = team.resource
            group.version += 1
            group.updated_at = utcnow()
            self.session.flush()
            self._set_members(changes, connection, group, team.members, resync_all=renamed)
        return group

    def delete_group(
        self,
        actor: Actor,
        connection: DirectoryConnection,
        scim_id: str,
        expected_version: str | None = None,
    ) -> None:
        group = self.group(connection, scim_id)
        self._require_version(group.version, expected_version)
        with self.uow.change(actor) as changes:
            self._set_members(changes, connection, group, [])
            self.session.delete(group)

    # -- the rules ------------------------------------------------------------------

    def _set_members(
        self,
        changes: ChangeSet,
        connection: DirectoryConnection,
        group: DirectoryGroup,
        member_ids: Sequence[str],
        resync_all: bool = False,
    ) -> None:
        """Make ``member_ids`` (SCIM ids of this connection's users) the group's members,
        and bring the roles of everyone who joined or left to what they now are."""
        wanted_ids = set(member_ids)
        wanted = (
            {
                m.id: m
                for m in self.session.scalars(
                    select(DirectoryUser).where(
                        DirectoryUser.connection_id == connection.id,
                        DirectoryUser.scim_id.in_(wanted_ids),
                    )
                )
            }
            if wanted_ids
            else {}
        )
        if len(wanted) != len(wanted_ids):
            known = {m.scim_id for m in wanted.values()}
            unknown = sorted(wanted_ids - known)
            raise InvalidInput(
                f"No user {unknown[0]!r} in this directory",
                errors={"members": [f"unknown user {u!r}" for u in unknown[:10]]},
                scim_type="invalidValue",
            )
        current = {
            m.id: m
            for m in self.session.scalars(
                select(DirectoryUser)
                .join(DirectoryGroupMember, DirectoryGroupMember.member_id == DirectoryUser.id)
                .where(DirectoryGroupMember.group_id == group.id)
            )
        }
        joined = set(wanted) - set(current)
        left = set(current) - set(wanted)
        if left:
            self.session.execute(
                delete(DirectoryGroupMember).where(
                    DirectoryGroupMember.group_id == group.id,
                    DirectoryGroupMember.member_id.in_(left),
                )
            )
        for member_id in sorted(joined):
            self.session.add(DirectoryGroupMember(group_id=group.id, member_id=member_id))
        self.session.flush()
        if joined or left:
            changes.audit(
                "directory.group.members_changed",
                AuditTarget.DIRECTORY_CONNECTION,
                connection.id,
                group.display_name,
                connection.workspace_slug,
                {"group": group.display_name, "left": sorted(current[i].user_name for i in left)},
                {
                    "group": group.display_name,
                    "joined": sorted(wanted[i].user_name for i in joined),
                },
            )
        touched = set(current) | set(wanted) if resync_all else joined | left
        everyone = {**current, **wanted}
        self._sync_many(changes, connection, [everyone[i] for i in sorted(touched)])

    def _sync_many(
        self, changes: ChangeSet, connection: DirectoryConnection, members: list[DirectoryUser]
    ) -> None:
        """:meth:`_sync` for many people (a group's members, a new mapping), reading
        what it needs for all of them at once and writing the new grants in one flush."""
        if not members:
            return
        accounts = [m.user_id for m in members if m.user_id is not None]
        for chunk in range(0, len(accounts), 500):  # their grants, in a few queries
            self.session.scalars(
                select(User)
                .where(User.id.in_(accounts[chunk : chunk + 500]))
                .options(selectinload(User.grants))
            ).all()
        marked = set(
            self.session.scalars(
                select(DirectoryGrant.grant_id).where(DirectoryGrant.connection_id == connection.id)
            )
        )
        groups = self.group_names_of(members)
        new: list[Grant] = []
        for member in members:
            names = [g.display_name_key for g in groups[member.id]]
            self._sync(changes, connection, member, marked, names, new)
        self._mark(connection, new)

    def _mark(self, connection: DirectoryConnection, new: list[Grant]) -> None:
        if new:
            self.session.flush()
            for grant in new:
                self.session.add(DirectoryGrant(grant_id=grant.id, connection_id=connection.id))

    def _desired_roles(
        self,
        connection: DirectoryConnection,
        member: DirectoryUser,
        names: list[str] | None = None,
    ) -> set[str]:
        if not member.active or connection.revoked_at is not None:
            return set()
        roles = {connection.default_role} if connection.default_role else set()
        if names is None:
            names = list(
                self.session.scalars(
                    select(DirectoryGroup.display_name_key)
                    .join(DirectoryGroupMember, DirectoryGroupMember.group_id == DirectoryGroup.id)
                    .where(DirectoryGroupMember.member_id == member.id)
                )
            )
        roles |= {connection.group_roles[n] for n in names if n in connection.group_roles}
        # A role the policy no longer defines is given to nobody.
        return roles & self.engine.roles_in(connection.workspace_slug)

    def _sync(
        self,
        changes: ChangeSet,
        connection: DirectoryConnection,
        member: DirectoryUser,
        marked: set[int] | None = None,
        names: list[str] | None = None,
        pending: list[Grant] | None = None,
    ) -> None:
        """Bring ``member``'s roles in the workspace to what the directory says: their
        derived roles while active; none at all (those granted by hand too) once
        deactivated or removed, with their sessions ended if no role is left anywhere.
        ``marked`` (the connection's grants), ``names`` (their groups) and ``pending``
        (where new grants wait to be marked) come from :meth:`_sync_many`."""
        user = member.user
        if user is None:  # no account yet: nothing to give or take
            return
        workspace = connection.workspace_slug
        here = [g for g in user.grants if g.workspace_slug == workspace]
        marked = (
            marked
            if marked is not None
            else set(
                self.session.scalars(
                    select(DirectoryGrant.grant_id).where(
                        DirectoryGrant.connection_id == connection.id,
                        DirectoryGrant.grant_id.in_([g.id for g in here]),
                    )
                )
            )
            if here
            else set()
        )
        given = {g.role: g for g in here if g.id in marked}
        by_hand = {g.role for g in here if g.id not in marked}
        desired = self._desired_roles(connection, member, names)
        taking: list[Grant] = [g for role, g in sorted(given.items()) if role not in desired]
        if not member.active:
            taking += [g for g in here if g.id not in marked]
        adding = sorted(desired - set(given) - by_hand)
        if not taking and not adding:
            return
        before = sorted(g.role for g in here)
        for grant in taking:
            self.users.protect_last_holder(user, grant.role, workspace, "take away")
        for grant in taking:
            remove_grant(changes, user, grant)
        new: list[Grant] = []
        for role in adding:
            add_grant(changes, user, workspace, role, None)
            new.append(user.grants[-1])
        if pending is not None:
            pending.extend(new)
        else:
            self._mark(connection, new)
        if not user.grants:
            user.session_version += 1  # no access left anywhere: every session ends
        changes.audit(
            "directory.roles_changed",
            AuditTarget.USER,
            user.id,
            user.name,
            workspace,
            {"roles": before},
            {"roles": sorted(g.role for g in user.grants if g.workspace_slug == workspace)},
        )

    def _users_of(self, connection: DirectoryConnection) -> list[DirectoryUser]:
        return list(
            self.session.scalars(
                select(DirectoryUser)
                .where(DirectoryUser.connection_id == connection.id)
                .order_by(DirectoryUser.id)
            )
        )

    def _require_unique_group(
        self, connection: DirectoryConnection, team: DirectoryTeam, own: int | None = None
    ) -> None:
        key = team.display_name.strip().lower()
        if not key:
            raise InvalidInput("A group needs a displayName", scim_type="invalidValue")
        found = self.session.scalar(
            select(DirectoryGroup.id).where(
                DirectoryGroup.connection_id == connection.id,
                DirectoryGroup.display_name_key == key,
            )
        )
        if found is not None and found != own:
            raise DirectoryConflict(f"displayName {team.display_name!r} is taken")

    @staticmethod
    def _email_of(person: DirectoryPerson) -> str | None:
        """The person's address (their primary email, else a userName that is one)."""
        for address in (person.email, person.user_name):
            if address and "@" in address.strip()[1:-1]:
                return normalise_email(address)
        return None

    def _require_allowed_domain(self, email: str, email_settings: Any) -> None:
        allowed = list(self.allowed_domains(email_settings))
        if allowed and email.rpartition("@")[2] not in allowed:
            raise InvalidInput(
                f"{email} is not a company address: accounts may be created only for "
                f"{', '.join('@' + d for d in allowed)}",
                errors={"emails": ["not in the allowed email domains"]},
                scim_type="invalidValue",
            )

    @staticmethod
    def _require_version(version: int, expected: str | None) -> None:
        if expected is not None and expected != etag(version):
            raise VersionMismatch(f"The resource is at version {etag(version)}")


def etag(version: int) -> str:
    """A resource's ``meta.version`` and ETag (weak: the JSON may be written differently)."""
    return f'W/"{version}"'


def _again_if_raced(attempt: Callable[[], DirectoryUser]) -> DirectoryUser:
    """``attempt`` (a creation or replacement of a directory user), once more if it met a
    uniqueness constraint that was no conflict (``_raced`` found none): the account with
    the person's email was made meanwhile (another workspace's directory, an invitation
    accepted), and the second attempt's read links it, as a moment later it would have."""
    try:
        return attempt()
    except IntegrityError:
        return attempt()
