"""Stored addresses in their one form: NFKC, trimmed, lower-case (security finding 7).

Addresses were only trimmed and lower-cased, so john@example.com in full-width letters
was another person: a look-alike account, a second invitation. The application now
normalises every address on the way in (gateway.emails); this brings ``users.email`` and
``invitations.email`` stored before to the same form.

Two accounts (users not ``pending``) whose addresses become one would break the rule of
one account per address (index ``uq_users_email_account``, migration 0012), and merging
people is not a migration's call: the upgrade then stops, naming them, and changes
nothing. An administrator removes or renames one (e.g. ``UPDATE users SET email = ...``)
and upgrades again. Invitations' placeholders (``pending``) may share an address.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 18:00:00
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

MAX_EMAIL = 320  # users.email and invitations.email are String(320)


def _normalise(email: str) -> str:
    # gateway.emails.normalise_email as of this revision, copied: a migration must do
    # tomorrow what it did today, whatever becomes of the application's function.
    if email.isascii():
        return email.strip().lower()
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", email).lower()).strip()


def upgrade() -> None:
    bind = op.get_bind()
    users = bind.execute(sa.text("SELECT id, email, status FROM users ORDER BY id")).all()
    accounts: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for user_id, email, status in users:
        if status != "pending":
            accounts[_normalise(email)].append((user_id, email))
    problems = [
        f"{normal}: " + ", ".join(f"user {uid} {email!a}" for uid, email in rows)
        for normal, rows in accounts.items()
        if len(rows) > 1
    ]
    for table, rows in (("users", users), ("invitations", _invitations())):
        problems += [
            f"{table} {row_id} {email!a}: {len(normal)} characters once normalised "
            f"(at most {MAX_EMAIL})"
            for row_id, email, *_ in rows
            if len(normal := _normalise(email)) > MAX_EMAIL
        ]
    if problems:
        raise RuntimeError(
            "Cannot normalise stored email addresses (NFKC, trimmed, lower-case): these "
            "accounts would share an address, or an address would grow too long. Remove or "
            "rename one of each, then upgrade again. Nothing was changed.\n  "
            + "\n  ".join(problems)
        )
    _rewrite("users", users)
    _rewrite("invitations", _invitations())


def downgrade() -> None:
    # Nothing to undo: the normalised addresses are valid (and what was meant) before
    # this revision too, and the spellings they replace are not kept.
    pass


def _invitations() -> Sequence[Any]:
    return op.get_bind().execute(sa.text("SELECT id, email FROM invitations ORDER BY id")).all()


def _rewrite(table: str, rows: Sequence[Any]) -> None:
    """Set each row's (``id``, ``email``, ...) address to its normal form, if it is not."""
    changed = [
        {"id": row[0], "email": normal} for row in rows if (normal := _normalise(row[1])) != row[1]
    ]
    if changed:
        op.get_bind().execute(
            sa.text(f"UPDATE {table} SET email = :email WHERE id = :id"),  # noqa: S608 - fixed names
            changed,
        )
