"""Event streams: the audit trail sent where security teams look (SIEMs).

A stream is a destination (a webhook signed per Standard Webhooks, syslog over TCP+TLS,
or a JSON Lines file), the audit actions it wants (``user.*``, ``grant.added``, ``*``)
and its position in the trail. Installation-wide streams are the super admins' (every
event); a workspace's streams need ``event_streams:write`` there and carry only that
workspace's events.

The trail is the outbox. Every audit event is committed in its change's transaction,
and its id comes from the chain head under the chain's lock (gateway.audit.chain), so
ids are in commit order and a reader never sees a later id before an earlier one. A
stream's ``cursor`` (the last audit id it delivered or skipped) is therefore all that
delivery needs: nothing more is written in a change (no delay, no failure added to it,
nothing on the decision path), each event is delivered at least once and in order,
and replaying from an audit id is moving the cursor back.

A stream may also take sampled decisions (``decision_sample``, 0..1): a second lane,
``decision_events`` (written off the request by gateway.audit.decision_feed, ids in
commit order under their head's lock), with a cursor of its own (``decision_cursor``),
delivered after the audit events by the same claim, back-off and pause.

:class:`StreamService` is the admin side (audited); :class:`StreamDesk` the worker's
(:class:`gateway.notifier.StreamLedger`): a claim is a conditional update with a lease,
so one delivery per stream runs at a time, whatever number of workers.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import socket
import threading
import time
import weakref
from base64 import b64encode
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine, Select, and_, bindparam, event, func, or_, select, update
from sqlalchemy.orm import Session, object_session, sessionmaker
from sqlalchemy.orm.attributes import flag_modified

from gateway.audit.chain import head_moved, record
from gateway.audit.decision_feed import decision_head, prune
from gateway.config import Settings
from gateway.db.models import (
    AuditChain,
    AuditEvent,
    DecisionEvent,
    DecisionEventHead,
    EventStream,
    UTCDateTime,
    Workspace,
    utcnow,
)
from gateway.engine.rules import ALL_WORKSPACES
from gateway.errors import Conflict, InvalidInput, NotFound
from gateway.identity.security import seal, unseal
from gateway.notifier import AUDIT, DECISIONS, STREAM_KINDS, StreamBatch, address_problem
from gateway.services.base import SYSTEM, Actor, AuditTarget, Authorizer, ChangeSet, UnitOfWork
from gateway.services.permissions import Permission

ACTIVE, PAUSED = "active", "paused"
# An action pattern: an audit action (``user.created``), a prefix with ``.*``
# (``user.*``), or ``*`` for every event.
PATTERN = re.compile(r"^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?)$")
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MAX_PATTERNS = 50
MAX_STREAMS = 100  # per workspace, and installation-wide
BATCH = 200  # events per claim
SCAN = 5000  # audit events read per claim looking for matches


# What resume and replay write (gateway.services.streams.StreamService._restart).
RESTARTED = (
    "status",
    "paused_reason",
    "failures",
    "next_attempt_at",
    "claim_token",
    "claimed_until",
)


def lease(settings: Settings) -> timedelta:
    """How long a claim lasts: past it, it belongs to a dead worker and the stream is
    claimed again. A delivery starts no event after 2 timeouts (mailer.streams), and one
    event takes at most 3 (connect, send, answer), so a live one is done well before."""
    return timedelta(seconds=5 * max(0.1, settings.stream_timeout_seconds) + 10)


def matches(patterns: list[str], action: str) -> bool:
    """Whether audit ``action`` is one of ``patterns`` (``*``, exact, or ``prefix.*``)."""
    for pattern in patterns:
        if pattern == "*" or pattern == action:
            return True
        if pattern.endswith(".*") and action.startswith(pattern[:-1]):
            return True
    return False


def new_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + b64encode(secrets.token_bytes(32)).decode()


def split_host_port(target: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` of a syslog destination."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([A-Za-z0-9.-]+):(\d{1,5})", target)
    if not match:
        raise ValueError("Must be host:port (an IPv6 address in brackets)")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 < port < 65536:
        raise ValueError("The port must be between 1 and 65535")
    return host, port


def destination(kind: str, target: str) -> tuple[str, int | None]:
    """The host and port a ``kind`` stream at ``target`` connects to (file: no port);
    ValueError naming what is wrong with it."""
    if kind == "webhook":
        if len(target) > 2000:
            raise ValueError("At most 2000 characters")
        parts = urlsplit(target)
        if parts.scheme != "https":
            raise ValueError("Must be an https:// URL")
        if parts.username is not None or parts.password is not None:
            raise ValueError("Must not hold a user name or password")
        if not parts.hostname or parts.fragment:
            raise ValueError("Must name a host, without a #fragment")
        try:
            port = parts.port or 443
        except ValueError as exc:
            raise ValueError("The port must be between 1 and 65535") from exc
        return parts.hostname, port
    if kind == "syslog":
        return split_host_port(target)
    if kind == "file":
        if not FILE_NAME.fullmatch(target) or ".." in target:
            raise ValueError(
                "Must be a plain file name (letters, digits, '.', '_', '-'), written in the "
                "installation's streams folder"
            )
        return target, None
    raise ValueError(f"Must be one of: {', '.join(STREAM_KINDS)}")


def refused_address(host: str, port: int) -> str | None:
    """Why ``host`` may not be a destination (it is, or resolves to, an address outside
    the public internet, or does not resolve), or None."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return f"'{host}' does not resolve"
    for info in infos:
        address = str(info[4][0])
        problem = address_problem(address)
        if problem:
            return problem if address == host else f"'{host}' resolves to {problem}"
    return None


Strings = list[str]


@dataclass(frozen=True)
class StreamWithSecret:
    stream: EventStream
    secret: str | None  # a webhook's new signing secret: shown once


def view(stream: EventStream) -> dict[str, Any]:
    """What the audit trail keeps of a stream (never its secrets)."""
    return {
        "name": stream.name,
        "kind": stream.kind,
        "target": stream.target,
        "event_types": list(stream.event_types),
        "decision_sample": stream.decision_sample,
        "status": stream.status,
    }


def decision_record(row: DecisionEvent) -> dict[str, Any]:
    """What a decision event carries (never a token: the check's body has none)."""
    return {
        "id": row.id,
        "at": row.at.isoformat(timespec="microseconds"),
        "subject": row.subject,
        "workspace": row.workspace,
        "resource": row.resource,
        "action": row.action,
        "decision": "allow" if row.allowed else "deny",
        "reason": row.reason,
        "revision": row.revision,
        "request_id": row.request_id,
    }


class StreamService:
    def __init__(
        self, session: Session, uow: UnitOfWork, authorizer: Authorizer, settings: Settings
    ) -> None:
        self.session = session
        self.uow = uow
        self.authorizer = authorizer
        self.settings = settings

    # -- reading -----------------------------------------------------------------------

    def _scope(self, stream: EventStream) -> str:
        return stream.workspace.slug if stream.workspace else ALL_WORKSPACES

    def _may(self, actor: Actor, stream: EventStream) -> bool:
        return self.authorizer.can(actor, Permission.EVENT_STREAMS_WRITE, self._scope(stream))

    def list(self, actor: Actor, workspace: str | None = None) -> Sequence[EventStream]:
        """The streams ``actor`` may manage, optionally those of one workspace (``*``:
        the installation-wide ones), by id."""
        where = self.authorizer.workspaces_where(actor, Permission.EVENT_STREAMS_WRITE)
        query = select(EventStream).outerjoin(Workspace).order_by(EventStream.id)
        if where is not None:  # not a super admin: only their workspaces' streams
            query = query.where(Workspace.slug.in_(where))
        if workspace == ALL_WORKSPACES:
            query = query.where(EventStream.workspace_id.is_(None))
        elif workspace:
            query = query.where(Workspace.slug == workspace)
        return list(self.session.scalars(query))

    def get(self, actor: Actor, stream_id: int) -> EventStream:
        """Stream ``stream_id``; one the actor may not manage does not exist for them."""
        stream = self.session.get(EventStream, stream_id)
        if stream is None or not self._may(actor, stream):
            raise NotFound(f"No event stream {stream_id}")
        return stream

    # -- changing ----------------------------------------------------------------------

    def _check(
        self, kind: str, target: str, event_types: Strings, decision_sample: float = 0.0
    ) -> None:
        errors: dict[str, Strings] = {}
        if not 0.0 <= decision_sample <= 1.0:
            errors["decision_sample"] = ["A rate from 0 (no decision events) to 1 (every decision)"]
        try:
            host, port = destination(kind, target)
        except ValueError as exc:
            errors["target"] = [str(exc)]
        else:
            if port is not None and not self.settings.stream_allow_private_destinations:
                problem = refused_address(host, port)
                if problem:
                    errors["target"] = [
                        f"Refused: {problem} (an installation setting, "
                        "RINGFENCE_STREAM_ALLOW_PRIVATE_DESTINATIONS, allows them)"
                    ]
        bad = [p for p in event_types if not PATTERN.fullmatch(p)]
        if bad or not event_types or len(event_types) > MAX_PATTERNS:
            errors["event_types"] = [
                f"1 to {MAX_PATTERNS} audit actions, each exact ('user.created'), a prefix "
                "('user.*') or '*'" + (f"; not: {', '.join(bad[:5])}" if bad else "")
            ]
        if errors:
            raise InvalidInput("The event stream cannot be saved", errors=errors)

    def create(
        self,
        actor: Actor,
        name: str,
        workspace: str,
        kind: str,
        target: str,
        event_types: Strings,
        decision_sample: float = 0.0,
    ) -> StreamWithSecret:
        """A stream of ``workspace``'s events (``*``: every event, super admins), from
        the next event on; a webhook's signing secret is in the answer, once.
        ``decision_sample``: the share of the workspace's decisions sent too (0: none)."""
        if workspace == ALL_WORKSPACES:
            self.authorizer.require(actor, Permission.EVENT_STREAMS_WRITE, ALL_WORKSPACES)
            owner = None
        else:
            owner = self.session.scalar(select(Workspace).where(Workspace.slug == workspace))
            if owner is None or not self.authorizer.can(
                actor, Permission.WORKSPACES_READ, workspace
            ):
                raise NotFound(f"No workspace '{workspace}'")
            self.authorizer.require(actor, Permission.EVENT_STREAMS_WRITE, workspace)
        self._check(kind, target, event_types, decision_sample)
        count = self.session.scalar(
            select(func.count())
            .select_from(EventStream)
            .where(
                EventStream.workspace_id.is_(None)
                if owner is None
                else EventStream.workspace_id == owner.id
            )
        )
        if (count or 0) >= MAX_STREAMS:
            raise Conflict(f"At most {MAX_STREAMS} event streams per workspace")
        secret = new_secret() if kind == "webhook" else None
        head = self.session.scalar(select(AuditChain.head_id).where(AuditChain.id == 1)) or 0
        stream = EventStream(
            workspace=owner,
            name=name,
            kind=kind,
            target=target,
            event_types=list(dict.fromkeys(event_types)),
            sealed_secrets=self._seal([secret]) if secret else None,
            status=ACTIVE,
            # From the next event on: its own creation's event is the first it may send.
            cursor=head,
            decision_sample=decision_sample,
            decision_cursor=decision_head(self.session),
            failures=0,
            delivered=0,
            created_by_id=actor.user_id,
            created_by_name=actor.name,
        )
        with self.uow.events_only(actor) as changes:
            self.session.add(stream)
            self.session.flush()
            self._audit(changes, "event_stream.created", stream, after=view(stream))
        return StreamWithSecret(stream, secret)

    def update(
        self,
        actor: Actor,
        stream_id: int,
        name: str | None = None,
        target: str | None = None,
        event_types: Strings | None = None,
        decision_sample: float | None = None,
    ) -> EventStream:
        stream = self.get(actor, stream_id)
        before = view(stream)
        new_target = stream.target if target is None else target
        new_types = list(stream.event_types) if event_types is None else event_types
        new_sample = stream.decision_sample if decision_sample is None else decision_sample
        self._check(stream.kind, new_target, new_types, new_sample)
        with self.uow.events_only(actor) as changes:
            stream.name = stream.name if name is None else name
            stream.target = new_target
            stream.event_types = list(dict.fromkeys(new_types))
            if new_sample > 0 and not stream.decision_sample > 0:
                # Decisions from now on, not those kept for other streams meanwhile.
                stream.decision_cursor = decision_head(self.session)
            stream.decision_sample = new_sample
            self._audit(changes, "event_stream.updated", stream, before, view(stream))
        return stream

    def delete(self, actor: Actor, stream_id: int) -> None:
        stream = self.get(actor, stream_id)
        with self.uow.events_only(actor) as changes:
            self._audit(changes, "event_stream.deleted", stream, before=view(stream))
            self.session.delete(stream)

    def rotate_secret(self, actor: Actor, stream_id: int) -> StreamWithSecret:
        """A new signing secret; the previous one stays valid beside it (each request
        carries a signature by both) until the next rotation."""
        stream = self.get(actor, stream_id)
        if stream.kind != "webhook":
            raise Conflict("Only webhook streams have a signing secret")
        secret = new_secret()
        with self.uow.events_only(actor) as changes:
            stream.sealed_secrets = self._seal([secret, *self.secrets(stream)[:1]])
            stream.secret_rotated_at = utcnow()
            self._audit(changes, "event_stream.secret_rotated", stream, after=view(stream))
        return StreamWithSecret(stream, secret)

    def resume(self, actor: Actor, stream_id: int) -> EventStream:
        """Deliver again, at once, from where the stream stopped."""
        stream = self.get(actor, stream_id)
        with self.uow.events_only(actor) as changes:
            before = view(stream)
            self._restart(stream)
            self._audit(changes, "event_stream.resumed", stream, before, view(stream))
        return stream

    def replay(self, actor: Actor, stream_id: int, from_audit_id: int) -> EventStream:
        """Deliver again every matching event from audit id ``from_audit_id`` on (those
        still in the trail: retention archives the oldest); resumes a paused stream."""
        stream = self.get(actor, stream_id)
        with self.uow.events_only(actor) as changes:
            before = view(stream)
            stream.cursor = max(0, from_audit_id - 1)
            flag_modified(stream, "cursor")  # as _restart's columns, for the same reason
            self._restart(stream)
            self._audit(
                changes,
                "event_stream.replayed",
                stream,
                before,
                {**view(stream), "from_audit_id": from_audit_id},
            )
        return stream

    def _restart(self, stream: EventStream) -> None:
        stream.status = ACTIVE
        stream.paused_reason = None
        stream.failures = 0
        stream.next_attempt_at = None
        # A delivery under way finishes, but cannot record over this (its token is gone).
        stream.claim_token = None
        stream.claimed_until = None
        # Written even where the value read earlier was already this one: a delivery may
        # have claimed the stream (or recorded a failure) since, and its claim must end
        # here, or its record would overwrite the replayed cursor when it finishes.
        for column in RESTARTED:
            flag_modified(stream, column)

    def _audit(
        self,
        changes: Any,
        action: str,
        stream: EventStream,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        changes.audit(
            action,
            AuditTarget.EVENT_STREAM,
            stream.id,
            stream.name,
            stream.workspace.slug if stream.workspace else None,
            before,
            after,
        )

    def _seal(self, values: Strings) -> str:
        return seal(self.settings.secret_key, {"secrets": values})

    def secrets(self, stream: EventStream) -> Strings:
        return stream_secrets(self.settings, stream)


def stream_secrets(settings: Settings, stream: EventStream) -> list[str]:
    """A webhook stream's signing secrets, newest first (none for other kinds)."""
    if not stream.sealed_secrets:
        return []
    return list(unseal(settings.secret_key, stream.sealed_secrets)["secrets"])


def _streams_due() -> Select[int]:
    """Active streams with events past their cursor (audit, or decisions for a stream
    that samples them) whose retry wait and claim are over, at ``:now``: one statement,
    the two heads read inside it."""
    now = bindparam("now", type_=UTCDateTime())
    head = func.coalesce(select(AuditChain.head_id).where(AuditChain.id == 1).scalar_subquery(), 0)
    decisions = func.coalesce(
        select(DecisionEventHead.head_id).where(DecisionEventHead.id == 1).scalar_subquery(), 0
    )
    return (
        select(EventStream.id)
        .where(
            EventStream.status == ACTIVE,
            or_(
                EventStream.cursor < head,
                and_(EventStream.decision_sample > 0, EventStream.decision_cursor < decisions),
            ),
            or_(EventStream.next_attempt_at.is_(None), EventStream.next_attempt_at <= now),
            or_(EventStream.claimed_until.is_(None), EventStream.claimed_until < now),
        )
        .order_by(EventStream.id)
    )


# Built once: they run after every commit that wrote audit events (mailer.stream_tasks),
# streams or not, and building them (their cache keys too) cost more than running them.
_STREAMS_DUE = _streams_due()
_SOONEST_RETRY = select(func.min(EventStream.next_attempt_at)).where(
    EventStream.status == ACTIVE, EventStream.next_attempt_at.is_not(None)
)
_ANY_ACTIVE = select(EventStream.id).where(EventStream.status == ACTIVE).limit(1)

# How long a process takes its last reading of whether the database has an active stream
# as true. Only "none" saves anything: after a commit that wrote audit events, delivery
# is woken only while there may be a stream to deliver to, so an installation without
# streams does not read them after each of its commits. The reading is taken by the
# delivery (streams_due: the embedded thread's look every 5 s, a worker's run); a commit
# that wrote a stream (made, changed, resumed, deleted) forgets it in the process that
# committed, before its own wake-up. A stream made in another process is found here by
# the next reading: until then this process's wake-ups are skipped, as lost ones are, and
# the sweeps deliver (beat's, or the embedded thread's).
PRESENCE_SECONDS = 5.0


class _Presence:
    """Whether a database has an active event stream, as this process last read it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active: bool | None = None  # None: never read, or forgotten since
        self.read_at = 0.0  # monotonic seconds
        # Bumped by forget: a reading that began before it must not be kept after it.
        self.generation = 0

    def none_active(self) -> bool:
        """Read "no active stream" within the last PRESENCE_SECONDS (no database read)."""
        return self.active is False and time.monotonic() - self.read_at < PRESENCE_SECONDS

    def forget(self) -> None:
        with self.lock:
            self.generation += 1
            self.active = None


_PRESENCE: weakref.WeakKeyDictionary[Engine, _Presence] = weakref.WeakKeyDictionary()
_PRESENCE_LOCK = threading.Lock()


def stream_presence(bind: Any) -> _Presence:
    """The reading for the database behind ``bind`` (an engine, or one's connection)."""
    engine = getattr(bind, "engine", bind)
    with _PRESENCE_LOCK:
        found = _PRESENCE.get(engine)
        if found is None:
            found = _PRESENCE[engine] = _Presence()
        return found


class StreamDesk:
    """The worker's side of the streams (:class:`gateway.notifier.StreamLedger`)."""

    def __init__(self, session_factory: sessionmaker[Session], settings: Settings) -> None:
        self.session_factory = session_factory
        self.settings = settings

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Session]:
        """A session for one read outside a transaction (autocommit): no BEGIN before it
        and no ROLLBACK after it, two round trips fewer for the reads that run after
        every commit that wrote audit events."""
        with self.session_factory() as session:
            session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            yield session

    def streams_due(self) -> list[int]:
        with self._reading() as session:
            self._read_presence(session)
            return list(session.scalars(_STREAMS_DUE, {"now": utcnow()}))

    def _read_presence(self, session: Session) -> None:
        """Read again whether any stream is active, if this process's reading is older
        than :data:`PRESENCE_SECONDS` (or was forgotten): see :class:`_Presence`."""
        presence = stream_presence(session.get_bind())
        now = time.monotonic()
        if presence.active is not None and now - presence.read_at < PRESENCE_SECONDS:
            return
        generation = presence.generation
        active = session.scalar(_ANY_ACTIVE) is not None
        with presence.lock:
            if generation == presence.generation:
                presence.active, presence.read_at = active, now

    def streams_wait(self) -> float | None:
        with self._reading() as session:
            soonest = session.scalar(_SOONEST_RETRY)
        if soonest is None:
            return None
        return max(0.0, (soonest - utcnow()).total_seconds())

    def claim_stream(self, stream_id: int) -> StreamBatch | None:
        now = utcnow()
        token = secrets.token_hex(16)
        with self.session_factory() as session:
            claimed = session.execute(
                update(EventStream)
                .where(
                    EventStream.id == stream_id,
                    EventStream.status == ACTIVE,
                    or_(EventStream.next_attempt_at.is_(None), EventStream.next_attempt_at <= now),
                    or_(EventStream.claimed_until.is_(None), EventStream.claimed_until < now),
                )
                .values(claimed_until=now + lease(self.settings), claim_token=token)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                session.rollback()
                return None
            stream = session.get(EventStream, stream_id)
            assert stream is not None
            workspace = stream.workspace.slug if stream.workspace else None
            events: list[dict[str, Any]] = []
            through = stream.cursor
            while len(events) < BATCH:
                query = select(AuditEvent).where(AuditEvent.id > through)
                if workspace is not None:
                    query = query.where(AuditEvent.workspace == workspace)
                rows = session.scalars(query.order_by(AuditEvent.id).limit(SCAN)).all()
                for row in rows:
                    if matches(stream.event_types, row.action):
                        events.append(record(row))
                        if len(events) == BATCH:
                            through = row.id
                            break
                    through = row.id
                if len(rows) < SCAN:
                    break
            lane = AUDIT
            if not events:
                # Nothing this stream wants of the trail: skip what was read; then its
                # sampled decisions, if it wants them (audit events first, each lane in
                # order).
                stream.cursor = through
                events, through = self._decisions(session, stream, workspace)
                lane = DECISIONS
            if not events:
                stream.claim_token = None
                stream.claimed_until = None
                session.commit()
                return None
            # through: past the batch's last event, over the skipped events read after it.
            values = tuple(stream_secrets(self.settings, stream))
            session.commit()
            return StreamBatch(
                stream_id=stream_id,
                token=token,
                kind=stream.kind,
                target=stream.target,
                secrets=values,
                events=tuple(events),
                through_id=through,
                source=self.settings.public_url.rstrip("/") or "ringfence",
                allow_private=self.settings.stream_allow_private_destinations,
                ca_file=str(self.settings.stream_ca_file) if self.settings.stream_ca_file else None,
                timeout=self.settings.stream_timeout_seconds,
                file_dir=str(self.settings.stream_file_path),
                lane=lane,
            )

    def _decisions(
        self, session: Session, stream: EventStream, workspace: str | None
    ) -> tuple[list[dict[str, Any]], int]:
        """The stream's next sampled decision events, and the decision cursor once they
        are delivered (past the ones it does not take, up to the head read first: every
        id up to it is committed, since ids are given under the head's lock)."""
        if not stream.decision_sample > 0:
            return [], stream.decision_cursor
        head = decision_head(session)
        query = select(DecisionEvent).where(
            DecisionEvent.id > stream.decision_cursor,
            DecisionEvent.id <= head,
            DecisionEvent.draw < stream.decision_sample,
        )
        if workspace is not None:
            query = query.where(DecisionEvent.workspace == workspace)
        rows = session.scalars(query.order_by(DecisionEvent.id).limit(BATCH)).all()
        if len(rows) < BATCH:
            if not rows:
                stream.decision_cursor = max(stream.decision_cursor, head)
            return [decision_record(r) for r in rows], head
        return [decision_record(r) for r in rows], rows[-1].id

    def record_stream(
        self,
        stream_id: int,
        token: str,
        cursor: int,
        count: int,
        error: str | None,
        lane: str = AUDIT,
    ) -> None:
        with self.session_factory() as session:
            # Hold the row before reading it, and only while the claim is ours (a row lock
            # on PostgreSQL, the write lock on SQLite): read first, a replay or resume
            # committed between the read and the write was overwritten by this record (a
            # lost update: the replay never happened, and a test once waited for it).
            held = session.execute(
                update(EventStream)
                .where(EventStream.id == stream_id, EventStream.claim_token == token)
                .values(claim_token=token)
            )
            if held.rowcount != 1:  # type: ignore[attr-defined]
                session.rollback()  # deleted, replayed or resumed meanwhile: not ours
                return
            stream = session.get(EventStream, stream_id)
            assert stream is not None
            changes = ChangeSet(session, SYSTEM)
            self._outcome(stream, changes, cursor, count, error, lane)
            session.add_all(changes.events)
            if lane == DECISIONS and error is None:
                session.flush()
                prune(session, utcnow())  # what every stream is past
            session.commit()

    def _outcome(
        self,
        stream: EventStream,
        changes: ChangeSet,
        cursor: int,
        count: int,
        error: str | None,
        lane: str = AUDIT,
    ) -> None:
        now = utcnow()
        stream.claim_token = None
        stream.claimed_until = None
        if count or error is None:
            if lane == DECISIONS:
                stream.decision_cursor = max(stream.decision_cursor, cursor)
            else:
                stream.cursor = max(stream.cursor, cursor)
        if count:
            stream.delivered += count
            stream.last_delivered_at = now
        if error is None:
            stream.failures = 0
            stream.next_attempt_at = None
            stream.last_error = None
            return
        stream.failures += 1
        stream.last_error = error[:2000]
        if stream.failures < max(1, self.settings.stream_max_failures):
            wait = min(
                self.settings.stream_retry_backoff_max_seconds,
                self.settings.stream_retry_backoff_seconds * 2 ** (stream.failures - 1),
            )
            stream.next_attempt_at = now + timedelta(seconds=max(0.0, wait))
            return
        stream.status = PAUSED
        stream.paused_reason = f"{stream.failures} deliveries in a row failed; the last: {error}"[
            :2000
        ]
        stream.next_attempt_at = None
        changes.audit(
            "event_stream.paused",
            AuditTarget.EVENT_STREAM,
            stream.id,
            stream.name,
            stream.workspace.slug if stream.workspace else None,
            after={**view(stream), "reason": stream.paused_reason},
        )


# -- waking delivery -------------------------------------------------------------------
#
# A session whose transaction wrote audit events calls the callable its Services put in
# session.info[WAKE] after COMMIT (the notifier's ``events_committed``): delivery starts
# at once instead of at the next sweep, unless this process read a moment ago that no
# stream is active (_Presence). Only a wake-up: what is sent is read from the trail, so a
# lost one delays and loses nothing.

WAKE = "ringfence.streams.wake"
_STREAMS_CHANGED = "ringfence.streams.changed"


def _note_stream(_mapper: Any, _connection: Any, stream: EventStream) -> None:
    session = object_session(stream)
    if session is not None:
        session.info[_STREAMS_CHANGED] = True


def _wake_after_commit(session: Session) -> None:
    if session.info.pop(_STREAMS_CHANGED, False):
        stream_presence(session.get_bind()).forget()
    # The chain's note of the head this transaction moved: it wrote audit events.
    if head_moved(session) is not None:
        wake = session.info.get(WAKE)
        if callable(wake) and not stream_presence(session.get_bind()).none_active():
            # The sweep delivers what a lost wake-up did not.
            with contextlib.suppress(Exception):
                wake()


def _forget_streams_changed(session: Session, _previous: Any = None) -> None:
    session.info.pop(_STREAMS_CHANGED, None)


# Before the chain's own after_commit, which forgets the head it moved (this module
# imports the chain, so the chain's listener is always registered first).
event.listen(Session, "after_commit", _wake_after_commit, insert=True)
event.listen(Session, "after_soft_rollback", _forget_streams_changed)
for _written in ("after_insert", "after_update", "after_delete"):
    event.listen(EventStream, _written, _note_stream)
