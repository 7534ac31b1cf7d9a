"""Pure translation between Ringfence concepts and Casbin rules (see ``model.conf``).

Subjects are namespaced so that a user can never be mistaken for a role:
``user:<id>`` and ``role:<name>``. ``ALL_WORKSPACES`` (``*``) is a domain pattern
that matches every workspace.
"""

from __future__ import annotations

from dataclasses import dataclass

ALL_WORKSPACES = "*"
USER_PREFIX = "user:"
ROLE_PREFIX = "role:"


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
    resource, action = split_permission(permission)
    return Rule("p", (role_subject(role), workspace, resource, action))


def inheritance_rule(role: str, parent: str, workspace: str = ALL_WORKSPACES) -> Rule:
    """``role`` inherits every permission of ``parent``."""
    return Rule("g", (role_subject(role), role_subject(parent), workspace))


def is_policy_rule(rule: Rule) -> bool:
    """Rules that come from ``policies/`` (permissions and role inheritance), not grants."""
    return rule.ptype == "p" or (
        rule.ptype == "g" and bool(rule.values) and rule.values[0].startswith(ROLE_PREFIX)
    )
