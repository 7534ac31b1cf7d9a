"""Access reports for compliance: who is dormant, who is still invited, who administers,
who is outside the company domains, who reaches many workspaces, what grants changed.

Each report covers only the workspaces where the caller holds ``reviews:read`` (people
are listed through their grants or invitations there, and only those roles are shown);
with it everywhere, the whole installation, global grants (``*``) included.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from casbin.util import key_match
from sqlalchemy import ColumnElement, func, or_, select, true
from sqlalchemy.orm import Session, selectinload

from gateway.db.models import (
    AuditEvent,
    Grant,
    Invitation,
    InvitationGrant,
    InvitationStatus,
    User,
    UserStatus,
    Workspace,
    utcnow,
)
from gateway.engine.engine import DecisionEngine
from gateway.engine.rules import ALL_WORKSPACES
from gateway.errors import Forbidden, InvalidInput, NotFound
from gateway.services.base import Actor, Authorizer
from gateway.services.invitations import effective_status
from gateway.services.permissions import Permission
from gateway.services.settings import SettingsService

MAX_ROWS = 10_000
# Audit actions that change who holds which role.
GRANT_CHANGES = ("invitation.accepted", "user.removed")


@dataclass(frozen=True)
class ReportParams:
    days: int | None = None
    min_workspaces: int | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass
class Report:
    name: str
    description: str
    parameters: dict[str, Any]
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


class ReportService:
    def __init__(
        self,
        session: Session,
        authorizer: Authorizer,
        engine: DecisionEngine,
        settings: SettingsService,
    ) -> None:
        self.session = session
        self.authorizer = authorizer
        self.engine = engine
        self.settings = settings
        self._reports: dict[str, tuple[str, Callable[[set[str] | None, ReportParams], Report]]] = {
            "dormant-accounts": ("Active accounts without a sign-in for N days", self._dormant),
            "pending-invitations": (
                "Invitations still waiting after N days",
                self._pending_invitations,
            ),
            "admins": ("Everyone holding a role that may grant and revoke roles", self._admins),
            "outside-domains": (
                "Accounts with an address outside the company domains",
                self._outside_domains,
            ),
            "many-workspaces": ("People with access to N or more workspaces", self._many),
            "grants-changed": ("Grants added, removed or expired in a period", self._changed),
        }

    def names(self) -> list[str]:
        return sorted(self._reports)

    def catalogue(self) -> list[tuple[str, str]]:
        """(name, description) of every report, by name."""
        return [(name, self._reports[name][0]) for name in self.names()]

    def run(self, actor: Actor, name: str, params: ReportParams) -> Report:
        """Report ``name`` over the workspaces ``actor`` may review."""
        if name not in self._reports:
            raise NotFound(f"No report '{name}'", reports=self.names())
        readable = self.authorizer.workspaces_where(actor, Permission.REVIEWS_READ)
        if readable is not None and not readable:
            raise Forbidden(
                f"You need the permission '{Permission.REVIEWS_READ}' in some workspace",
                permission=str(Permission.REVIEWS_READ),
            )
        description, build = self._reports[name]
        report = build(readable, params)
        report.description = description
        if len(report.rows) > MAX_ROWS:
            report.rows, report.truncated = report.rows[:MAX_ROWS], True
        return report

    # -- helpers -------------------------------------------------------------------------

    @staticmethod
    def _grant_in(readable: set[str] | None) -> ColumnElement[bool]:
        return true() if readable is None else Grant.workspace_slug.in_(readable)

    def _visible_users(self, readable: set[str] | None) -> ColumnElement[bool]:
        if readable is None:
            return true()
        invited = select(Invitation.user_id).where(
            Invitation.status == InvitationStatus.PENDING,
            Invitation.grants.any(InvitationGrant.workspace_slug.in_(readable)),
            Invitation.user_id.is_not(None),
        )
        return or_(User.grants.any(Grant.workspace_slug.in_(readable)), User.id.in_(invited))

    @staticmethod
    def _roles(user: User, readable: set[str] | None) -> str:
        roles: dict[str, list[str]] = defaultdict(list)
        for grant in user.grants:
            if readable is None or grant.workspace_slug in readable:
                roles[grant.workspace_slug].append(grant.role)
        return "; ".join(f"{ws}: {', '.join(sorted(r))}" for ws, r in sorted(roles.items()))

    def _users(self, readable: set[str] | None, *where: Any) -> Sequence[User]:
        return self.session.scalars(
            select(User)
            .where(self._visible_users(readable), *where)
            .options(selectinload(User.grants))
            .order_by(User.email)
        ).all()

    @staticmethod
    def _days(params: ReportParams, default: int) -> int:
        return default if params.days is None else params.days

    # -- the reports -----------------------------------------------------------------------

    def _dormant(self, readable: set[str] | None, params: ReportParams) -> Report:
        days = self._days(params, 90)
        cutoff = utcnow() - timedelta(days=days)
        # Never signed in counts from the account's creation.
        users = self._users(
            readable,
            User.status == UserStatus.ACTIVE,
            func.coalesce(User.last_login_at, User.created_at) < cutoff,
        )
        report = Report(
            "dormant-accounts",
            "",
            {"days": days},
            ["user_id", "email", "name", "last_login_at", "last_seen_at", "created_at", "roles"],
        )
        report.rows = [
            {
                "user_id": u.id,
                "email": u.email,
                "name": u.name,
                "last_login_at": _iso(u.last_login_at),
                "last_seen_at": _iso(u.last_seen_at),
                "created_at": _iso(u.created_at),
                "roles": self._roles(u, readable),
            }
            for u in users
        ]
        return report

    def _pending_invitations(self, readable: set[str] | None, params: ReportParams) -> Report:
        days = self._days(params, 7)
        now = utcnow()
        query = (
            select(Invitation)
            .where(
                Invitation.status == InvitationStatus.PENDING,
                Invitation.expires_at > now,
                Invitation.created_at <= now - timedelta(days=days),
            )
            .options(selectinload(Invitation.grants))
            .order_by(Invitation.created_at)
        )
        if readable is not None:
            query = query.where(Invitation.grants.any(InvitationGrant.workspace_slug.in_(readable)))
        report = Report(
            "pending-invitations",
            "",
            {"days": days},
            [
                "invitation_id",
                "email",
                "name",
                "status",
                "created_at",
                "days_pending",
                "expires_at",
                "roles",
            ],
        )
        for inv in self.session.scalars(query):
            roles = sorted(
                f"{g.workspace_slug}: {g.role}"
                for g in inv.grants
                if readable is None or g.workspace_slug in readable
            )
            report.rows.append(
                {
                    "invitation_id": inv.id,
                    "email": inv.email,
                    "name": inv.name,
                    "status": str(effective_status(inv)),
                    "created_at": _iso(inv.created_at),
                    "days_pending": (now - inv.created_at).days,
                    "expires_at": _iso(inv.expires_at),
                    "roles": "; ".join(roles),
                }
            )
        return report

    def _is_admin_role(self, role: str, workspace: str) -> bool:
        write = Permission.ROLE_MANAGEMENT_WRITE
        return any(
            key_match(write.resource, resource) and key_match(write.action, action)
            for resource, action in self.engine.role_permissions(role, workspace)
        )

    def _admins(self, readable: set[str] | None, params: ReportParams) -> Report:
        grants = self.session.scalars(
            select(Grant)
            .join(User, User.id == Grant.user_id)
            .where(self._grant_in(readable))
            .options(selectinload(Grant.user))
            .order_by(Grant.workspace_slug, User.email, Grant.role)
        ).all()
        cache: dict[tuple[str, str], bool] = {}
        report = Report(
            "admins",
            "",
            {},
            [
                "user_id",
                "email",
                "name",
                "status",
                "workspace",
                "role",
                "granted_at",
                "expires_at",
            ],
        )
        for g in grants:
            key = (g.role, g.workspace_slug)
            if key not in cache:
                cache[key] = self._is_admin_role(*key)
            if cache[key]:
                report.rows.append(
                    {
                        "user_id": g.user_id,
                        "email": g.user.email,
                        "name": g.user.name,
                        "status": str(g.user.status),
                        "workspace": g.workspace_slug,
                        "role": g.role,
                        "granted_at": _iso(g.granted_at),
                        "expires_at": _iso(g.expires_at),
                    }
                )
        return report

    def _outside_domains(self, readable: set[str] | None, params: ReportParams) -> Report:
        allowed = sorted(self.settings.email().allowed_domains)
        report = Report(
            "outside-domains",
            "",
            {"allowed_domains": allowed},
            ["user_id", "email", "name", "status", "domain", "roles"],
        )
        if not allowed:  # no company domains configured: nobody is outside them
            return report
        for u in self._users(readable):
            domain = u.email.rpartition("@")[2].lower()
            if domain not in allowed:
                report.rows.append(
                    {
                        "user_id": u.id,
                        "email": u.email,
                        "name": u.name,
                        "status": str(u.status),
                        "domain": domain,
                        "roles": self._roles(u, readable),
                    }
                )
        return report

    def _many(self, readable: set[str] | None, params: ReportParams) -> Report:
        minimum = 3 if params.min_workspaces is None else params.min_workspaces
        every = self.session.scalar(select(func.count(Workspace.id))) or 0
        report = Report(
            "many-workspaces",
            "",
            {"min_workspaces": minimum},
            ["user_id", "email", "name", "status", "workspace_count", "workspaces"],
        )
        for u in self._users(readable, User.grants.any(self._grant_in(readable))):
            slugs = {
                g.workspace_slug
                for g in u.grants
                if readable is None or g.workspace_slug in readable
            }
            # A global grant reaches every workspace.
            count = every if ALL_WORKSPACES in slugs else len(slugs)
            if count >= minimum:
                report.rows.append(
                    {
                        "user_id": u.id,
                        "email": u.email,
                        "name": u.name,
                        "status": str(u.status),
                        "workspace_count": count,
                        "workspaces": ", ".join(sorted(slugs)),
                    }
                )
        report.rows.sort(key=lambda row: (-row["workspace_count"], row["email"]))
        return report

    def _changed(self, readable: set[str] | None, params: ReportParams) -> Report:
        until = params.until or utcnow()
        since = params.since or until - timedelta(days=30)
        if since >= until:
            raise InvalidInput("since must be before until", errors={"since": ["after until"]})
        query = select(AuditEvent).where(
            or_(
                AuditEvent.action.startswith("grant.", autoescape=True),
                AuditEvent.action.in_(GRANT_CHANGES),
            ),
            AuditEvent.at >= since,
            AuditEvent.at < until,
        )
        if readable is not None:
            query = query.where(AuditEvent.workspace.in_(readable))
        report = Report(
            "grants-changed",
            "",
            {"since": since.isoformat(), "until": until.isoformat()},
            [
                "at",
                "action",
                "actor",
                "target_type",
                "target_id",
                "target_name",
                "workspace",
                "roles_before",
                "roles_after",
                "revision",
            ],
        )
        for event in self.session.scalars(query.order_by(AuditEvent.id).limit(MAX_ROWS + 1)):
            report.rows.append(
                {
                    "at": _iso(event.at),
                    "action": event.action,
                    "actor": event.actor_name,
                    "target_type": event.target_type,  # a user, or the invitation accepted
                    "target_id": event.target_id,
                    "target_name": event.target_name,
                    "workspace": event.workspace,
                    "roles_before": _roles_of(event.before, event.workspace),
                    "roles_after": _roles_of(event.after, event.workspace),
                    "revision": event.revision,
                }
            )
        return report


def _roles_of(snapshot: dict[str, Any] | None, workspace: str | None) -> str:
    """The roles a grant event's snapshot records (a list, or per workspace)."""
    roles = (snapshot or {}).get("roles")
    if isinstance(roles, dict):
        roles = (
            roles.get(workspace or "", [])
            if workspace
            else sorted(f"{ws}: {r}" for ws, rs in roles.items() for r in rs)
        )
    return ", ".join(map(str, roles or []))
