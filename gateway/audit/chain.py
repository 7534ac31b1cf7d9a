"""The audit trail's tamper evidence: a hash chain over the ``audit_events`` table.

Every event carries ``prev_hash`` (the hash of the event before it) and ``hash``, the
SHA-256 of a canonical JSON of its own fields and ``prev_hash``. Changing any stored
field, deleting an event or reordering events breaks the chain at that event, and
:func:`verify_database` names it. The chain is extended in exactly one place, a
``before_flush`` hook on every SQLAlchemy session, so that no code path can add an
event outside it (the hook writes the events itself, with the head's move); the single
``audit_chain`` row is its head (and its lock) and its anchor (where the stored chain
starts once retention archived older events).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, delete, event, exists, func, insert, select, text, update
from sqlalchemy.inspection import inspect
from sqlalchemy.orm import Session

from gateway.db.models import AuditChain, AuditEvent, utcnow

GENESIS = "0" * 64
CHAIN_ROW = 1
# The fields a hash covers, in the order exports show them. Adding a column to
# audit_events means adding it here too (and a new chain format for older events).
HASHED_FIELDS = (
    "id",
    "at",
    "actor_id",
    "actor_client_id",
    "actor_name",
    "action",
    "target_type",
    "target_id",
    "target_name",
    "workspace",
    "before",
    "after",
    "revision",
    "request_id",
    "source_address",
    "reason",
)
RECORD_FIELDS = (*HASHED_FIELDS, "prev_hash", "hash")
# The session setting that lets the retention job delete archived events on PostgreSQL
# (the trigger of migration 0006 refuses every other UPDATE and DELETE).
RETENTION_SETTING = "ringfence.audit_retention"
# Keys of Session.info: the chain head before this transaction's first append, and now.
HEAD_FROM = "ringfence.audit_head_from"
HEAD_TO = "ringfence.audit_head_to"
# Key of Session.info: the chain row as a statement of this transaction locked it and
# returned it (see lock_after), for the next append to use instead of locking again.
LOCKED = "ringfence.audit_chain_locked"


def format_time(value: datetime) -> str:
    """The one text form of an event's time (hashed, exported): UTC, microseconds."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def canonical(fields: dict[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the same bytes for the same values whichever
    database stored them (JSON columns come back as plain dicts and lists)."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compute_hash(fields: dict[str, Any], prev_hash: str) -> str:
    hashed = {name: fields.get(name) for name in HASHED_FIELDS}
    return hashlib.sha256(canonical({**hashed, "prev_hash": prev_hash})).hexdigest()


def record(event: AuditEvent) -> dict[str, Any]:
    """An event as a JSON-safe dict: what exports and archives hold, hash included."""
    values = {name: getattr(event, name) for name in RECORD_FIELDS}
    values["at"] = format_time(event.at)
    return values


# -- appending -------------------------------------------------------------------------


# Built once: every append runs a lock and the move, and building a statement (its
# cache key too) each time costs half as much again as running it. The lock is a
# locking read on PostgreSQL, a no-op UPDATE on SQLite (see lock_chain).
_LOCK_FOR_UPDATE = (
    select(*AuditChain.__table__.c).where(AuditChain.id == CHAIN_ROW).with_for_update()
)
_LOCK = (
    update(AuditChain)
    .where(AuditChain.id == CHAIN_ROW)
    .values(head_id=AuditChain.head_id)
    .returning(*AuditChain.__table__.c)
)
_MOVE_HEAD = (
    update(AuditChain)
    .where(AuditChain.id == CHAIN_ROW)
    .values(head_id=bindparam("new_id"), head_hash=bindparam("new_hash"))
)
# An event's values are bound as ``event_<column>``: the statement's parameter names
# must not be columns of audit_chain, or the head's UPDATE would take them as values to
# set too (a compiled statement sets the columns its parameters name).
_EVENT_COLUMNS = tuple(AuditEvent.__table__.c)
_INSERT = insert(AuditEvent).values(
    {column.key: bindparam(f"event_{column.key}", type_=column.type) for column in _EVENT_COLUMNS}
)
# One event (nearly every change) and the head's move in one statement on PostgreSQL: a
# round trip less under the revision's lock, which every change waits for. SQLite has
# no data-modifying CTE: the move, then the insert.
_INSERT_AND_MOVE_HEAD = _INSERT.add_cte(_MOVE_HEAD.cte("moved_head"))
# Each column's attribute, parameter and the value the ORM's INSERT gives it when the
# attribute was never set (its scalar default; ``at`` is always set, by the chain).
_BINDS = tuple(
    (
        column.key,
        f"event_{column.key}",
        column.default.arg if column.default is not None and column.default.is_scalar else None,
    )
    for column in _EVENT_COLUMNS
)


def lock_chain(session: Session) -> Any:
    """Take the chain's lock for the rest of the transaction; its head and anchor.

    On PostgreSQL ``SELECT ... FOR UPDATE`` of the chain row: it holds the row lock until
    commit, so a second transaction appending at the same moment waits here and then
    (READ COMMITTED: a locking read that waited for a row returns the version that
    committed) gets the head the first one wrote, instead of chaining onto the same event
    and forking the chain. On SQLite, which has no such lock, a no-op UPDATE (its
    RETURNING the row as locked): the write makes this transaction the one writer, and
    SQLite admits one writer at a time. (The UPDATE would do on PostgreSQL too, but it
    writes a new version of the row each time.)"""
    connection = session.connection()
    lock = _LOCK_FOR_UPDATE if connection.dialect.name == "postgresql" else _LOCK
    locked = connection.execute(lock).one_or_none()
    if locked is None:
        raise RuntimeError("the audit chain row is missing; run `ringfence db upgrade`")
    return locked


def lock_after(cte: Any) -> Any:
    """The chain's lock as a CTE of a statement that takes another lock first, ``cte``
    (a CTE of one row): the chain row, locked, for :func:`note_locked`.

    A change takes the revision's lock and, to chain its audit events, this one: one
    statement for both saves a round trip under the revision's lock (gateway.replication
    .changelog). Requiring a row of ``cte`` makes its lock come first (the chain row is
    only read once ``cte`` has produced its own), the order every change takes them in,
    so that two changes cannot each hold one and wait for the other. PostgreSQL only:
    ``SELECT ... FOR UPDATE``, which waits as the UPDATE does and then returns the row
    as the other transaction committed it, but writes no new version of the row (10% of
    a SCIM creation's database CPU, measured side by side)."""
    return _LOCK_FOR_UPDATE.where(exists(select(cte.c[0]))).cte("chain_locked")


def note_locked(session: Session, locked: Any) -> None:
    """The chain row a statement of this transaction locked (:func:`lock_after`): the
    next append chains onto it without locking again."""
    session.info[LOCKED] = locked


def _chain_new_events(session: Session, _flush_context: Any, _instances: Any) -> None:
    new = [obj for obj in session.new if isinstance(obj, AuditEvent)]
    if not new:
        return
    head = session.info.pop(LOCKED, None) or lock_chain(session)
    head_id, head_hash = head.head_id, head.head_hash
    rows = []
    # Ids come from the chain head under its lock (not from the table's sequence), so
    # that id order is chain order and the hash can cover the id.
    for audit_event in sorted(new, key=lambda obj: inspect(obj).insert_order or 0):
        head_id += 1
        audit_event.id = head_id
        audit_event.at = (audit_event.at or utcnow()).astimezone(UTC)
        audit_event.prev_hash = head_hash
        audit_event.hash = compute_hash(record_fields(audit_event), head_hash)
        head_hash = audit_event.hash
        rows.append(_row(audit_event))
    _append(session.connection(), rows, head_id, head_hash)
    # Written: the events leave the session, so that its flush does not insert them
    # again; they stay the caller's objects, ids and hashes set. (Kept in the session as
    # if loaded, a rolled-back transaction would leave them in its identity map, and the
    # next event given the same id by the restored head could not be added.)
    for audit_event in new:
        session.expunge(audit_event)
    # Where the head was when this transaction first appended, and where it is now: the
    # signed checkpoints (gateway.services.checkpoints) read it before COMMIT.
    session.info.setdefault(HEAD_FROM, head.head_id)
    session.info[HEAD_TO] = (head_id, head_hash)


def _row(audit_event: AuditEvent) -> dict[str, Any]:
    """The event's values as ``_INSERT`` binds them: what the ORM would insert."""
    values = vars(audit_event)
    return {name: values.get(key, default) for key, name, default in _BINDS}


def _append(connection: Any, rows: list[dict[str, Any]], head_id: int, head_hash: str) -> None:
    """Insert the chained ``rows`` and move the chain's head to the last of them."""
    moved = {"new_id": head_id, "new_hash": head_hash}
    if len(rows) == 1 and connection.dialect.name == "postgresql":
        connection.execute(_INSERT_AND_MOVE_HEAD, {**rows[0], **moved})
        return
    connection.execute(_MOVE_HEAD, moved)
    connection.execute(_INSERT, rows)


def record_fields(audit_event: AuditEvent) -> dict[str, Any]:
    values = {name: getattr(audit_event, name) for name in HASHED_FIELDS}
    values["at"] = format_time(audit_event.at)
    return values


def head_moved(session: Session) -> tuple[int, int, str] | None:
    """``(head id before, head id now, head hash now)`` if this session's transaction
    appended events, else None."""
    moved = session.info.get(HEAD_TO)
    if moved is None:
        return None
    return session.info[HEAD_FROM], moved[0], moved[1]


def _forget_head(session: Session, *_args: Any) -> None:
    session.info.pop(HEAD_FROM, None)
    session.info.pop(HEAD_TO, None)
    session.info.pop(LOCKED, None)


event.listen(Session, "before_flush", _chain_new_events)
event.listen(Session, "after_commit", _forget_head)
event.listen(Session, "after_rollback", _forget_head)


# -- verifying -------------------------------------------------------------------------


@dataclass
class Verification:
    """The outcome of walking (part of) the chain."""

    checked: int = 0
    first_id: int | None = None
    last_id: int | None = None
    start_hash: str = GENESIS  # the prev_hash the walk started from (an anchor)
    end_hash: str = GENESIS
    broken_id: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


class ChainWalker:
    """Checks events one by one in chain order; stops at the first broken link."""

    def __init__(self, start_id: int, start_hash: str, where: str = "") -> None:
        self.result = Verification(start_hash=start_hash, end_hash=start_hash)
        self.prev_id = start_id
        self.where = where

    def add(self, fields: dict[str, Any], prev_hash: str, stored_hash: str) -> bool:
        """False (and the problem recorded) at the first broken link."""
        result = self.result
        event_id = fields.get("id")
        recomputed = compute_hash(fields, prev_hash)
        problem = None
        if recomputed != stored_hash:
            problem = (
                f"its content does not match its hash (a field was changed): stored hash "
                f"{stored_hash}, recomputed {recomputed}"
            )
        elif prev_hash != result.end_hash:
            previous = f"event {self.prev_id}" if self.prev_id else "the chain's start"
            problem = f"its prev_hash {prev_hash} is not the hash of {previous} ({result.end_hash})"
            if isinstance(event_id, int) and event_id > self.prev_id + 1:
                problem += f": events {self.prev_id + 1}..{event_id - 1} are missing"
            else:
                problem += ": events were removed, inserted or reordered"
        elif isinstance(event_id, int) and event_id <= self.prev_id:
            problem = f"its id is not after event {self.prev_id}'s: events were reordered"
        if problem:
            result.broken_id = event_id if isinstance(event_id, int) else None
            result.problem = f"{self.where}event {event_id}: {problem}"
            return False
        result.checked += 1
        result.first_id = result.first_id if result.first_id is not None else event_id
        result.last_id = event_id
        result.end_hash = stored_hash
        if isinstance(event_id, int):
            self.prev_id = event_id
        return True


def iter_events(session: Session, after_id: int = 0, batch: int = 1000) -> Iterator[AuditEvent]:
    """Every event after ``after_id`` in chain order, read in batches (keyset)."""
    while True:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.id > after_id).order_by(AuditEvent.id).limit(batch)
        ).all()
        if not rows:
            return
        for row in rows:
            yield row
            session.expunge(row)  # a long walk must not keep every event in memory
        after_id = rows[-1].id


def verify_database(session: Session) -> Verification:
    """Walk the stored chain from its anchor to its head; the first broken link."""
    chain = session.get(AuditChain, CHAIN_ROW)
    if chain is None:
        return Verification(problem="the audit chain row is missing (was it deleted?)")
    walker = ChainWalker(chain.anchor_id, chain.anchor_hash)
    head_id, head_hash, anchor_id = chain.head_id, chain.head_hash, chain.anchor_id
    for audit_event in iter_events(session, after_id=0):
        if audit_event.id <= anchor_id:
            walker.result.broken_id = audit_event.id
            walker.result.problem = (
                f"event {audit_event.id}: it is at or before the archive anchor (event "
                f"{anchor_id}), which should have removed it"
            )
            return walker.result
        if not walker.add(record_fields(audit_event), audit_event.prev_hash, audit_event.hash):
            return walker.result
    result = walker.result
    end_id = result.last_id if result.last_id is not None else anchor_id
    if end_id != head_id or result.end_hash != head_hash:
        result.broken_id = end_id + 1 if end_id < head_id else end_id
        result.problem = (
            f"event {result.broken_id}: not found; the chain ends at event {end_id} (hash "
            f"{result.end_hash}) but its head is event {head_id} (hash {head_hash}): the "
            "newest events were removed"
        )
    return result


def verify_records(
    records: Iterable[dict[str, Any]],
    start_hash: str | None = None,
    where: str = "",
) -> Verification:
    """Walk exported or archived records (JSON Lines) in file order. Without
    ``start_hash`` the first record's prev_hash is taken as the anchor."""
    walker: ChainWalker | None = None
    for item in records:
        if walker is None:
            first_id = item.get("id")
            walker = ChainWalker(
                first_id - 1 if isinstance(first_id, int) else 0,
                start_hash if start_hash is not None else str(item.get("prev_hash")),
                where,
            )
        if not walker.add(item, str(item.get("prev_hash")), str(item.get("hash"))):
            return walker.result
    if walker is None:
        return Verification(start_hash=start_hash or GENESIS, end_hash=start_hash or GENESIS)
    return walker.result


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from exc


# -- retention ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Archived:
    path: Path
    count: int
    first_id: int
    last_id: int
    anchor_hash: str


def archive_older_than(session: Session, cutoff: datetime, directory: Path) -> Archived | None:
    """Write the events older than ``cutoff`` (a prefix of the chain) to a JSON Lines
    file in ``directory``, then delete them and record the last one's hash as the new
    anchor, so that what stays verifies on its own and the file verifies up to it.
    None when there is nothing to archive."""
    chain = session.get(AuditChain, CHAIN_ROW)
    if chain is None:
        raise RuntimeError("the audit chain row is missing; run `ringfence db upgrade`")
    start_id, start_hash = chain.anchor_id, chain.anchor_hash
    first_kept = session.scalar(
        select(func.min(AuditEvent.id)).where(AuditEvent.at >= cutoff, AuditEvent.id > start_id)
    )
    last_id = first_kept - 1 if first_kept is not None else chain.head_id
    session.rollback()
    if last_id <= start_id:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    # Written without the chain's lock (archived events never change), so changes are not
    # held up while the file is written; the lock is taken only to move the anchor.
    walker = ChainWalker(start_id, start_hash)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".audit-", suffix=".part")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            for audit_event in iter_events(session, after_id=start_id):
                if audit_event.id > last_id:
                    break
                item = record(audit_event)
                if not walker.add(record_fields(audit_event), item["prev_hash"], item["hash"]):
                    raise ChainBroken(walker.result)
                out.write(json.dumps(item, ensure_ascii=False, sort_keys=False) + "\n")
            out.flush()
            os.fsync(out.fileno())
        result = walker.result
        if result.last_id != last_id:
            raise ChainBroken(
                Verification(problem=f"events up to {last_id} could not all be read back")
            )
        path = directory / f"audit-{result.first_id:010d}-{last_id:010d}.jsonl"
        os.replace(temporary, path)
    except BaseException:
        session.rollback()
        Path(temporary).unlink(missing_ok=True)
        raise
    try:
        locked = lock_chain(session)
        if locked.anchor_id != start_id:
            raise RuntimeError("another archive run moved the anchor meanwhile; try again")
        session.execute(
            update(AuditChain)
            .where(AuditChain.id == CHAIN_ROW)
            .values(anchor_id=last_id, anchor_hash=result.end_hash, anchored_at=utcnow())
        )
        if session.get_bind().dialect.name == "postgresql":
            # Local to this transaction: the append-only trigger lets only these deletes
            # through, and only of events at or before the anchor just recorded.
            session.execute(
                text("SELECT set_config(:name, 'on', true)"), {"name": RETENTION_SETTING}
            )
        session.execute(delete(AuditEvent).where(AuditEvent.id <= last_id))
        session.commit()
    except BaseException:
        session.rollback()
        path.unlink(missing_ok=True)
        raise
    return Archived(path, result.checked, result.first_id or last_id, last_id, result.end_hash)


class ChainBroken(Exception):
    def __init__(self, verification: Verification) -> None:
        super().__init__(verification.problem)
        self.verification = verification
