"""One account per address; invitations' placeholders may share it.

Inviting an address used to answer differently when it had an account (roles added at
once, or a 409 for someone else's pending invitation), which told any workspace admin
who exists elsewhere. Now every inviting workspace gets a placeholder person of its own
(status ``pending``), folded into the account when the person accepts. So the unique
constraint on ``users.email`` becomes a unique index over accounts only
(``status <> 'pending'``), with a plain index for look-ups by address.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 17:00:00
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

ACCOUNTS_ONLY = sa.text("status <> 'pending'")


def upgrade() -> None:
    with _users_rebuilt() as batch_op:
        batch_op.drop_constraint("uq_users_email", type_="unique")
    op.create_index(
        "uq_users_email_account",
        "users",
        ["email"],
        unique=True,
        sqlite_where=ACCOUNTS_ONLY,
        postgresql_where=ACCOUNTS_ONLY,
    )
    op.create_index("ix_users_email", "users", ["email"])


def downgrade() -> None:
    # Fails, as it should, while an address has both an account and a placeholder.
    op.drop_index("ix_users_email", table_name="users")
    op.drop_index("uq_users_email_account", table_name="users")
    with _users_rebuilt() as batch_op:
        batch_op.create_unique_constraint("uq_users_email", ["email"])


@contextmanager
def _users_rebuilt() -> Iterator[BatchOperations]:
    """``batch_alter_table("users")`` that keeps SQLite's AUTOINCREMENT and its sequence:
    the rebuilt table must not give out an id a removed person had (migration 0011)."""
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    sequence = (
        bind.execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'users'")).scalar()
        if sqlite
        else None
    )
    with op.batch_alter_table(
        "users", table_kwargs={"sqlite_autoincrement": True} if sqlite else {}
    ) as batch_op:
        yield batch_op
    if sequence:
        bind.execute(
            sa.text("UPDATE sqlite_sequence SET seq = MAX(seq, :seq) WHERE name = 'users'"),
            {"seq": sequence},
        )
