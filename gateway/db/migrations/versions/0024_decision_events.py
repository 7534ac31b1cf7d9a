"""Sampled decision events for the event streams: ``decision_events``, its id head
``decision_event_head``, and each stream's ``decision_sample`` and ``decision_cursor``.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "decision_events",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("workspace", sa.Text(), nullable=False),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=True),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.Column("draw", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decision_events")),
    )
    op.create_index("ix_decision_events_workspace_id", "decision_events", ["workspace", "id"])
    op.create_table(
        "decision_event_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("head_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decision_event_head")),
    )
    with op.batch_alter_table("event_streams") as batch_op:
        batch_op.add_column(
            sa.Column("decision_sample", sa.Float(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("decision_cursor", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("event_streams") as batch_op:
        batch_op.alter_column("decision_sample", server_default=None)
        batch_op.alter_column("decision_cursor", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("event_streams") as batch_op:
        batch_op.drop_column("decision_cursor")
        batch_op.drop_column("decision_sample")
    op.drop_table("decision_event_head")
    op.drop_index("ix_decision_events_workspace_id", table_name="decision_events")
    op.drop_table("decision_events")
