"""A directory user's externalId is unique per connection whatever its case, as userName
is: ``external_id_key`` (lower-cased) carries the constraint and the lookups.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 03:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    # Ids differing only in case within one connection cannot both keep a unique key:
    # say which, and change nothing (the directory or an admin decides which is right).
    clashes = bind.execute(
        sa.text(
            "SELECT connection_id, lower(external_id) FROM directory_users "
            "WHERE external_id IS NOT NULL "
            "GROUP BY connection_id, lower(external_id) HAVING count(*) > 1"
        )
    ).all()
    if clashes:
        listed = ", ".join(f"connection {c}: {key!r}" for c, key in clashes)
        raise RuntimeError(
            "Directory users whose externalId differs only in case, which can no longer "
            f"both be kept: {listed}. Delete one of each (SCIM DELETE /Users/{{id}}) "
            "and upgrade again."
        )
    with op.batch_alter_table("directory_users") as batch_op:
        batch_op.add_column(sa.Column("external_id_key", sa.String(length=255), nullable=True))
    op.execute("UPDATE directory_users SET external_id_key = lower(external_id)")
    with op.batch_alter_table("directory_users") as batch_op:
        batch_op.drop_constraint("uq_directory_users_external_id", type_="unique")
        batch_op.create_unique_constraint(
            "uq_directory_users_external_id", ["connection_id", "external_id_key"]
        )


def downgrade() -> None:
    with op.batch_alter_table("directory_users") as batch_op:
        batch_op.drop_constraint("uq_directory_users_external_id", type_="unique")
        batch_op.create_unique_constraint(
            "uq_directory_users_external_id", ["connection_id", "external_id"]
        )
        batch_op.drop_column("external_id_key")
