"""Ids are never reused; every column naming a person has a foreign key or is history.

SQLite without AUTOINCREMENT gives a new row the largest id in the table plus one: once
the newest person was removed, the next one got their id, and with it whatever still
named that id (``user:<id>`` in other services, review assignments, audit filters).
On SQLite, every table with a surrogate id is rebuilt with AUTOINCREMENT, its rows and
indexes kept, and its sequence set to the largest id it ever gave out as far as the
database still knows: its own rows, and the ids other tables and the audit trail still
name (a person removed before this upgrade keeps their id to themselves). PostgreSQL
sequences never go back already. Not rebuilt: the single-row tables and ``casbin_rule``,
whose ids nobody refers to.

On both databases: review assignments and ``app_settings.updated_by_id`` get foreign keys
(removing a person removes their assignments, and clears "last changed by"). Rows that
already name a removed person are cleaned first, and so are assignments a newer person
inherited through a reused id (created after the campaign started, so they cannot have
been chosen at its start).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 16:30:00
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Connection, text

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

REBUILT = (
    "users",
    "workspaces",
    "grants",
    "invitations",
    "invitation_grants",
    "invitation_tokens",
    "outbox_messages",
    "refresh_tokens",
    "user_tokens",
    "audit_events",
    "review_campaigns",
    "review_items",
    "oauth_clients",
)


def _audit_target(target_type: str) -> str:
    # target_id is text (a slug, a client id, or a number): only the numeric ones count.
    # target_type is one of the constants below, never input.
    return (
        "SELECT MAX(CAST(target_id AS INTEGER)) FROM audit_events "  # noqa: S608
        f"WHERE target_type = '{target_type}' AND target_id NOT GLOB '*[^0-9]*'"
    )


# Ids that rows elsewhere still name, though the row itself may be gone (SQLite SQL).
NAMED_ELSEWHERE = {
    "users": (
        _audit_target("user"),
        "SELECT MAX(actor_id) FROM audit_events",
        "SELECT MAX(user_id) FROM review_items",
        "SELECT MAX(decided_by_id) FROM review_items",
        "SELECT MAX(user_id) FROM review_item_reviewers",
        "SELECT MAX(created_by_id) FROM review_campaigns",
        "SELECT MAX(created_by_id) FROM oauth_clients",
        "SELECT MAX(updated_by_id) FROM app_settings",
        "SELECT MAX(CAST(SUBSTR(v0, 6) AS INTEGER)) FROM casbin_rule WHERE v0 LIKE 'user:%'",
    ),
    "invitations": (
        _audit_target("invitation"),
        "SELECT MAX(invitation_id) FROM outbox_messages",
    ),
    "review_campaigns": (_audit_target("review_campaign"),),
    "review_items": (_audit_target("review_item"),),
    # Retention may have deleted every event; the anchor names the last one archived.
    "audit_events": (
        "SELECT MAX(head_id) FROM audit_chain",
        "SELECT MAX(anchor_id) FROM audit_chain",
    ),
}


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    floors = _ids_given_out(bind) if sqlite else {}

    # Assignments and "last changed by" that name a removed person: the foreign keys below
    # would refuse them (PostgreSQL), and a reissued id would have inherited them.
    op.execute(
        "DELETE FROM review_item_reviewers WHERE NOT EXISTS "
        "(SELECT 1 FROM users WHERE users.id = review_item_reviewers.user_id)"
    )
    op.execute(
        "UPDATE app_settings SET updated_by_id = NULL WHERE updated_by_id IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM users WHERE users.id = app_settings.updated_by_id)"
    )
    # Reused already (SQLite): a person created after the campaign started was not among
    # its reviewers, whatever the row says (it was a removed person's); likewise for who
    # last changed a setting. Nothing matches where ids were never reused.
    op.execute(
        "DELETE FROM review_item_reviewers WHERE EXISTS (SELECT 1 FROM users, "
        "review_items, review_campaigns WHERE users.id = review_item_reviewers.user_id "
        "AND review_items.id = review_item_reviewers.item_id "
        "AND review_campaigns.id = review_items.campaign_id "
        "AND users.created_at > review_campaigns.starts_at)"
    )
    op.execute(
        "UPDATE app_settings SET updated_by_id = NULL WHERE EXISTS (SELECT 1 FROM users "
        "WHERE users.id = app_settings.updated_by_id "
        "AND users.created_at > app_settings.updated_at)"
    )

    with op.batch_alter_table("review_item_reviewers") as batch_op:
        batch_op.create_foreign_key(
            op.f("fk_review_item_reviewers_user_id_users"),
            "users",
            ["user_id"],
            ["id"],
            ondelete="CASCADE",
        )
    with op.batch_alter_table("app_settings") as batch_op:
        batch_op.create_foreign_key(
            op.f("fk_app_settings_updated_by_id_users"),
            "users",
            ["updated_by_id"],
            ["id"],
            ondelete="SET NULL",
        )

    if not sqlite:
        return
    for table in REBUILT:
        # Copies the rows (ids included) into a table created with AUTOINCREMENT; the
        # copy sets its sequence to the largest id copied.
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ):
            pass
    for table, floor in floors.items():
        _raise_sequence(bind, table, floor)


def downgrade() -> None:
    with op.batch_alter_table("app_settings") as batch_op:
        batch_op.drop_constraint(op.f("fk_app_settings_updated_by_id_users"), type_="foreignkey")
    with op.batch_alter_table("review_item_reviewers") as batch_op:
        batch_op.drop_constraint(op.f("fk_review_item_reviewers_user_id_users"), type_="foreignkey")
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in REBUILT:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": False}
        ):
            pass


def _ids_given_out(bind: Connection) -> dict[str, int]:
    """Per rebuilt table, the largest id it is known to have given out (0: none)."""
    floors: dict[str, int] = {}
    for table in REBUILT:
        queries = (f"SELECT MAX(id) FROM {table}", *NAMED_ELSEWHERE.get(table, ()))  # noqa: S608
        floors[table] = max(bind.execute(text(query)).scalar() or 0 for query in queries)
    return floors


def _raise_sequence(bind: Connection, table: str, floor: int) -> None:
    """The next id of ``table`` is above ``floor`` (SQLite's sqlite_sequence)."""
    if floor <= 0:
        return
    current = bind.execute(
        text("SELECT seq FROM sqlite_sequence WHERE name = :table"), {"table": table}
    ).scalar()
    if current is None:
        bind.execute(
            text("INSERT INTO sqlite_sequence (name, seq) VALUES (:table, :seq)"),
            {"table": table, "seq": floor},
        )
    elif current < floor:
        bind.execute(
            text("UPDATE sqlite_sequence SET seq = :seq WHERE name = :table"),
            {"table": table, "seq": floor},
        )
