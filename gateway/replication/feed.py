"""The change feed's reads (``GET /v1/changes``, ``GET /v1/snapshot``): the change log's
revisions as the log stores them, and the engine's whole state at one revision, for
services that keep a replica or a cache of their own.

The snapshot is read in one transaction that sees one committed state (REPEATABLE READ
on PostgreSQL; a SQLite read transaction already does), so its revision and its rows
agree: following the feed from that revision applies every later change exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.db.models import CasbinRule, Grant, PolicyChange, User, UserStatus, Workspace
from gateway.engine.engine import stored_rows
from gateway.engine.rules import GrantKey, grant_rule
from gateway.replication.sync import committed_revision

# Revisions in one answer of the feed, at most.
MAX_REVISIONS = 1000


def _domain(ptype: str, values: Sequence[str]) -> str | None:
    """The workspace (or pattern) a rule applies in: ``p`` rules name it second, ``g``
    rules third; None for anything else (kept: Casbin ignores it anyway)."""
    index = {"p": 1, "g": 2}.get(ptype)
    return values[index] if index is not None and len(values) > index else None


def in_scope(workspaces: frozenset[str] | None, ptype: str, values: Sequence[str]) -> bool:
    """Whether a rule may decide anything in ``workspaces`` (None: every workspace): its
    workspace is one of them, or a pattern (``*``: every workspace)."""
    if workspaces is None:
        return True
    domain = _domain(ptype, values)
    return domain is None or domain in workspaces or "*" in domain


def scoped(
    workspaces: frozenset[str] | None, entries: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """A revision's entries that matter to ``workspaces``: their rules (and the rules of
    every workspace, ``*``), their creation or deletion, and every person's status and
    removal (people are installation-wide: a grant in ``*`` names them too)."""
    if workspaces is None:
        return entries
    kept = []
    for entry in entries:
        kind = entry.get("type")
        if kind in ("rule_added", "rule_removed", "expiry"):
            if not in_scope(workspaces, str(entry["ptype"]), entry["values"]):
                continue
        elif kind in ("workspace_added", "workspace_removed") and entry["slug"] not in workspaces:
            continue
        kept.append(entry)
    return kept


@dataclass(frozen=True)
class Changes:
    """Revisions ``since+1 ..`` as logged: ``(revision, entries)`` in order, ``head`` the
    committed revision when read. ``pruned`` when the log no longer holds ``since+1``
    (start again from a snapshot)."""

    since: int
    head: int
    revisions: list[tuple[int, list[dict[str, Any]]]]
    pruned: bool = False

    @property
    def revision(self) -> int:
        """The revision a follower holds after applying these."""
        return self.revisions[-1][0] if self.revisions else self.since


def changes_after(
    session: Session,
    since: int,
    limit: int = MAX_REVISIONS,
    workspaces: frozenset[str] | None = None,
) -> Changes:
    """The logged revisions after ``since``, at most ``limit`` of them; with
    ``workspaces``, each revision's entries that matter there (every revision is listed,
    empty or not, so that a follower's revision keeps step)."""
    head = committed_revision(session)
    upto = min(head, since + limit)
    if upto <= since:
        return Changes(since, head, [])
    rows = session.execute(
        select(PolicyChange.revision, PolicyChange.changes)
        .where(PolicyChange.revision > since, PolicyChange.revision <= upto)
        .order_by(PolicyChange.revision)
    ).all()
    if not rows or rows[0][0] != since + 1:
        return Changes(since, head, [], pruned=True)
    # Revisions commit in order (gateway.replication.changelog.read_after): the rows are
    # contiguous from the first.
    return Changes(
        since, head, [(int(r), scoped(workspaces, list(entries))) for r, entries in rows]
    )


def snapshot(session: Session, workspaces: frozenset[str] | None = None) -> dict[str, Any]:
    """Everything the engine knows (with ``workspaces``: what decides there, as
    :func:`scoped` says), at one revision: ``revision``, ``rules`` as
    ``[ptype, *values]`` (the ``casbin_rule`` table, as the adapter reads it),
    ``subjects`` (``user_id``, ``email``, ``active``: the people a check can name, not
    invitations' placeholders), ``workspaces`` and ``expiries`` (the end times of
    time-limited grants, in the change log's ``expiry`` form)."""
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    revision = committed_revision(session)
    return {
        "revision": revision,
        "rules": [list(row) for row in _rules(session) if in_scope(workspaces, row[0], row[1:])],
        "subjects": [
            {"user_id": user_id, "email": email, "active": status == UserStatus.ACTIVE}
            for user_id, email, status in session.execute(
                select(User.id, User.email, User.status).order_by(User.id)
            )
            if status != UserStatus.PENDING
        ],
        "workspaces": sorted(
            slug
            for slug in session.scalars(select(Workspace.slug))
            if workspaces is None or slug in workspaces
        ),
        "expiries": [
            {
                "type": "expiry",
                "ptype": rule.ptype,
                "values": list(rule.values),
                "at": expires_at.isoformat(),
            }
            for user_id, role, workspace, expires_at in session.execute(
                select(Grant.user_id, Grant.role, Grant.workspace_slug, Grant.expires_at).where(
                    Grant.expires_at.is_not(None)
                )
            )
            if expires_at is not None
            for rule in (grant_rule(GrantKey(user_id, role, workspace)),)
            if in_scope(workspaces, rule.ptype, rule.values)
        ],
    }


def _rules(session: Session) -> Iterator[tuple[str, ...]]:
    columns = (CasbinRule.v0, CasbinRule.v1, CasbinRule.v2, CasbinRule.v3, CasbinRule.v4)
    rows = session.execute(
        select(CasbinRule.ptype, *columns, CasbinRule.v5)
        .order_by(CasbinRule.id)
        .execution_options(yield_per=50_000)
    )
    return stored_rows(rows)
