"""Start-up from PostgreSQL in bulk: a million users and their grants in seconds.

Read row by row, 1M users and 1.75M ``casbin_rule`` rows cost over 30 s and a GB of
Python objects on the way (each row a tuple, each grant a call). Here PostgreSQL does the
grouping: the grants — ``g`` rules of a canonical ``user:<id>`` with exactly three
values, nearly every row — arrive as one row per (role, workspace) with the user ids
joined into one string, and go into the index a group at a time
(:meth:`gateway.engine.index.Grants.add_holders`). Every other row (``p`` rules, role links,
anything of an unexpected shape) is read as before and goes through the same code as a
generic load, so the answers are exactly those of :meth:`DecisionEngine.load_rules`.

Users arrive the same way: the active ids as one string, and the email→id pairs from
the driver directly. The garbage collector is paused meanwhile: millions of new objects,
none of them garbage, would otherwise trigger full collections over all of them.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection

from gateway.engine.engine import Snapshot, stored_rows
from gateway.engine.index import Grants

# A grant in the common form: what the bulk query reads. Kept in SQL and used negated
# for "everything else", so each row is read exactly once.
_GRANT_ROW = (
    "coalesce(ptype = 'g' AND v0 ~ '^user:(0|[1-9][0-9]*)$' AND v1 <> '' "
    "AND v2 IS NOT NULL AND v3 IS NULL AND v4 IS NULL AND v5 IS NULL, false)"
)
_GRANTS = (
    f"SELECT v1, v2, string_agg(substr(v0, 6), ',') FROM casbin_rule "  # noqa: S608 - constants
    f"WHERE {_GRANT_ROW} GROUP BY v1, v2"
)
_OTHER_RULES = f"SELECT ptype, v0, v1, v2, v3, v4, v5 FROM casbin_rule WHERE NOT {_GRANT_ROW}"  # noqa: S608
_ACTIVE_IDS = "SELECT coalesce(string_agg(id::text, ','), '') FROM users WHERE status = 'active'"
# Accounts only: an invitation's placeholder (status pending) may share its address with
# an account, and is decided as unknown.
_EMAILS = "SELECT email, id FROM users WHERE status <> 'pending'"
_WORKSPACES = "SELECT slug FROM workspaces"


def read_snapshot(connection: Connection, revision: int) -> Snapshot:
    """Everything the engine needs, read from PostgreSQL in bulk (see the module doc)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        grants = Grants()
        for role, domain, ids in _rows(connection, _GRANTS):
            grants.add_holders(role, domain, map(int, ids.split(",")))
        active_text = connection.exec_driver_sql(_ACTIVE_IDS).scalar_one()
        active = set(map(int, active_text.split(","))) if active_text else set()
        ids_by_email: dict[str, int] = dict(_rows(connection, _EMAILS))
        workspaces = [slug for (slug,) in _rows(connection, _WORKSPACES)]
        others = stored_rows(_rows(connection, _OTHER_RULES))
        return Snapshot.build(others, grants, active, ids_by_email, workspaces, revision)
    finally:
        if enabled:
            gc.enable()


def _rows(connection: Connection, sql: str) -> Iterator[Any]:
    """Plain driver tuples: no SQLAlchemy Row objects for millions of rows."""
    cursor = connection.exec_driver_sql(sql).cursor
    assert cursor is not None
    while batch := cursor.fetchmany(100_000):
        yield from batch
