"""Reading the audit trail (events are written by the unit of work of each change, and
chained by :mod:`gateway.audit.chain`): filtered pages with an opaque cursor, exports,
verification and retention."""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from gateway.audit.chain import (
    RECORD_FIELDS,
    Archived,
    Verification,
    archive_older_than,
    record,
    verify_database,
)
from gateway.db.models import AuditEvent, utcnow
from gateway.errors import InvalidInput
from gateway.services.base import Actor, Authorizer, Page
from gateway.services.permissions import Permission


@dataclass(frozen=True)
class AuditFilter:
    actor_id: int | None = None
    target_type: str | None = None
    target_id: str | None = None
    workspace: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    # Part of the recorded actor name or email, any case: finds people removed since.
    actor: str | None = None
    actor_client_id: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class CursorPage:
    items: list[AuditEvent]
    next_cursor: str | None  # None: this is the last page
    total: int


CURSOR_PREFIX = "audit1:"
EXPORT_BATCH = 500
# Spreadsheets run a cell starting with one of these as a formula (CSV injection); such
# cells get a leading apostrophe, and so does one that starts with an apostrophe, so that
# stripping one apostrophe always gives the value back.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


def encode_cursor(event_id: int) -> str:
    raw = f"{CURSOR_PREFIX}{event_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if raw.startswith(CURSOR_PREFIX) and raw[len(CURSOR_PREFIX) :].isdecimal():
            event_id = int(raw[len(CURSOR_PREFIX) :])
            if event_id <= 2**31:
                return event_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise InvalidInput("The cursor is not valid; start again without one", errors={"cursor": []})


def csv_cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        value = json.dumps(value, sort_keys=True, ensure_ascii=False)
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return "" if value is None else value


def csv_value(cell: str) -> str:
    """The value :func:`csv_cell` wrote (for readers of the export)."""
    return cell[1:] if cell.startswith("'") else cell


class AuditService:
    def __init__(self, session: Session, authorizer: Authorizer) -> None:
        self.session = session
        self.authorizer = authorizer

    def _query(self, actor: Actor, where: AuditFilter) -> Select[Any]:
        query = select(AuditEvent)
        readable = self.authorizer.workspaces_where(actor, Permission.AUDIT_READ)
        if readable is not None:
            # Events outside any workspace (logins, policy applies) need global audit:read.
            query = query.where(AuditEvent.workspace.in_(readable))
        if where.actor_id is not None:
            query = query.where(AuditEvent.actor_id == where.actor_id)
        if where.actor:
            query = query.where(
                func.lower(AuditEvent.actor_name).contains(where.actor.lower(), autoescape=True)
            )
        if where.actor_client_id:
            query = query.where(AuditEvent.actor_client_id == where.actor_client_id)
        if where.request_id:
            query = query.where(AuditEvent.request_id == where.request_id)
        if where.target_type:
            query = query.where(AuditEvent.target_type == where.target_type)
        if where.target_id:
            query = query.where(AuditEvent.target_id == where.target_id)
        if where.workspace:
            query = query.where(AuditEvent.workspace == where.workspace)
        if where.action:
            # "user" matches user.deactivated, user.removed, ...
            query = query.where(
                or_(
                    AuditEvent.action == where.action,
                    AuditEvent.action.startswith(f"{where.action}.", autoescape=True),
                )
            )
        if where.since:
            query = query.where(AuditEvent.at >= where.since)
        if where.until:
            query = query.where(AuditEvent.at < where.until)
        return query

    def _count(self, query: Select[Any]) -> int:
        return self.session.scalar(select(func.count()).select_from(query.subquery())) or 0

    def list(self, actor: Actor, where: AuditFilter, offset: int, limit: int) -> Page[AuditEvent]:
        """Events matching ``where`` in the workspaces ``actor`` may audit, newest first
        (numbered pages; :meth:`page` is the cursor form)."""
        query = self._query(actor, where)
        items = self.session.scalars(
            query.order_by(AuditEvent.id.desc()).offset(offset).limit(limit)
        ).all()
        return Page(items, self._count(query))

    def page(self, actor: Actor, where: AuditFilter, cursor: str | None, limit: int) -> CursorPage:
        """Up to ``limit`` events matching ``where`` that ``actor`` may audit, newest
        first, after ``cursor`` (from the previous page). Stable while events are added:
        a cursor is a position in the chain, not a page number."""
        query = self._query(actor, where)
        total = self._count(query)
        if cursor:
            query = query.where(AuditEvent.id < decode_cursor(cursor))
        rows = list(self.session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit + 1)))
        more = len(rows) > limit
        items = rows[:limit]
        return CursorPage(items, encode_cursor(items[-1].id) if more and items else None, total)

    def actions(self, actor: Actor) -> tuple[str, ...]:
        """The actions of the events ``actor`` may audit, by name: a filter's choices."""
        query = self._query(actor, AuditFilter()).with_only_columns(AuditEvent.action)
        return tuple(self.session.scalars(query.distinct().order_by(AuditEvent.action)))

    def export(self, actor: Actor, where: AuditFilter) -> Iterator[dict[str, Any]]:
        """Every event matching ``where`` that ``actor`` may audit, oldest first, as
        records with their hashes (read in batches, so any size streams). Who may read
        what is settled now, before the first record is read."""
        return self._stream(self._query(actor, where))

    def _stream(self, query: Select[Any]) -> Iterator[dict[str, Any]]:
        after = 0
        while True:
            batch = list(
                self.session.scalars(
                    query.where(AuditEvent.id > after).order_by(AuditEvent.id).limit(EXPORT_BATCH)
                )
            )
            if not batch:
                return
            for audit_event in batch:
                yield record(audit_event)
                self.session.expunge(audit_event)
            after = batch[-1].id

    # -- the operator's side (the CLI and the scheduler; no actor) ----------------------

    def verify(self) -> Verification:
        """Walk the stored chain from its anchor to its head: the first broken link."""
        try:
            return verify_database(self.session)
        finally:
            self.session.rollback()

    def archive(self, retention_days: int, directory: Path) -> Archived | None:
        """Move events older than ``retention_days`` to a JSON Lines file in
        ``directory`` and delete them (the chain's anchor moves to the last one)."""
        if retention_days <= 0:
            return None
        return archive_older_than(
            self.session, utcnow() - timedelta(days=retention_days), directory
        )


def jsonl_lines(records: Iterator[dict[str, Any]]) -> Iterator[str]:
    for item in records:
        yield json.dumps(item, ensure_ascii=False) + "\n"


def csv_lines(records: Iterator[dict[str, Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(RECORD_FIELDS)
    for item in records:
        writer.writerow([csv_cell(item[name]) for name in RECORD_FIELDS])
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
