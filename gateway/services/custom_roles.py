"""Custom roles: roles a workspace's admins define for that workspace alone.

A custom role is a name, a description and catalogue permissions; its permissions are
``p`` rules in the workspace's domain (exactly like a workspace-specific role of
``policies/``), written with the row in one change, so it takes effect at once and can
be granted like any other role. The walls are the grants' walls:

- defining needs ``role_management:define`` in the workspace, and a role may only hold
  permissions its author holds there (no escalation; ``:own`` ones when the author may
  do it at least on their own resources);
- changing or deleting one needs the same right as granting it as it is now (nobody
  strips or widens a role they could not have given);
- its name is never one of the roles of ``policies/``, so a file role and a custom role
  never merge (``ringfence policy apply`` refuses files that would make them collide,
  except a role of that same workspace, which adopts the custom one: see
  :mod:`gateway.services.policies`);
- permissions that only mean something installation-wide (creating workspaces, the
  services' OAuth clients) are not offered: in one workspace's domain they give nothing.

``RINGFENCE_CUSTOM_ROLES=false`` keeps roles in git only: nobody defines or widens one;
existing ones stay readable, deletable and in force.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.db.models import CustomRole, Grant, InvitationGrant, utcnow
from gateway.engine.engine import DecisionEngine
from gateway.engine.rules import ALL_WORKSPACES, OWN_SUFFIX, Rule, permission_rule
from gateway.errors import Conflict, Forbidden, InvalidInput, NotFound
from gateway.policy.validation import ROLE_NAME, PolicySet, load_policies
from gateway.services.base import Actor, AuditTarget, Authorizer, ChangeSet, UnitOfWork
from gateway.services.permissions import INSTALLATION_WIDE, Permission
from gateway.services.roles import require_visible_workspace

MAX_DESCRIPTION = 500


@dataclass(frozen=True)
class CustomRoleDraft:
    """What an admin asks for: validated by :meth:`CustomRoleService.create` / ``update``."""

    name: str
    description: str
    permissions: Sequence[str]


def custom_role_rules(role: CustomRole) -> set[Rule]:
    return rules_for(role.name, role.permissions, role.workspace_slug)


def rules_for(name: str, permissions: Iterable[str], workspace: str) -> set[Rule]:
    return {permission_rule(name, permission, workspace) for permission in permissions}


def role_view(role: CustomRole) -> dict[str, object]:
    """What the audit trail records of a custom role."""
    return {"description": role.description, "permissions": list(role.permissions)}


class CustomRoleService:
    def __init__(
        self,
        session: Session,
        uow: UnitOfWork,
        authorizer: Authorizer,
        engine: DecisionEngine,
        policies_dir: Path,
        enabled: bool,
    ) -> None:
        self.session = session
        self.uow = uow
        self.authorizer = authorizer
        self.engine = engine
        self.policies_dir = policies_dir
        self.enabled = enabled

    @cached_property
    def _policy_files(self) -> PolicySet:
        """policies/, read once per service (one request): creating a role needs both
        its role names and its permission catalogue."""
        return load_policies(self.policies_dir)

    # -- reading ---------------------------------------------------------------------------

    def in_workspace(self, actor: Actor, workspace: str) -> list[CustomRole]:
        """The custom roles of ``workspace``, by name; for those who may read its roles."""
        self._visible_workspace(actor, workspace)
        self.authorizer.require(actor, Permission.ROLE_MANAGEMENT_READ, workspace)
        return list(
            self.session.scalars(
                select(CustomRole)
                .where(CustomRole.workspace_slug == workspace)
                .order_by(CustomRole.name)
            )
        )

    def get(self, actor: Actor, workspace: str, name: str) -> CustomRole:
        self._visible_workspace(actor, workspace)
        self.authorizer.require(actor, Permission.ROLE_MANAGEMENT_READ, workspace)
        return self._role(workspace, name)

    def definable(self, actor: Actor, workspace: str) -> list[tuple[str, str, bool]]:
        """The permissions a custom role of ``workspace`` may hold (name, description),
        each with whether ``actor`` holds it there (only those may go in)."""
        catalogue = self._policy_files.permissions
        return [
            (name, text, self._holds(actor, workspace, name))
            for name, text in sorted(catalogue.items())
            if name not in INSTALLATION_WIDE
        ]

    # -- changing --------------------------------------------------------------------------

    def create(
        self, actor: Actor, workspace: str, draft: CustomRoleDraft
    ) -> tuple[CustomRole, int]:
        """Define a role in ``workspace``; the role and the new revision."""
        self._may_define(actor, workspace)
        permissions = self._valid_permissions(actor, workspace, draft.permissions)
        description = _valid_description(draft.description)
        name = self._free_name(workspace, draft.name)
        role = CustomRole(
            workspace_slug=workspace,
            name=name,
            description=description,
            permissions=permissions,
            created_by_id=actor.user_id,
        )
        try:
            with self.uow.change(actor) as changes:
                self.session.add(role)
                self.session.flush()  # its id names it in the audit trail
                for rule in sorted(custom_role_rules(role)):
                    changes.add_rule(rule)
                _audit(changes, "role.created", role, after=role_view(role))
        except IntegrityError as exc:  # the same name, defined at the same moment
            raise Conflict(
                f"'{name}' is already a role in '{workspace}'", errors={"name": ["already a role"]}
            ) from exc
        return role, changes.revision

    def update(
        self, actor: Actor, workspace: str, name: str, description: str, permissions: Sequence[str]
    ) -> tuple[CustomRole, int]:
        """Change a custom role's description and permissions (its holders gain and lose
        them at once); the role and the new revision (unchanged: the current one)."""
        self._may_define(actor, workspace)
        role = self._role(workspace, name)
        # Changing a role is granting what it becomes and taking what it was.
        self.authorizer.require_can_grant(actor, role.name, workspace, verb="change")
        wanted = self._valid_permissions(actor, workspace, permissions)
        description = _valid_description(description)
        if wanted == role.permissions and description == role.description:
            return role, self.engine.revision
        before = role_view(role)
        old_rules = custom_role_rules(role)
        new_rules = rules_for(role.name, wanted, workspace)
        with self.uow.change(actor) as changes:
            role.permissions = wanted
            role.description = description
            role.updated_at = utcnow()
            for rule in sorted(old_rules - new_rules):
                changes.remove_rule(rule)
            for rule in sorted(new_rules - old_rules):
                changes.add_rule(rule)
            _audit(changes, "role.updated", role, before=before, after=role_view(role))
        return role, changes.revision

    def delete(self, actor: Actor, workspace: str, name: str) -> int:
        """Delete a custom role nobody holds (nor is invited to); the new revision."""
        self._visible_workspace(actor, workspace)
        self.authorizer.require(actor, Permission.ROLE_MANAGEMENT_DEFINE, workspace)
        role = self._role(workspace, name)
        self.authorizer.require_can_grant(actor, role.name, workspace, verb="delete")
        held = self._holders(workspace, role.name)
        invited = self.session.scalar(
            select(func.count())
            .select_from(InvitationGrant)
            .where(InvitationGrant.workspace_slug == workspace, InvitationGrant.role == role.name)
        )
        if held or invited:
            raise Conflict(
                f"Role '{name}' is still held by {held} people and offered by {invited} "
                f"pending invitations in '{workspace}'; take it away from them first",
                holders=held,
                invitations=invited,
            )
        with self.uow.change(actor) as changes:
            delete_custom_role(changes, role)
        return changes.revision

    # -- checks ----------------------------------------------------------------------------

    def _visible_workspace(self, actor: Actor, workspace: str) -> None:
        """A workspace that does not exist and one the actor may not see are the same 404
        (another workspace's admin learns nothing); ``*`` has no custom roles."""
        if workspace == ALL_WORKSPACES:
            raise InvalidInput(
                "Custom roles belong to one workspace; '*' has none (shared roles come from "
                "policies/)",
                errors={"workspace": ["must be a workspace slug, not '*'"]},
            )
        require_visible_workspace(self.session, self.authorizer, actor, workspace)

    def _may_define(self, actor: Actor, workspace: str) -> None:
        self._visible_workspace(actor, workspace)
        self.authorizer.require(actor, Permission.ROLE_MANAGEMENT_DEFINE, workspace)
        if not self.enabled:
            raise Forbidden(
                "Custom roles are turned off in this installation (RINGFENCE_CUSTOM_ROLES="
                "false): roles come from policies/ only"
            )

    def _role(self, workspace: str, name: str) -> CustomRole:
        role = self.session.scalar(
            select(CustomRole).where(
                CustomRole.workspace_slug == workspace, CustomRole.name == name
            )
        )
        if role is None:
            raise NotFound(f"No custom role '{name}' in '{workspace}'")
        return role

    def _free_name(self, workspace: str, name: str) -> str:
        if not isinstance(name, str) or len(name) > 63 or not ROLE_NAME.fullmatch(name):
            raise InvalidInput(
                f"Role name {name!r} must start with a lowercase letter and hold only "
                "lowercase letters, digits, '_' and '-' (at most 63)",
                errors={"name": ["lowercase letters, digits, '_' or '-', from a letter"]},
            )
        if name in self._policy_files.roles or name in self.engine.roles_in(workspace):
            raise Conflict(
                f"'{name}' is already a role in '{workspace}' (defined in policies/ or here)",
                errors={"name": ["already a role"]},
            )
        return name

    def _valid_permissions(
        self, actor: Actor, workspace: str, permissions: Sequence[str]
    ) -> list[str]:
        catalogue = self._policy_files.permissions
        wanted = sorted(set(permissions))
        if not wanted:
            raise InvalidInput(
                "A role needs at least one permission",
                errors={"permissions": ["at least one permission"]},
            )
        unknown = [p for p in wanted if _base(p) not in catalogue or _base(p) in INSTALLATION_WIDE]
        if unknown:
            raise InvalidInput(
                f"Not permissions a workspace role may hold: {', '.join(unknown)} (see GET "
                "/permissions; installation-wide ones and wildcards are not offered)",
                errors={"permissions": [f"'{p}' is not offered" for p in unknown]},
            )
        missing = [p for p in wanted if not self._holds(actor, workspace, p)]
        if missing:
            raise Forbidden(
                f"You cannot define a role with permissions you do not hold in "
                f"'{workspace}' ({', '.join(missing)})",
                workspace=workspace,
                missing_permissions=missing,
            )
        return wanted

    def _holds(self, actor: Actor, workspace: str, permission: str) -> bool:
        if actor.user_id is None:  # the system (CLI) may do anything
            return True
        resource, _, action = permission.partition(":")
        return self.engine.holds(actor.user_id, workspace, resource, action)

    def _holders(self, workspace: str, role: str) -> int:
        return int(
            self.session.scalar(
                select(func.count())
                .select_from(Grant)
                .where(Grant.workspace_slug == workspace, Grant.role == role)
            )
            or 0
        )


def delete_custom_role(changes: ChangeSet, role: CustomRole, why: str = "") -> None:
    """Remove ``role`` and its rules inside an open change, audited (shared with deleting
    its workspace and with ``policy apply`` adopting it into the files)."""
    for rule in sorted(custom_role_rules(role)):
        changes.remove_rule(rule)
    changes.session.delete(role)
    after: dict[str, object] | None = {"reason": why} if why else None
    _audit(changes, "role.deleted", role, before=role_view(role), after=after)


def _audit(
    changes: ChangeSet,
    action: str,
    role: CustomRole,
    before: dict[str, object] | None = None,
    after: dict[str, object] | None = None,
) -> None:
    changes.audit(action, AuditTarget.ROLE, role.id, role.name, role.workspace_slug, before, after)


def _base(permission: str) -> str:
    """``documents:update:own`` → ``documents:update``."""
    return permission.removesuffix(f":{OWN_SUFFIX}")


def _valid_description(description: str) -> str:
    text = (description or "").strip()
    if len(text) > MAX_DESCRIPTION:
        raise InvalidInput(
            f"The description is longer than {MAX_DESCRIPTION} characters",
            errors={"description": [f"at most {MAX_DESCRIPTION} characters"]},
        )
    return text
