"""Applying ``policies/`` to the database: role definitions become ``p`` rules and role
inheritance ``g`` rules; grants are left alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.models import CasbinRule, Grant
from gateway.policy import PolicySet
from gateway.rules import Rule, is_policy_rule
from gateway.services.base import Actor, UnitOfWork


@dataclass(frozen=True)
class PolicyPlan:
    added: list[Rule]
    removed: list[Rule]
    orphaned_grants: list[str]  # grants whose role the new policy no longer defines

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


class PolicyService:
    def __init__(self, session: Session, uow: UnitOfWork) -> None:
        self.session = session
        self.uow = uow

    def current_rules(self) -> set[Rule]:
        rules = (row.to_rule() for row in self.session.scalars(select(CasbinRule)))
        return {rule for rule in rules if is_policy_rule(rule)}

    def plan(self, policy: PolicySet) -> PolicyPlan:
        """What applying ``policy`` would change (pure reading)."""
        current = self.current_rules()
        wanted = set(policy.rules())
        orphaned = [
            f"user {grant.user_id}: role '{grant.role}' in '{grant.workspace_slug}'"
            for grant in self.session.scalars(select(Grant).order_by(Grant.id))
            if grant.role not in policy.role_names(grant.workspace_slug)
        ]
        return PolicyPlan(sorted(wanted - current), sorted(current - wanted), orphaned)

    def apply(
        self, actor: Actor, policy: PolicySet, version: dict[str, Any] | None = None
    ) -> tuple[PolicyPlan, int | None]:
        """Write ``policy`` as rules in one change; the plan and the new revision (None
        when nothing changed, so running it again is a no-op). ``version`` (the policy
        files' hash and commit) is recorded on the audit event."""
        plan = self.plan(policy)
        if not plan.changed:
            return plan, None
        with self.uow.change(actor) as changes:
            for rule in plan.removed:
                changes.remove_rule(rule)
            for rule in plan.added:
                changes.add_rule(rule)
            changes.audit(
                "policy.applied",
                "policy",
                after={
                    "added": [str(r) for r in plan.added],
                    "removed": [str(r) for r in plan.removed],
                    "roles": sorted(policy.roles),
                    "version": version,
                },
            )
        return plan, changes.revision
