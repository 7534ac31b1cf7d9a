"""Applying ``policies/`` to the database: role definitions become ``p`` rules and role
inheritance ``g`` rules; grants are left alone, and so are the workspaces' custom roles
(:mod:`gateway.services.custom_roles`), which live beside the files' roles: a file role
of the same name in the same workspace adopts a custom one (the file now defines it, its
grants stay), one anywhere else is a collision that ``apply`` refuses."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from gateway.db.models import (
    AuditEvent,
    CasbinRule,
    CustomRole,
    Grant,
    User,
    UserStatus,
    Workspace,
    utcnow,
)
from gateway.engine.rules import ROLE_PREFIX, GrantKey, Rule, is_policy_rule
from gateway.errors import Conflict
from gateway.policy.plan import Person
from gateway.policy.validation import PolicySet
from gateway.services.base import Actor, AuditTarget, UnitOfWork
from gateway.services.custom_roles import custom_role_rules, role_view


@dataclass(frozen=True)
class Collision:
    """A role of the files named like a custom role of a workspace."""

    role: str
    workspace: str  # the custom role's
    source: str  # the file defining the other
    adopts: bool  # the file's role is of that same workspace: it takes the custom one over

    def __str__(self) -> str:
        if self.adopts:
            return (
                f"custom role '{self.role}' of '{self.workspace}' is adopted by {self.source} "
                "(the file defines it from now on; its grants stay)"
            )
        return (
            f"role '{self.role}' of {self.source} collides with the custom role "
            f"'{self.role}' of '{self.workspace}': rename one of them (or give the file's "
            f"role 'workspace: {self.workspace}' to adopt the custom one)"
        )


def find_collisions(custom: Iterable[tuple[str, str]], policy: PolicySet) -> list[Collision]:
    """The roles of ``policy`` named like one of the ``custom`` (name, workspace) roles."""
    return [
        Collision(
            name, workspace, policy.roles[name].source, policy.roles[name].workspace == workspace
        )
        for name, workspace in sorted(set(custom), key=lambda pair: (pair[1], pair[0]))
        if name in policy.roles
    ]


def custom_roles_of(rules: Iterable[Rule]) -> set[tuple[str, str]]:
    """(name, workspace) of the custom roles whose permission rules are ``rules``."""
    return {
        (rule.values[0].removeprefix(ROLE_PREFIX), rule.values[1])
        for rule in rules
        if rule.ptype == "p"
    }


@dataclass(frozen=True)
class PolicyPlan:
    added: list[Rule]
    removed: list[Rule]
    orphaned_grants: list[str]  # grants whose role the new policy no longer defines
    collisions: list[Collision] = field(default_factory=list)
    # The installation-wide roles (scope: installation) applied before, and the new ones.
    installation_before: frozenset[str] = frozenset()
    installation_after: frozenset[str] = frozenset()

    @property
    def conflicts(self) -> list[Collision]:
        return [c for c in self.collisions if not c.adopts]

    @property
    def changed(self) -> bool:
        scopes = self.installation_before != self.installation_after
        return bool(self.added or self.removed or scopes)


GRANTS_BATCH = 20_000  # grants read at a time by live_grants


class PolicyService:
    def __init__(self, session: Session, uow: UnitOfWork) -> None:
        self.session = session
        self.uow = uow

    def custom_roles(self) -> list[CustomRole]:
        return list(
            self.session.scalars(
                select(CustomRole).order_by(CustomRole.workspace_slug, CustomRole.name)
            )
        )

    def custom_rules(self) -> set[Rule]:
        """The rules of the workspaces' custom roles: in force, but not the files'."""
        return {rule for role in self.custom_roles() for rule in custom_role_rules(role)}

    def current_rules(self) -> set[Rule]:
        """The applied rules of ``policies/`` (the custom roles' left out)."""
        return self._stored_policy_rules() - self.custom_rules()

    def _stored_policy_rules(self) -> set[Rule]:
        # The grants' rules are most of the table (millions at scale): left in the
        # database, not built as ORM objects only to be dropped (is_policy_rule stays the
        # definition; the filter only narrows what is read).
        policy_rows = or_(
            CasbinRule.ptype == "p",
            and_(CasbinRule.ptype == "g", CasbinRule.v0.startswith(ROLE_PREFIX, autoescape=True)),
        )
        rows = self.session.scalars(select(CasbinRule).where(policy_rows))
        return {rule for rule in map(CasbinRule.to_rule, rows) if is_policy_rule(rule)}

    def applied_installation_roles(self) -> frozenset[str]:
        """The installation-wide roles of the policy last applied, as its
        ``policy.applied`` event recorded them (none before roles had a scope)."""
        after = self.session.scalar(
            select(AuditEvent.after)
            .where(
                AuditEvent.target_type == AuditTarget.POLICY,
                AuditEvent.action == "policy.applied",
            )
            .order_by(AuditEvent.id.desc())
            .limit(1)
        )
        names = (after or {}).get("installation_roles") or []
        return frozenset(str(name) for name in names)

    def live_grants(self) -> tuple[list[GrantKey], dict[int, Person], list[str]]:
        """What ``policy plan`` computes on: every grant in force (an ended time-limited
        grant gives nothing, as in decisions), the people holding one (a deactivated one
        holds nothing) and the workspaces' slugs (pure reading)."""
        grants: list[GrantKey] = []
        people: dict[int, Person] = {}
        workspaces = list(self.session.scalars(select(Workspace.slug).order_by(Workspace.slug)))
        # In batches (a server-side cursor on PostgreSQL): the whole result fetched at
        # once sat in memory beside what is built from it, and the transaction stayed
        # idle while millions of objects were built, past the connection's
        # idle-in-transaction timeout (gateway.db.session) on a busy machine at 1M users.
        rows = self.session.execute(
            select(
                Grant.user_id, Grant.role, Grant.workspace_slug, User.email, User.name, User.status
            )
            .join(User, User.id == Grant.user_id)
            .where(or_(Grant.expires_at.is_(None), Grant.expires_at > utcnow()))
            .order_by(Grant.id)
            .execution_options(yield_per=GRANTS_BATCH)
        )
        for user_id, role, workspace, email, name, status in rows:
            grants.append(GrantKey(user_id, role, workspace))
            people[user_id] = Person(user_id, email, name, status == UserStatus.ACTIVE)
        return grants, people, workspaces

    def plan(self, policy: PolicySet) -> PolicyPlan:
        """What applying ``policy`` would change (pure reading)."""
        custom = self.custom_roles()
        collisions = find_collisions(((r.name, r.workspace_slug) for r in custom), policy)
        adopted = {(c.role, c.workspace) for c in collisions if c.adopts}
        current = self._stored_policy_rules() - {
            rule
            for role in custom
            if (role.name, role.workspace_slug) not in adopted
            for rule in custom_role_rules(role)
        }
        wanted = set(policy.rules())
        custom_names = {(role.workspace_slug, role.name) for role in custom}
        orphaned = [
            f"user {grant.user_id}: role '{grant.role}' in '{grant.workspace_slug}'"
            for grant in self.session.scalars(select(Grant).order_by(Grant.id))
            if grant.role not in policy.role_names(grant.workspace_slug)
            and (grant.workspace_slug, grant.role) not in custom_names
        ]
        return PolicyPlan(
            sorted(wanted - current),
            sorted(current - wanted),
            orphaned,
            collisions,
            self.applied_installation_roles(),
            policy.installation_roles(),
        )

    def apply(
        self, actor: Actor, policy: PolicySet, version: dict[str, Any] | None = None
    ) -> tuple[PolicyPlan, int | None]:
        """Write ``policy`` as rules in one change; the plan and the new revision (None
        when nothing changed, so running it again is a no-op). ``version`` (the policy
        files' hash and commit) is recorded on the audit event."""
        plan = self.plan(policy)
        if plan.conflicts:
            raise Conflict(
                "The policy files collide with custom roles: "
                + "; ".join(map(str, plan.conflicts)),
                collisions=[str(c) for c in plan.conflicts],
            )
        adopted = [c for c in plan.collisions if c.adopts]
        if not plan.changed and not adopted:
            return plan, None
        with self.uow.change(actor) as changes:
            for collision in adopted:
                role = self.session.scalar(
                    select(CustomRole).where(
                        CustomRole.workspace_slug == collision.workspace,
                        CustomRole.name == collision.role,
                    )
                )
                assert role is not None
                # Its rules are in plan.removed unless the file keeps them: only the row goes.
                self.session.delete(role)
                changes.audit(
                    "role.adopted",
                    AuditTarget.ROLE,
                    role.id,
                    role.name,
                    role.workspace_slug,
                    role_view(role),
                    {"source": collision.source},
                )
            for rule in plan.removed:
                changes.remove_rule(rule)
            for rule in plan.added:
                changes.add_rule(rule)
            changes.audit(
                "policy.applied",
                AuditTarget.POLICY,
                after={
                    "added": [str(r) for r in plan.added],
                    "removed": [str(r) for r in plan.removed],
                    "roles": sorted(policy.roles),
                    # What policy plan compares a change of scope with (none: before scopes).
                    "installation_roles": sorted(policy.installation_roles()),
                    "version": version,
                },
            )
        return plan, changes.revision
