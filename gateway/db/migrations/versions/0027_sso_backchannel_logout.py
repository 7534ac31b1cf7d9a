"""Back-channel logout for workspaces' single sign-on connections: each session (and each
sign-on code, until it is exchanged) records the connection it was started through and
the provider's session id (``sid``); ``sso_logout_tokens`` holds SHA-256 of the ``jti``
of the logout tokens received, so that a replayed one is refused.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-08 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def _sqlite() -> bool:
    return bool(op.get_bind().dialect.name == "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("auth_sessions") as batch_op:
        batch_op.add_column(sa.Column("sso_connection_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("sso_sid", sa.String(length=255), nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_auth_sessions_sso_connection_id_sso_connections"),
            "sso_connections",
            ["sso_connection_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch_op.create_index("ix_auth_sessions_sso_connection_id", ["sso_connection_id"])
    # user_tokens' ids are never reused: SQLite's copy of the table keeps AUTOINCREMENT.
    with op.batch_alter_table(
        "user_tokens", table_kwargs={"sqlite_autoincrement": True} if _sqlite() else {}
    ) as batch_op:
        batch_op.add_column(sa.Column("sso_connection_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("sso_sid", sa.String(length=255), nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_user_tokens_sso_connection_id_sso_connections"),
            "sso_connections",
            ["sso_connection_id"],
            ["id"],
            ondelete="CASCADE",
        )
    op.create_table(
        "sso_logout_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("jti_hash", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["sso_connections.id"],
            name=op.f("fk_sso_logout_tokens_connection_id_sso_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sso_logout_tokens")),
        sa.UniqueConstraint("connection_id", "jti_hash", name=op.f("uq_sso_logout_tokens_jti")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_sso_logout_tokens_expires_at", "sso_logout_tokens", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_sso_logout_tokens_expires_at", table_name="sso_logout_tokens")
    op.drop_table("sso_logout_tokens")
    with op.batch_alter_table(
        "user_tokens", table_kwargs={"sqlite_autoincrement": True} if _sqlite() else {}
    ) as batch_op:
        batch_op.drop_constraint(
            op.f("fk_user_tokens_sso_connection_id_sso_connections"), type_="foreignkey"
        )
        batch_op.drop_column("sso_sid")
        batch_op.drop_column("sso_connection_id")
    with op.batch_alter_table("auth_sessions") as batch_op:
        batch_op.drop_index("ix_auth_sessions_sso_connection_id")
        batch_op.drop_constraint(
            op.f("fk_auth_sessions_sso_connection_id_sso_connections"), type_="foreignkey"
        )
        batch_op.drop_column("sso_sid")
        batch_op.drop_column("sso_connection_id")
