"""Mail workers that are consuming, as they last said so.

A worker whose consumer is connected to the broker stamps its row every
``RINGFENCE_MAIL_WORKER_HEARTBEAT_SECONDS``; ``/readyz`` and ``/metrics`` count the rows
stamped recently, so that "no worker is consuming" shows before mail piles up.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 17:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mail_workers",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_mail_workers")),
    )


def downgrade() -> None:
    op.drop_table("mail_workers")
