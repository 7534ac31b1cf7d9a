"""Reading roles: their definitions in ``policies/`` (with the file each comes from), who
holds which role where, and what a change of someone's roles would give or take away.

Definitions are read-only here (``ringfence policy apply`` writes them); the permissions
a role gives are the engine's, so a preview says what decisions will actually change.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.db.models import CustomRole, Grant, User, Workspace
from gateway.engine.engine import DecisionEngine
from gateway.errors import Forbidden, NotFound
from gateway.policy.validation import (
    SCOPE_INSTALLATION,
    SCOPE_WORKSPACE,
    PolicySet,
    RoleDefinition,
    current_policy,
    installation_roles,
    load_policies,
)
from gateway.services.base import Actor, Authorizer
from gateway.services.permissions import ADMINISTRATIVE, Permission

WILDCARD = "*"


@dataclass(frozen=True)
class RoleHolder:
    user_id: int
    name: str
    email: str
    workspace: str
    role: str


@dataclass(frozen=True)
class RoleInfo:
    """A role that may be granted in a workspace, as ``GET /roles`` shows it.

    ``workspace`` is None for a role shared by every workspace; ``source`` is the policy
    file that defines it: None for a custom role (``custom``, defined by the workspace's
    admins: :mod:`gateway.services.custom_roles`), and None with no description or
    permissions for a role whose rules are applied but whose file is gone (``ringfence
    policy apply`` removes it).
    """

    name: str
    description: str | None
    workspace: str | None
    source: str | None
    inherits: list[str]
    permissions: list[str]  # as written in the file (wildcards, ``:own``)
    effective_permissions: list[str]  # catalogue permissions, inherited and expanded
    custom: bool = False
    scope: str = SCOPE_WORKSPACE  # "installation": granted only in every workspace (*)


@dataclass(frozen=True)
class RoleChoice:
    """A role a form offers in one workspace: its description, and whether the actor may
    give (or take) it there."""

    name: str
    description: str | None
    grantable: bool


@dataclass(frozen=True)
class RolePreview:
    """What replacing someone's roles in one workspace would change."""

    workspace: str
    before: list[str]
    after: list[str]
    gained: list[str]  # catalogue permissions
    lost: list[str]
    # What the administrative permissions gained let them do, in plain words (empty: the
    # change gives no admin rights): see gateway.services.permissions.ADMINISTRATIVE.
    powers: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.before != self.after

    @property
    def warning(self) -> str | None:
        """The plain-words warning a powerful change comes with, or None."""
        if not self.powers:
            return None
        where = "every workspace" if self.workspace == WILDCARD else self.workspace
        return f"Gives admin rights in {where}: they can {', '.join(self.powers)}."


@dataclass(frozen=True)
class RoleEntry:
    """One role of ``policies/`` as the Roles page shows it."""

    definition: RoleDefinition
    permissions: list[str]  # effective, catalogue permissions
    holders: list[RoleHolder]


@dataclass(frozen=True)
class RoleGroup:
    """Roles of one kind: installation-wide, shared by every workspace, or one
    workspace's own."""

    key: str
    title: str
    roles: list[RoleEntry]


def require_visible_workspace(
    session: Session, authorizer: Authorizer, actor: Actor, workspace: str
) -> None:
    """NotFound unless ``workspace`` exists and ``actor`` may see it (read it, or read its
    roles): one that does not exist and one they may not see are the same 404, so
    another workspace's admin learns nothing."""
    exists = session.scalar(select(Workspace.id).where(Workspace.slug == workspace))
    visible = authorizer.can(actor, Permission.WORKSPACES_READ, workspace) or authorizer.can(
        actor, Permission.ROLE_MANAGEMENT_READ, workspace
    )
    if exists is None or not visible:
        raise NotFound(f"No workspace '{workspace}'")


def expand(pairs: Iterable[tuple[str, str]], catalogue: Iterable[str]) -> set[str]:
    """Catalogue permissions covered by (resource, action) pairs, wildcards included."""
    held = set(pairs)
    covered = set()
    for permission in catalogue:
        resource, _, action = permission.partition(":")
        if {(resource, action), (resource, WILDCARD), (WILDCARD, WILDCARD)} & held:
            covered.add(permission)
    return covered


class RoleService:
    def __init__(
        self, session: Session, authorizer: Authorizer, engine: DecisionEngine, policies_dir: Path
    ) -> None:
        self.session = session
        self.authorizer = authorizer
        self.engine = engine
        self.policies_dir = policies_dir

    def definitions(self, actor: Actor) -> PolicySet:
        """The roles and permission catalogue of ``policies/``, for anyone who may read
        roles (``role_management:read``) in some workspace."""
        if self.authorizer.workspaces_where(actor, Permission.ROLE_MANAGEMENT_READ) == set():
            raise Forbidden(f"You need the permission '{Permission.ROLE_MANAGEMENT_READ}'")
        return load_policies(self.policies_dir)

    def catalogue(self, actor: Actor) -> dict[str, str]:
        """The permission catalogue (name -> description), for anyone who may read roles
        in some workspace; it is the installation's, the same in every workspace."""
        return dict(self.definitions(actor).permissions)

    def in_workspace(self, actor: Actor, workspace: str) -> list[RoleInfo]:
        """The roles that may be granted in ``workspace`` (exactly what a grant there
        accepts: :meth:`roles_in`), with their definitions; for those who may read roles
        there. ``*`` lists the shared roles, for those who may read roles everywhere.

        A workspace that does not exist and one the actor may not see are the same
        404 (another workspace's admin learns nothing); one they see but may not read
        the roles of is a 403."""
        if workspace != WILDCARD:
            require_visible_workspace(self.session, self.authorizer, actor, workspace)
        self.authorizer.require(actor, Permission.ROLE_MANAGEMENT_READ, workspace)
        policy = load_policies(self.policies_dir)
        custom = {
            role.name: role
            for role in self.session.scalars(
                select(CustomRole).where(CustomRole.workspace_slug == workspace)
            )
        }
        roles = []
        for name in self.roles_in(workspace):
            definition = policy.roles.get(name)
            own = custom.get(name)
            if definition is None and own is not None:
                permissions = list(own.permissions)
                roles.append(
                    RoleInfo(
                        name, own.description, workspace, None, [], permissions, permissions, True
                    )
                )
                continue
            if definition is None:
                roles.append(RoleInfo(name, None, None, None, [], [], []))
                continue
            roles.append(
                RoleInfo(
                    name=name,
                    description=definition.description,
                    workspace=definition.workspace,
                    source=definition.source,
                    inherits=list(definition.inherits),
                    permissions=list(definition.permissions),
                    effective_permissions=sorted(policy.effective_permissions(name)),
                    scope=definition.scope,
                )
            )
        return roles

    def holders(self, actor: Actor) -> list[RoleHolder]:
        """Who holds which role where, in the workspaces ``actor`` may read roles of
        (grants for every workspace, ``*``, only for those who may read them all)."""
        readable = self.authorizer.workspaces_where(actor, Permission.ROLE_MANAGEMENT_READ)
        query = select(Grant, User).join(User, User.id == Grant.user_id)
        if readable is not None:
            query = query.where(Grant.workspace_slug.in_(readable))
        rows = self.session.execute(
            query.order_by(Grant.role, Grant.workspace_slug, User.email)
        ).all()
        return [
            RoleHolder(user.id, user.name, user.email, grant.workspace_slug, grant.role)
            for grant, user in rows
        ]

    def roles_in(self, workspace: str) -> list[str]:
        """Roles that may be granted in ``workspace``, sorted: those whose rules hold
        there, but an installation-wide one (``scope: installation``) only in ``*``
        (what :meth:`GrantService.require_grantable_here` accepts)."""
        roles = self.engine.roles_in(workspace)
        if workspace != WILDCARD:
            roles -= installation_roles(self.policies_dir)
        return sorted(roles)

    def grantable(self, actor: Actor, workspace: str) -> list[tuple[str, bool]]:
        """The roles of ``workspace`` (:meth:`roles_in`), each with whether ``actor`` may
        grant it there (no escalation: :meth:`Authorizer.can_grant`)."""
        return [
            (role, self.authorizer.can_grant(actor, role, workspace))
            for role in self.roles_in(workspace)
        ]

    def choices(self, actor: Actor, workspace: str) -> list[RoleChoice]:
        """:meth:`grantable` with each role's description (of ``policies/``, or of the
        workspace's custom role): what the invite form and the roles panel offer."""
        policy = current_policy(self.policies_dir)
        custom = dict(
            self.session.execute(
                select(CustomRole.name, CustomRole.description).where(
                    CustomRole.workspace_slug == workspace
                )
            ).all()
        )
        choices = []
        for role, allowed in self.grantable(actor, workspace):
            definition = policy.roles.get(role) if policy is not None else None
            description = definition.description if definition else custom.get(role)
            choices.append(RoleChoice(role, description, allowed))
        return choices

    def permissions_of(
        self, roles: Sequence[str], workspace: str, catalogue: Iterable[str]
    ) -> set[str]:
        pairs: set[tuple[str, str]] = set()
        for role in roles:
            pairs |= self.engine.role_permissions(role, workspace)
        return expand(pairs, catalogue)

    def preview(
        self, actor: Actor, workspace: str, before: Sequence[str], after: Sequence[str]
    ) -> RolePreview:
        """The permissions someone would gain and lose in ``workspace`` going from roles
        ``before`` to ``after``; for those who may change roles there."""
        self.authorizer.require(actor, Permission.ROLE_MANAGEMENT_WRITE, workspace)
        catalogue = load_policies(self.policies_dir).permissions
        old = self.permissions_of(before, workspace, catalogue)
        new = self.permissions_of(after, workspace, catalogue)
        gained = new - old
        return RolePreview(
            workspace,
            sorted(before),
            sorted(after),
            sorted(gained),
            sorted(old - new),
            [words for permission, words in ADMINISTRATIVE.items() if permission in gained],
        )

    def browse(self, actor: Actor, search: str = "") -> list[RoleGroup]:
        """The roles of ``policies/`` for the Roles page, grouped: installation-wide, shared
        by every workspace, then each workspace's own; with ``search``, only those whose
        name, description or one of whose permissions contains it (any case). For those
        who may read roles somewhere (:meth:`definitions`); holders as :meth:`holders`."""
        policy = self.definitions(actor)
        held: dict[str, list[RoleHolder]] = {}
        for holder in self.holders(actor):
            held.setdefault(holder.role, []).append(holder)
        needle = search.strip().casefold()
        groups: dict[str, RoleGroup] = {}
        for role in sorted(policy.roles.values(), key=lambda r: r.name):
            permissions = sorted(policy.effective_permissions(role.name))
            haystack = [role.name, role.description, *role.permissions, *permissions]
            if needle and not any(needle in text.casefold() for text in haystack):
                continue
            if role.scope == SCOPE_INSTALLATION:
                key, title = "installation", "Installation-wide (granted in every workspace only)"
            elif role.workspace is None:
                key, title = "shared", "Shared by every workspace"
            else:
                key, title = f"workspace-{role.workspace}", f"Only in workspace {role.workspace}"
            group = groups.setdefault(key, RoleGroup(key, title, []))
            group.roles.append(RoleEntry(role, permissions, held.get(role.name, [])))
        order = {"installation": "0", "shared": "1"}
        return [groups[key] for key in sorted(groups, key=lambda k: order.get(k, "2" + k))]
