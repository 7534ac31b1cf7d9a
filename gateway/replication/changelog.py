"""The change log: each revision's engine changes as plain JSON, stored in
``policy_changes`` in the revision's own transaction, so that replicas can apply the
revisions they missed in order instead of reloading everything.

The encoding is a list of objects with a ``type`` and the change's fields; decoding is
strict (an unknown type raises), and a replica that cannot decode a revision reloads.
Besides the engine's changes a revision may carry the end times of grants' rules
(``expiry``) and the mark that it ended service tokens (``tokens_ended``: a client deleted,
a token revoked, a key retired), on which every replica forgets the tokens it remembers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import bindparam, delete, func, insert, select, true, update
from sqlalchemy.orm import Session

from gateway.audit import chain
from gateway.db.models import PolicyChange, PolicyState, utcnow
from gateway.engine.engine import (
    Change,
    RuleAdded,
    RuleRemoved,
    SubjectChanged,
    SubjectRemoved,
    WorkspaceAdded,
    WorkspaceRemoved,
)
from gateway.engine.rules import Rule

# How many revisions the log keeps; a replica further behind reloads in full.
KEEP_REVISIONS = 10_000
# Pruning runs in one of this many revisions' transactions (cheap, and never in a hot loop).
PRUNE_EVERY = 100


def encode_change(change: Change) -> dict[str, Any]:
    match change:
        case RuleAdded(rule):
            return {"type": "rule_added", "ptype": rule.ptype, "values": list(rule.values)}
        case RuleRemoved(rule):
            return {"type": "rule_removed", "ptype": rule.ptype, "values": list(rule.values)}
        case SubjectChanged(user_id, email, active):
            return {"type": "subject_changed", "user_id": user_id, "email": email, "active": active}
        case SubjectRemoved(user_id, email):
            return {"type": "subject_removed", "user_id": user_id, "email": email}
        case WorkspaceAdded(slug):
            return {"type": "workspace_added", "slug": slug}
        case WorkspaceRemoved(slug):
            return {"type": "workspace_removed", "slug": slug}
    raise TypeError(f"not an engine change: {change!r}")


def decode_change(data: dict[str, Any]) -> Change:
    kind = data["type"]
    if kind in ("rule_added", "rule_removed"):
        rule = Rule(str(data["ptype"]), tuple(str(v) for v in data["values"]))
        return RuleAdded(rule) if kind == "rule_added" else RuleRemoved(rule)
    if kind == "subject_changed":
        return SubjectChanged(int(data["user_id"]), str(data["email"]), bool(data["active"]))
    if kind == "subject_removed":
        return SubjectRemoved(int(data["user_id"]), str(data["email"]))
    if kind == "workspace_added":
        return WorkspaceAdded(str(data["slug"]))
    if kind == "workspace_removed":
        return WorkspaceRemoved(str(data["slug"]))
    raise ValueError(f"unknown change type {kind!r}")


Expiry = tuple[Rule, datetime | None]
TOKENS_ENDED = "tokens_ended"
# Entries that are not engine changes.
_NOT_CHANGES = frozenset({"expiry", TOKENS_ENDED})


class Logged(NamedTuple):
    """One revision as the log holds it."""

    revision: int
    changes: list[Change]
    expiries: list[Expiry]
    tokens_ended: bool


def encode(
    changes: Iterable[Change], expiries: Iterable[Expiry] = (), tokens_ended: bool = False
) -> list[dict[str, Any]]:
    """The changes, then the end times the revision gave to grants' rules (the in-memory
    expiry schedule of every replica needs them, see gateway/engine/expiry.py), then whether it
    ended service tokens (every replica's decision token cache must hear of it)."""
    entries = [encode_change(c) for c in changes]
    for rule, at in expiries:
        entries.append(
            {
                "type": "expiry",
                "ptype": rule.ptype,
                "values": list(rule.values),
                "at": None if at is None else at.isoformat(),
            }
        )
    if tokens_ended:
        entries.append({"type": TOKENS_ENDED})
    return entries


def decode(data: Sequence[dict[str, Any]]) -> list[Change]:
    return [decode_change(d) for d in data if d["type"] not in _NOT_CHANGES]


def decode_tokens_ended(data: Sequence[dict[str, Any]]) -> bool:
    return any(d["type"] == TOKENS_ENDED for d in data)


def decode_expiries(data: Sequence[dict[str, Any]]) -> list[Expiry]:
    return [
        (
            Rule(str(d["ptype"]), tuple(str(v) for v in d["values"])),
            None if d["at"] is None else datetime.fromisoformat(d["at"]),
        )
        for d in data
        if d["type"] == "expiry"
    ]


class Taken(NamedTuple):
    """A change's revision, and the revisions others committed since ``known`` (the
    revision the caller's engine had) as the same statement read them: None when they
    were not read (SQLite) or not all of them were visible to it."""

    revision: int
    before: list[Logged] | None


def record_next(
    session: Session,
    changes: Sequence[Change],
    expiries: Sequence[Expiry] = (),
    tokens_ended: bool = False,
    *,
    audited: bool,
    known: int,
) -> Taken:
    """Take the next revision and add its changes to the log, in the caller's
    transaction (every revision gets a row, even an empty one, so that a missing row
    always means "pruned").

    Taking it (``UPDATE policy_state ... RETURNING``) holds the row's lock until COMMIT,
    so concurrent writers get distinct, increasing revisions in commit order. On
    PostgreSQL the row of the log is written by the same statement (a data-modifying
    CTE: one round trip, under that lock, fewer), and so is the audit chain's lock taken
    when the change has events to chain (``audited``: gateway.audit.chain.lock_after);
    SQLite has no such CTE: two statements, and the chain locks at the events' flush.
    All go through Core, built once (no session object holds them).

    On PostgreSQL the statement also reads the revisions after ``known`` that others
    committed (with two workers, nearly every change follows the other's), so that the
    engine applies them after COMMIT without another read. Its snapshot is taken when
    it starts: a revision committed while it waited for the lock is not in it, and the
    caller, seeing a revision missing, reads the log after all."""
    connection = session.connection()
    values = {
        "changes": encode(changes, expiries, tokens_ended),
        "created_at": utcnow(),
        "known": known,
    }
    if connection.dialect.name == "postgresql":
        statement = _TAKE_LOG_AND_LOCK_CHAIN if audited else _TAKE_AND_LOG_READ
        taken = connection.execute(statement, values).one_or_none()
        if taken is None:
            raise RuntimeError("the audit chain row is missing; run `ringfence db upgrade`")
        if audited:
            chain.note_locked(session, taken)
        revision = int(taken.revision)
        # known+1 .. revision-1, or None if one is missing (committed while it waited)
        before = _decoded(sorted(taken.missed or []), known, revision - 1)
    else:
        revision = int(connection.execute(_TAKE).scalar_one())
        connection.execute(_LOG, {**values, "revision": revision})
        before = None
    if revision % PRUNE_EVERY == 0 and revision > KEEP_REVISIONS:
        oldest_kept = revision - KEEP_REVISIONS
        session.execute(delete(PolicyChange).where(PolicyChange.revision <= oldest_kept))
    return Taken(revision, before)


# Built once: every change runs them.
_TAKE = (
    update(PolicyState)
    .where(PolicyState.id == 1)
    .values(revision=PolicyState.revision + 1)
    .returning(PolicyState.revision)
)
_CHANGES = bindparam("changes", type_=PolicyChange.changes.type)
_CREATED_AT = bindparam("created_at", type_=PolicyChange.created_at.type)
_LOG = insert(PolicyChange).values(
    revision=bindparam("revision"), changes=_CHANGES, created_at=_CREATED_AT
)
_TAKEN = _TAKE.cte("taken")
_TAKE_AND_LOG = (
    insert(PolicyChange)
    .from_select(
        ["revision", "changes", "created_at"], select(_TAKEN.c.revision, _CHANGES, _CREATED_AT)
    )
    .returning(PolicyChange.revision)
)
_LOGGED_NOW = _TAKE_AND_LOG.cte("logged")
_LOG_TABLE = PolicyChange.__table__
# At most this many of others' revisions are read with a change (under the revision's
# lock): an engine further behind reads the log after COMMIT, as before.
READ_WITH_CHANGE = 16
# The revisions after the caller's (``known``) before the one taken, as the statement's
# snapshot holds them: [[revision, changes], ...] or NULL.
_MISSED = (
    select(func.json_agg(func.json_build_array(_LOG_TABLE.c.revision, _LOG_TABLE.c.changes)))
    .where(
        _LOG_TABLE.c.revision > bindparam("known"),
        _LOG_TABLE.c.revision < _TAKEN.c.revision,
        _TAKEN.c.revision - bindparam("known") <= READ_WITH_CHANGE + 1,
    )
    .scalar_subquery()
    .label("missed")
)
_TAKE_AND_LOG_READ = select(_LOGGED_NOW.c.revision, _MISSED)
_CHAIN_LOCKED = chain.lock_after(_TAKEN)
# The same, and the chain row as locked (the columns gateway.audit.chain.lock_chain
# returns).
_TAKE_LOG_AND_LOCK_CHAIN = select(_LOGGED_NOW.c.revision, _MISSED, *_CHAIN_LOCKED.c).select_from(
    _LOGGED_NOW.join(_CHAIN_LOCKED, true())
)

# Built once, run through Core (each change of a process reads the revisions another
# committed since its last, when there are several): building the statement and going
# through the ORM cost more than running it.
_LOGGED = PolicyChange.__table__
_ALL_AFTER = (
    select(_LOGGED.c.revision, _LOGGED.c.changes)
    .where(_LOGGED.c.revision > bindparam("after"))
    .order_by(_LOGGED.c.revision)
)
_AFTER_UPTO = _ALL_AFTER.where(_LOGGED.c.revision <= bindparam("upto"))


def read_after(session: Session, after: int, upto: int | None = None) -> list[Logged] | None:
    """Revisions ``after+1 .. upto`` (every logged one when ``upto`` is None) with their
    changes, in order; None if one is missing from the log (pruned, or written before
    the log existed) or cannot be decoded.

    Revisions commit in order (the revision bump holds the ``policy_state`` row lock
    until commit), so when revision N is visible, every revision before it is too."""
    if upto is not None and upto <= after:
        return []
    if upto is None:
        rows = session.connection().execute(_ALL_AFTER, {"after": after}).all()
    else:
        rows = session.connection().execute(_AFTER_UPTO, {"after": after, "upto": upto}).all()
    return _decoded(rows, after, upto if upto is not None else after + len(rows))


def _decoded(rows: Sequence[Any], after: int, last: int) -> list[Logged] | None:
    """``rows`` of (revision, changes) as revisions ``after+1 .. last``; None if one is
    missing or cannot be decoded."""
    if [row[0] for row in rows] != list(range(after + 1, last + 1)):
        return None
    try:
        return [
            Logged(
                int(revision),
                decode(payload),
                decode_expiries(payload),
                decode_tokens_ended(payload),
            )
            for revision, payload in rows
        ]
    except (KeyError, TypeError, ValueError):
        return None
