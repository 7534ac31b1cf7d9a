"""What ``ringfence policy plan --gateway`` reads from a running gateway instead of its
database: the applied policy (the rules of ``policies/`` in force, as
:meth:`PolicyService.current_rules` reads them) and every grant in force with its holder,
in pages a cursor walks (stable while grants are added: a cursor is a grant id).

Both need ``role_management:read`` ("see roles and who holds them") and show only what
the caller may read roles of: the grants of the workspaces where they hold it, the
shared rules and those workspaces' own (their custom roles too); grants in every
workspace (``*``) and every workspace only to those who hold it everywhere. A plan made
with a workspace admin's token is therefore the plan of those workspaces.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from gateway.db.models import Grant, PolicyState, User, UserStatus, Workspace, utcnow
from gateway.engine.rules import ALL_WORKSPACES, Rule
from gateway.errors import Forbidden, InvalidInput
from gateway.services.base import Actor, Authorizer
from gateway.services.permissions import Permission
from gateway.services.policies import PolicyService

CURSOR_PREFIX = "grants1:"


@dataclass(frozen=True)
class AppliedPolicy:
    revision: int  # the policy state's revision when read
    everything: bool  # the caller reads every workspace (and grants in "*")
    workspaces: list[str]  # the workspaces the caller reads, sorted
    rules: list[Rule]  # the applied rules of policies/ for "*" and those workspaces, sorted
    custom_rules: list[Rule]  # the rules of those workspaces' custom roles, sorted
    installation_roles: list[str] = field(default_factory=list)  # scope: installation


@dataclass(frozen=True)
class LiveGrant:
    id: int
    user_id: int
    email: str
    name: str
    active: bool
    role: str
    workspace: str


@dataclass(frozen=True)
class GrantPage:
    items: list[LiveGrant]
    next_cursor: str | None  # None: this is the last page


def encode_cursor(grant_id: int) -> str:
    return base64.urlsafe_b64encode(f"{CURSOR_PREFIX}{grant_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        digits = raw.removeprefix(CURSOR_PREFIX)
        if raw.startswith(CURSOR_PREFIX) and digits.isascii() and digits.isdecimal():
            grant_id = int(digits)
            if grant_id <= 2**31:
                return grant_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise InvalidInput("The cursor is not valid; start again without one", errors={"cursor": []})


def rule_domain(rule: Rule) -> str:
    """The workspace (or ``*``) a policy rule is written for: a ``p`` rule's second
    value, a role inheritance's third."""
    position = 1 if rule.ptype == "p" else 2
    return rule.values[position] if len(rule.values) > position else ""


class PlanInputService:
    def __init__(self, session: Session, authorizer: Authorizer, policies: PolicyService) -> None:
        self.session = session
        self.authorizer = authorizer
        self.policies = policies

    def _readable(self, actor: Actor) -> set[str] | None:
        """Workspaces where ``actor`` reads roles (None: all, and grants in ``*``);
        Forbidden when there are none."""
        readable = self.authorizer.workspaces_where(actor, Permission.ROLE_MANAGEMENT_READ)
        if readable == set():
            raise Forbidden(
                f"You need the permission '{Permission.ROLE_MANAGEMENT_READ}'",
                permission=str(Permission.ROLE_MANAGEMENT_READ),
            )
        return readable

    def applied(self, actor: Actor) -> AppliedPolicy:
        """The applied policy as far as ``actor`` may read roles (pure reading)."""
        readable = self._readable(actor)
        revision = self.session.scalar(select(PolicyState.revision).where(PolicyState.id == 1))
        if readable is None:
            workspaces = list(self.session.scalars(select(Workspace.slug).order_by(Workspace.slug)))
        else:
            workspaces = sorted(readable)
        seen = {ALL_WORKSPACES, *workspaces}
        rules = sorted(r for r in self.policies.current_rules() if rule_domain(r) in seen)
        custom = sorted(r for r in self.policies.custom_rules() if rule_domain(r) in seen)
        return AppliedPolicy(
            int(revision or 0),
            readable is None,
            workspaces,
            rules,
            custom,
            sorted(self.policies.applied_installation_roles()),
        )

    def grants(self, actor: Actor, cursor: str | None, limit: int) -> GrantPage:
        """Up to ``limit`` grants in force (an ended time-limited grant gives nothing, as
        in decisions) that ``actor`` may read, by id, after ``cursor``."""
        readable = self._readable(actor)
        query = (
            select(
                Grant.id,
                Grant.user_id,
                User.email,
                User.name,
                User.status,
                Grant.role,
                Grant.workspace_slug,
            )
            .join(User, User.id == Grant.user_id)
            .where(or_(Grant.expires_at.is_(None), Grant.expires_at > utcnow()))
        )
        if readable is not None:
            query = query.where(Grant.workspace_slug.in_(readable))
        if cursor:
            query = query.where(Grant.id > decode_cursor(cursor))
        rows = self.session.execute(query.order_by(Grant.id).limit(limit + 1)).all()
        items = [
            LiveGrant(id_, user_id, email, name, status == UserStatus.ACTIVE, role, workspace)
            for id_, user_id, email, name, status, role, workspace in rows[:limit]
        ]
        more = len(rows) > limit
        return GrantPage(items, encode_cursor(items[-1].id) if more and items else None)
