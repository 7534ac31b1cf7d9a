"""Workspaces: each one is a Casbin domain, named by its immutable slug."""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from gateway.db.models import CustomRole, Grant, InvitationGrant, Workspace
from gateway.engine.engine import WorkspaceAdded, WorkspaceRemoved
from gateway.engine.rules import GrantKey, grant_rule
from gateway.errors import Conflict, NotFound
from gateway.services.base import Actor, AuditTarget, Authorizer, Page, UnitOfWork
from gateway.services.custom_roles import delete_custom_role
from gateway.services.permissions import Permission


def workspace_view(workspace: Workspace) -> dict[str, object]:
    return {"slug": workspace.slug, "name": workspace.name}


class WorkspaceService:
    def __init__(self, session: Session, uow: UnitOfWork, authorizer: Authorizer) -> None:
        self.session = session
        self.uow = uow
        self.authorizer = authorizer

    def create(self, actor: Actor, slug: str, name: str) -> Workspace:
        """Create workspace ``slug``; needs ``workspaces:create`` there."""
        self.authorizer.require(actor, Permission.WORKSPACES_CREATE, slug)
        if self.session.scalar(select(Workspace).where(Workspace.slug == slug)):
            raise Conflict(f"A workspace '{slug}' already exists")
        with self.uow.change(actor) as changes:
            workspace = Workspace(slug=slug, name=name)
            self.session.add(workspace)
            changes.engine(WorkspaceAdded(slug))
            changes.audit(
                "workspace.created",
                AuditTarget.WORKSPACE,
                slug,
                name,
                slug,
                after=workspace_view(workspace),
            )
        return workspace

    def list(self, actor: Actor, offset: int, limit: int) -> Page[Workspace]:
        """The workspaces ``actor`` may read, by slug."""
        readable = self.authorizer.workspaces_where(actor, Permission.WORKSPACES_READ)
        query = select(Workspace)
        if readable is not None:
            query = query.where(Workspace.slug.in_(readable))
        total = self.session.scalar(select(func.count()).select_from(query.subquery())) or 0
        items = self.session.scalars(
            query.order_by(Workspace.slug).offset(offset).limit(limit)
        ).all()
        return Page(items, total)

    def get(self, actor: Actor, slug: str) -> Workspace:
        """Workspace ``slug``; a workspace the actor may not read does not exist for them."""
        workspace = self.session.scalar(select(Workspace).where(Workspace.slug == slug))
        if workspace is None or not self.authorizer.can(actor, Permission.WORKSPACES_READ, slug):
            raise NotFound(f"No workspace '{slug}'")
        return workspace

    def rename(self, actor: Actor, slug: str, name: str) -> Workspace:
        """Change the display name; needs ``workspaces:update``."""
        workspace = self.get(actor, slug)
        self.authorizer.require(actor, Permission.WORKSPACES_UPDATE, slug)
        with self.uow.change(actor) as changes:
            before = workspace_view(workspace)
            workspace.name = name
            changes.audit(
                "workspace.renamed",
                AuditTarget.WORKSPACE,
                slug,
                name,
                slug,
                before,
                workspace_view(workspace),
            )
        return workspace

    def delete(self, actor: Actor, slug: str) -> int:
        """Delete the workspace with its grants and pending invitation roles; the revision."""
        workspace = self.get(actor, slug)
        self.authorizer.require(actor, Permission.WORKSPACES_DELETE, slug)
        with self.uow.change(actor) as changes:
            grants = self.session.scalars(select(Grant).where(Grant.workspace_slug == slug)).all()
            for grant in grants:
                changes.remove_rule(grant_rule(GrantKey(grant.user_id, grant.role, slug)))
                self.session.delete(grant)
            self.session.execute(
                delete(InvitationGrant).where(InvitationGrant.workspace_slug == slug)
            )
            custom = self.session.scalars(
                select(CustomRole).where(CustomRole.workspace_slug == slug)
            ).all()
            for role in custom:
                delete_custom_role(changes, role, "the workspace was deleted")
            self.session.flush()  # the roles before the workspace their key refers to
            self.session.delete(workspace)
            changes.engine(WorkspaceRemoved(slug))
            changes.audit(
                "workspace.deleted",
                AuditTarget.WORKSPACE,
                slug,
                workspace.name,
                slug,
                before={**workspace_view(workspace), "grants": len(grants)},
            )
        return changes.revision

    def require_exists(self, slug: str) -> None:
        if not self.session.scalar(select(Workspace.id).where(Workspace.slug == slug)):
            raise NotFound(f"No workspace '{slug}'", workspace=slug)
