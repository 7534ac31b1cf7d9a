"""First run and health: the first super admin, and ``doctor`` (grants vs. rules)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.db.models import CasbinRule, Grant, User, UserStatus
from gateway.emails import normalise_email
from gateway.engine.engine import SubjectChanged
from gateway.engine.rules import ALL_WORKSPACES, GrantKey, grant_rule, rule_to_grant
from gateway.errors import Conflict
from gateway.identity.security import hash_password
from gateway.services.base import SYSTEM, AuditTarget, UnitOfWork
from gateway.services.grants import add_grant
from gateway.services.users import SUPERADMIN_ROLE, account_by_email


@dataclass(frozen=True)
class CreatedAdmin:
    user: User
    password: str


class SetupService:
    def __init__(self, session: Session, uow: UnitOfWork, password_hash_profile: str) -> None:
        self.session = session
        self.uow = uow
        self.password_hash_profile = password_hash_profile

    def superadmin_count(self) -> int:
        return (
            self.session.scalar(
                select(func.count(Grant.id)).where(
                    Grant.role == SUPERADMIN_ROLE, Grant.workspace_slug == ALL_WORKSPACES
                )
            )
            or 0
        )

    def create_superadmin(self, email: str, name: str, password: str | None = None) -> CreatedAdmin:
        """An active user holding ``superadmin`` in every workspace. Without a password,
        a random one is generated: there is never a built-in default."""
        email = normalise_email(email)
        if account_by_email(self.session, email):
            raise Conflict(f"{email} already has an account")
        password = password or secrets.token_urlsafe(18)
        with self.uow.change(SYSTEM) as changes:
            user = User(
                email=email,
                name=name,
                status=UserStatus.ACTIVE,
                password_hash=hash_password(password, self.password_hash_profile),
            )
            self.session.add(user)
            self.session.flush()
            add_grant(changes, user, ALL_WORKSPACES, SUPERADMIN_ROLE, None)
            changes.engine(SubjectChanged(user.id, user.email, active=True))
            changes.audit(
                "user.created",
                AuditTarget.USER,
                user.id,
                name,
                None,
                after={"email": email, "status": "active", "roles": {"*": [SUPERADMIN_ROLE]}},
            )
        return CreatedAdmin(user, password)

    def doctor(self) -> list[str]:
        """Every disagreement between the grants table and the ``g`` rules; empty if none."""
        grants = {
            GrantKey(g.user_id, g.role, g.workspace_slug)
            for g in self.session.scalars(select(Grant))
        }
        rules = [row.to_rule() for row in self.session.scalars(select(CasbinRule))]
        ruled: set[GrantKey] = set()
        problems: list[str] = []
        for rule in rules:
            grant = rule_to_grant(rule)
            if grant is None:
                continue
            if grant in ruled:
                problems.append(f"duplicate rule: {rule}")
            ruled.add(grant)
        problems += [f"grant without its rule: {grant_rule(g)}" for g in sorted(grants - ruled)]
        problems += [f"rule without its grant: {grant_rule(g)}" for g in sorted(ruled - grants)]
        return problems
