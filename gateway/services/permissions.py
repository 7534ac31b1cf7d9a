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
