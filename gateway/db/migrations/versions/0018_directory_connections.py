"""Directory connections: SCIM 2.0 provisioning of a workspace by a company directory.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 22:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def _connection_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["connection_id"],
        ["directory_connections.id"],
        name=op.f(f"fk_{table}_connection_id_directory_connections"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "directory_connections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workspace_slug", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("default_role", sa.String(length=63), nullable=True),
        sa.Column("group_roles", sa.JSON(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_by_name", sa.String(length=400), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("token_rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["workspace_slug"],
            ["workspaces.slug"],
            name=op.f("fk_directory_connections_workspace_slug_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_connections")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_directory_connections_token_hash")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("directory_connections") as batch_op:
        batch_op.create_index(
            batch_op.f("ix_directory_connections_workspace_slug"), ["workspace_slug"]
        )
    op.create_table(
        "directory_users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scim_id", sa.String(length=36), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("user_name", sa.String(length=320), nullable=False),
        sa.Column("user_name_key", sa.String(length=320), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_account", sa.Boolean(), nullable=False),
        sa.Column("resource", sa.JSON(), nullable=False),
        *_timestamps(),
        _connection_fk("directory_users"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_directory_users_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_users")),
        sa.UniqueConstraint("scim_id", name=op.f("uq_directory_users_scim_id")),
        sa.UniqueConstraint(
            "connection_id", "user_name_key", name=op.f("uq_directory_users_user_name")
        ),
        sa.UniqueConstraint(
            "connection_id", "external_id", name=op.f("uq_directory_users_external_id")
        ),
        sa.UniqueConstraint("connection_id", "user_id", name=op.f("uq_directory_users_account")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("directory_users") as batch_op:
        batch_op.create_index(batch_op.f("ix_directory_users_user_id"), ["user_id"])
    op.create_table(
        "directory_groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scim_id", sa.String(length=36), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("display_name", sa.String(length=255), nullable=False),
        sa.Column("display_name_key", sa.String(length=255), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=True),
        sa.Column("resource", sa.JSON(), nullable=False),
        *_timestamps(),
        _connection_fk("directory_groups"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_groups")),
        sa.UniqueConstraint("scim_id", name=op.f("uq_directory_groups_scim_id")),
        sa.UniqueConstraint(
            "connection_id", "display_name_key", name=op.f("uq_directory_groups_name")
        ),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "directory_group_members",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["directory_groups.id"],
            name=op.f("fk_directory_group_members_group_id_directory_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["directory_users.id"],
            name=op.f("fk_directory_group_members_member_id_directory_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_id", "member_id", name=op.f("pk_directory_group_members")),
    )
    with op.batch_alter_table("directory_group_members") as batch_op:
        batch_op.create_index(batch_op.f("ix_directory_group_members_member_id"), ["member_id"])
    op.create_table(
        "directory_grants",
        sa.Column("grant_id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["grant_id"],
            ["grants.id"],
            name=op.f("fk_directory_grants_grant_id_grants"),
            ondelete="CASCADE",
        ),
        _connection_fk("directory_grants"),
        sa.PrimaryKeyConstraint("grant_id", name=op.f("pk_directory_grants")),
    )
    with op.batch_alter_table("directory_grants") as batch_op:
        batch_op.create_index(batch_op.f("ix_directory_grants_connection_id"), ["connection_id"])


def downgrade() -> None:
    for table in (
        "directory_grants",
        "directory_group_members",
        "directory_groups",
        "directory_users",
        "directory_connections",
    ):
        op.drop_table(table)
