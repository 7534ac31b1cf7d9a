"""Remembered browsers of two-step sign-in: ``remembered_devices`` (the SHA-256 of each
browser's random token, whose person, under which session version, until when, and a
label from its User-Agent).

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-08 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "remembered_devices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("session_version", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_remembered_devices_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_remembered_devices")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_remembered_devices_token_hash")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("remembered_devices") as batch_op:
        batch_op.create_index(
            batch_op.f("ix_remembered_devices_user_id"), ["user_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_remembered_devices_expires_at"), ["expires_at"], unique=False
        )


def downgrade() -> None:
    op.drop_table("remembered_devices")
