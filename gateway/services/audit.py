"""Reading the audit trail (events are written by the unit of work of each change)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from gateway.models import AuditEvent
from gateway.permissions import Permission
from gateway.services.base import Actor, Authorizer, Page


@dataclass(frozen=True)
class AuditFilter:
    actor_id: int | None = None
    target_type: str | None = None
    target_id: str | None = None
    workspace: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class AuditService:
    def __init__(self, session: Session, authorizer: Authorizer) -> None:
        self.session = session
        self.authorizer = authorizer

    def list(self, actor: Actor, where: AuditFilter, offset: int, limit: int) -> Page[AuditEvent]:
        """Events matching ``where`` in the workspaces ``actor`` may audit, newest first."""
        query = select(AuditEvent)
        readable = self.authorizer.workspaces_where(actor, Permission.AUDIT_READ)
        if readable is not None:
            # Events outside any workspace (logins, policy applies) need global audit:read.
            query = query.where(AuditEvent.workspace.in_(readable))
        if where.actor_id is not None:
            query = query.where(AuditEvent.actor_id == where.actor_id)
        if where.target_type:
            query = query.where(AuditEvent.target_type == where.target_type)
        if where.target_id:
            query = query.where(AuditEvent.target_id == where.target_id)
        if where.workspace:
            query = query.where(AuditEvent.workspace == where.workspace)
        if where.action:
            # "user" matches user.deactivated, user.removed, ...
            query = query.where(
                or_(
                    AuditEvent.action == where.action,
                    AuditEvent.action.startswith(f"{where.action}.", autoescape=True),
                )
            )
        if where.since:
            query = query.where(AuditEvent.at >= where.since)
        if where.until:
            query = query.where(AuditEvent.at < where.until)
        total = self.session.scalar(select(func.count()).select_from(query.subquery())) or 0
        items = self.session.scalars(
            query.order_by(AuditEvent.id.desc()).offset(offset).limit(limit)
        ).all()
        return Page(items, total)
