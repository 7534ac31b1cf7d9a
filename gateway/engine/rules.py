"""Pure translation between Ringfence concepts and Casbin rules (see ``model.conf``).

Subjects are namespaced so that a user can never be mistaken for a role:
``user:<id>`` and ``role:<name>``. ``ALL_WORKSPACES`` (``*``) is a domain pattern
that matches every workspace.

A permission may carry a condition: ``documents:update:own`` holds only on resources
the subject owns. Its ``p`` rule has ``owner`` as fifth value (``cond`` in
``model.conf``); an unconditional permission has an empty fifth value.
"""

from __future__ import annotations

from dataclasses import dataclass

ALL_WORKSPACES = "*"
USER_PREFIX = "user:"
ROLE_PREFIX = "role:"
# The `cond` of an owner-only permission rule, and the suffix naming such a permission.
OWNER_CONDITION = "owner"
OWN_SUFFIX = "own"
NO_CONDITION = ""


@dataclass(frozen=True, order=True)
class Rule:
    """One Casbin policy line: ``ptype`` (``p`` or ``g``) and its values."""

    ptype: str
    values: tuple[str, ...]

    def __str__(self) -> str:
        return ", ".join((self.ptype, *self.values))


@dataclass(frozen=True, order=True)
class GrantKey:
    """A grant as the engine sees it: a user holds a role in a workspace (or ``*``)."""

    user_id: int
    role: str
    workspace: str


def user_subject(user_id: int) -> str:
    return f"{USER_PREFIX}{user_id}"


def role_subject(role: str) -> str:
    return f"{ROLE_PREFIX}{role}"


def split_permission(permission: str) -> tuple[str, str]:
    """``"documents:read"`` → ``("documents", "read")``; ``"*"`` → ``("*", "*")``."""
    if permission == "*":
        return "*", "*"
    resource, sep, action = permission.partition(":")
    if not sep or not resource or not action:
        raise ValueError(f"permission {permission!r} is not of the form resource:action")
    return resource, action


def parse_permission(permission: str) -> tuple[str, str, str]:
    """``"todos:update"`` → ``("todos", "update", "")``; ``"todos:update:own"`` →
    ``("todos", "update", "owner")``; ``"*"`` → ``("*", "*", "")``."""
    base, sep, suffix = permission.rpartition(":")
    if sep and suffix == OWN_SUFFIX and base.count(":") == 1:
        resource, action = split_permission(base)
        return resource, action, OWNER_CONDITION
    resource, action = split_permission(permission)
    if ":" in action:
        raise ValueError(f"permission {permission!r} has an unknown condition")
    return resource, action, NO_CONDITION


def permission_name(resource: str, action: str, cond: str = NO_CONDITION) -> str:
    """The inverse of :func:`parse_permission` (``*`` stays ``*:*``)."""
    name = f"{resource}:{action}"
    return f"{name}:{OWN_SUFFIX}" if cond == OWNER_CONDITION else name


def grant_rule(grant: GrantKey) -> Rule:
    return Rule("g", (user_subject(grant.user_id), role_subject(grant.role), grant.workspace))


def rule_to_grant(rule: Rule) -> GrantKey | None:
    """The grant a ``g`` rule stands for, or None for role inheritance and other rules."""
    if rule.ptype != "g" or len(rule.values) != 3:
        return None
    subject, role, workspace = rule.values
    if not subject.startswith(USER_PREFIX) or not role.startswith(ROLE_PREFIX):
        return None
    digits = subject[len(USER_PREFIX) :]
    # Only the canonical spelling: Casbin compares strings, so "user:01" is not user 1.
    if not (digits.isascii() and digits.isdecimal()) or str(int(digits)) != digits:
        return None
    return GrantKey(int(digits), role[len(ROLE_PREFIX) :], workspace)


def permission_rule(role: str, permission: str, workspace: str = ALL_WORKSPACES) -> Rule:
    """``role`` may ``permission`` in ``workspace``; ``…:own`` permissions carry the owner
    condition, the others an empty one (every ``p`` rule has the same five values)."""
    resource, action, cond = parse_permission(permission)
    return Rule("p", (role_subject(role), workspace, resource, action, cond))


def inheritance_rule(role: str, parent: str, workspace: str = ALL_WORKSPACES) -> Rule:
    """``role`` inherits every permission of ``parent``."""
    return Rule("g", (role_subject(role), role_subject(parent), workspace))


def is_policy_rule(rule: Rule) -> bool:
    """Rules that come from ``policies/`` (permissions and role inheritance), not grants."""
    return rule.ptype == "p" or (
        rule.ptype == "g" and bool(rule.values) and rule.values[0].startswith(ROLE_PREFIX)
    )
