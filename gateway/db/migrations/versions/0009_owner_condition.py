"""Permission rules gain a fifth value, the condition ("" or "owner").

The model's ``p`` definition became ``sub, dom, obj, act, cond`` (owner-only
permissions). Casbin refuses a ``p`` rule with four values, so rules stored before are
given an empty condition here; without this step every decision would be denied until
``ringfence policy apply`` rewrote them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28 01:20:00
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE casbin_rule SET v4 = '' WHERE ptype = 'p' AND v4 IS NULL")


def downgrade() -> None:
    # Owner-only rules cannot be expressed without the condition: drop them, and give the
    # others back their four values.
    op.execute("DELETE FROM casbin_rule WHERE ptype = 'p' AND v4 = 'owner'")
    op.execute("UPDATE casbin_rule SET v4 = NULL WHERE ptype = 'p' AND v4 = ''")
