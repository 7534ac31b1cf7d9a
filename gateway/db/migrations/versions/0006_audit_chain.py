"""Audit chain: hash-chained, append-only audit events with actor client, source address
and reason; the chain head and anchor; on PostgreSQL, triggers refusing UPDATE and DELETE.

Events written before this migration are chained here, in id order.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 23:55:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gateway.audit.chain import GENESIS, HASHED_FIELDS, compute_hash, format_time
from gateway.db.models import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Only the retention job deletes events, and only those at or before the anchor it has
# just recorded, with the setting on for its transaction; nothing updates them.
GUARD_FUNCTION = """
CREATE FUNCTION ringfence_audit_events_guard() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('ringfence.audit_retention', true) = 'on' THEN
        IF OLD.id <= (SELECT anchor_id FROM audit_chain WHERE id = 1) THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql
"""
TRIGGERS = (
    "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
    "FOR EACH ROW EXECUTE FUNCTION ringfence_audit_events_guard()",
    "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
    "FOR EACH STATEMENT EXECUTE FUNCTION ringfence_audit_events_guard()",
)


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("actor_client_id", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("source_address", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("reason", sa.String(length=1000), nullable=True))
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_audit_events_actor", ["actor_id"], unique=False)

    op.create_table(
        "audit_chain",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("head_id", sa.Integer(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("anchor_id", sa.Integer(), nullable=False),
        sa.Column("anchor_hash", sa.String(length=64), nullable=False),
        sa.Column("anchored_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_chain")),
    )

    head_id, head_hash = _backfill()
    chain = sa.table(
        "audit_chain",
        sa.column("id", sa.Integer()),
        sa.column("head_id", sa.Integer()),
        sa.column("head_hash", sa.String()),
        sa.column("anchor_id", sa.Integer()),
        sa.column("anchor_hash", sa.String()),
    )
    op.execute(
        chain.insert().values(
            id=1, head_id=head_id, head_hash=head_hash, anchor_id=0, anchor_hash=GENESIS
        )
    )

    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("hash", existing_type=sa.String(length=64), nullable=False)

    if op.get_bind().dialect.name == "postgresql":
        op.execute(GUARD_FUNCTION)
        for trigger in TRIGGERS:
            op.execute(trigger)


def _backfill() -> tuple[int, str]:
    """Chain the events already stored, oldest first; the new head."""
    events = sa.table(
        "audit_events",
        *(sa.column(name) for name in HASHED_FIELDS if name not in {"at", "before", "after"}),
        sa.column("at", UTCDateTime()),
        sa.column("before", sa.JSON()),
        sa.column("after", sa.JSON()),
        sa.column("prev_hash", sa.String()),
        sa.column("hash", sa.String()),
    )
    bind = op.get_bind()
    head_id, head_hash = 0, GENESIS
    while True:
        rows = bind.execute(
            sa.select(events).where(events.c.id > head_id).order_by(events.c.id).limit(1000)
        ).all()
        if not rows:
            return head_id, head_hash
        for row in rows:
            fields = {name: getattr(row, name) for name in HASHED_FIELDS}
            fields["at"] = format_time(row.at)
            digest = compute_hash(fields, head_hash)
            bind.execute(
                events.update()
                .where(events.c.id == row.id)
                .values(prev_hash=head_hash, hash=digest)
            )
            head_id, head_hash = row.id, digest


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events")
        op.execute("DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events")
        op.execute("DROP FUNCTION IF EXISTS ringfence_audit_events_guard()")
    op.drop_table("audit_chain")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_actor")
        batch_op.drop_column("hash")
        batch_op.drop_column("prev_hash")
        batch_op.drop_column("reason")
        batch_op.drop_column("source_address")
        batch_op.drop_column("actor_client_id")
