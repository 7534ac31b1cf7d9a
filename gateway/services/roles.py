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

from gateway.engine import DecisionEngine
from gateway.errors import Forbidden
from gateway.models import Grant, User
from gateway.permissions import Permission
from gateway.policy import PolicySet, RoleDefinition, load_policies
from gateway.services.base import Actor, Authorizer

WILDCARD = "*"


@dataclass(frozen=True)
class RoleHolder:
    user_id: int
    name: str
    email: str
    workspace: str
    role: str


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
