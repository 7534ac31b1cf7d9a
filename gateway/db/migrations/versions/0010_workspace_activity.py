"""Last seen per person and workspace (``workspace_activity``), from the check endpoints.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28 18:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workspace_activity",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_workspace_activity_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_workspace_activity_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "workspace_id", name=op.f("pk_workspace_activity")),
    )
    with op.batch_alter_table("workspace_activity", schema=None) as batch_op:
        # Removing a workspace cascades through this index (the key leads with user_id).
        batch_op.create_index(
            batch_op.f("ix_workspace_activity_workspace_id"), ["workspace_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("workspace_activity", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workspace_activity_workspace_id"))
    op.drop_table("workspace_activity")
