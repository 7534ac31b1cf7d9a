"""Reading roles: their definitions in ``policies/`` (with the file each comes from), who
holds which role where, and what a change of someone's roles would give or take away.

Definitions are read-only here (``ringfence policy apply`` writes them); the permissions
a role gives are the engine's, so a preview says what decisions will actually change.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.db.models import CustomRole, Grant, User, Workspace
from gateway.engine.engine import DecisionEngine
from gateway.errors import Forbidden, NotFound
from gateway.policy.validation import PolicySet, RoleDefinition, load_policies
from gateway.services.base import Actor, Authorizer
from gateway.services.permissions import Permission

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


@dataclass(frozen=True)
class RolePreview:
    """What replacing someone's roles in one workspace would change."""

    workspace: str
    before: list[str]
    after: list[str]
    gained: list[str]  # catalogue permissions
    lost: list[str]

    @property
    def changed(self) -> bool:
        return self.before != self.after


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
        """Roles that may be granted in ``workspace``, sorted."""
        return sorted(self.engine.roles_in(workspace))

    def grantable(self, actor: Actor, workspace: str) -> list[tuple[str, bool]]:
        """The roles of ``workspace`` (:meth:`roles_in`), each with whether ``actor`` may
        grant it there (no escalation: :meth:`Authorizer.can_grant`)."""
        return [
            (role, self.authorizer.can_grant(actor, role, workspace))
            for role in self.roles_in(workspace)
        ]

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
        return RolePreview(
            workspace, sorted(before), sorted(after), sorted(new - old), sorted(old - new)
        )


def role_sources(policy: PolicySet) -> list[RoleDefinition]:
    return sorted(policy.roles.values(), key=lambda r: (r.source, r.name))
