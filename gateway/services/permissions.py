"""The permissions Ringfence itself checks on its admin API, in one sorted enum.

Every member must also be in the policy catalogue (``policies/permissions.yaml``);
a unit test keeps the two in step.
"""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    AUDIT_READ = "audit:read"
    CLIENTS_READ = "clients:read"
    CLIENTS_WRITE = "clients:write"
    DIRECTORY_MANAGE = "directory:manage"
    EVENT_STREAMS_WRITE = "event_streams:write"
    REVIEWS_READ = "reviews:read"
    REVIEWS_WRITE = "reviews:write"
    ROLE_MANAGEMENT_DEFINE = "role_management:define"
    ROLE_MANAGEMENT_READ = "role_management:read"
    ROLE_MANAGEMENT_WRITE = "role_management:write"
    SETTINGS_WRITE = "settings:write"
    SSO_MANAGE = "sso:manage"
    USERS_DEACTIVATE = "users:deactivate"
    USERS_INVITE = "users:invite"
    USERS_READ = "users:read"
    USERS_REMOVE = "users:remove"
    USERS_RESET_MFA = "users:reset_mfa"
    WORKSPACES_CREATE = "workspaces:create"
    WORKSPACES_DELETE = "workspaces:delete"
    WORKSPACES_READ = "workspaces:read"
    WORKSPACES_UPDATE = "workspaces:update"

    @property
    def resource(self) -> str:
        return self.value.partition(":")[0]

    @property
    def action(self) -> str:
        return self.value.partition(":")[2]


# Permissions that only mean something held in every workspace (``*``): creating
# workspaces and the services' OAuth clients. A custom role, which lives in one
# workspace's domain, is never offered them.
INSTALLATION_WIDE = frozenset(
    {Permission.WORKSPACES_CREATE, Permission.CLIENTS_READ, Permission.CLIENTS_WRITE}
)


# What holding each administrative permission lets a person do, in plain words: a role
# giving any of them is a powerful one, and granting it is announced with these words
# (the console's role-change preview) before the raw permission list.
ADMINISTRATIVE = {
    Permission.USERS_INVITE: "invite people",
    Permission.ROLE_MANAGEMENT_WRITE: "change people's roles",
    Permission.ROLE_MANAGEMENT_DEFINE: "define the workspace's own roles",
    Permission.USERS_DEACTIVATE: "deactivate people",
    Permission.USERS_REMOVE: "remove people",
    Permission.USERS_RESET_MFA: "reset people's two-step sign-in",
    Permission.SETTINGS_WRITE: "change settings",
    Permission.DIRECTORY_MANAGE: "connect a company directory",
    Permission.SSO_MANAGE: "set up single sign-on for the workspace's email domains",
    Permission.EVENT_STREAMS_WRITE: "send the audit trail elsewhere",
    Permission.REVIEWS_WRITE: "run access reviews",
    Permission.WORKSPACES_UPDATE: "rename the workspace",
    Permission.WORKSPACES_DELETE: "delete the workspace",
    Permission.WORKSPACES_CREATE: "create workspaces",
    Permission.CLIENTS_WRITE: "manage the services' OAuth clients",
}
