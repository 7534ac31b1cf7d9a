"""Signed checkpoints of the audit chain (:mod:`gateway.audit.checkpoints`): written every
``RINGFENCE_AUDIT_CHECKPOINT_EVERY`` events and on demand, listed, and bundled into
exports with the public keys that verify them.

The automatic ones are written in the transaction whose events cross a multiple of N,
by a ``before_commit`` hook on every session that a :class:`~gateway.services.Services`
wraps: that transaction holds the chain's lock (taken by its first append), so the head
it signs is exactly the head it commits, two transactions can never sign the same
crossing twice or skip one, and a checkpoint exists if and only if its events do. The
cost is one RS256 signature (about a millisecond) per N events, on the change that
happens to cross the boundary; a housekeeping task would instead leave the newest events
unsigned for up to its period and need its own lock. A signature that fails for any
reason but the database is logged and skipped (the next crossing signs again): a
checkpoint is never worth refusing a change for.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from gateway.audit.chain import CHAIN_ROW, head_moved, lock_chain
from gateway.audit.checkpoints import (
    EXPORT_MARK,
    EXPORT_VERSION,
    checkpoint_claims,
    checkpoint_header,
)
from gateway.config import Settings
from gateway.db.models import AuditChain, AuditCheckpoint, AuditEvent, utcnow
from gateway.engine.rules import ALL_WORKSPACES
from gateway.errors import Conflict
from gateway.identity.signing import KeyRing
from gateway.services.base import Actor, Authorizer
from gateway.services.permissions import Permission

log = logging.getLogger(__name__)

# Session.info key: the settings of the Services wrapping the session (what the
# before_commit hook signs with). A session nobody wrapped writes no checkpoints.
SETTINGS_KEY = "ringfence.checkpoint_settings"
MAX_LIST = 1000


def write_checkpoint(
    session: Session, settings: Settings, head_id: int, head_hash: str, trigger: str
) -> AuditCheckpoint:
    """Sign ``head_id``/``head_hash`` with the signing key and add the checkpoint (the
    caller holds the chain's lock and commits)."""
    now = utcnow()
    claims = checkpoint_claims(head_id, head_hash, settings.issuer, int(now.timestamp()))
    token, kid = KeyRing(session, settings).sign_document(checkpoint_header(""), claims)
    checkpoint = AuditCheckpoint(
        head_id=head_id,
        head_hash=head_hash,
        count=head_id,
        kid=kid,
        jws=token,
        trigger=trigger,
        created_at=now,
    )
    session.add(checkpoint)
    return checkpoint


def _checkpoint_if_due(session: Session) -> None:
    settings: Settings | None = session.info.get(SETTINGS_KEY)
    if settings is None or settings.audit_checkpoint_every <= 0:
        return
    if head_moved(session) is None:
        if not any(isinstance(obj, AuditEvent) for obj in session.new):
            return
        session.flush()  # chains the new events (gateway.audit.chain)
    moved = head_moved(session)
    if moved is None:
        return
    before, now, _ = moved
    every = settings.audit_checkpoint_every
    if now // every <= before // every:
        return
    # The row this transaction locked and moved (not Session.info's copy, which a
    # rolled-back savepoint could have left ahead of it).
    chain = session.execute(
        select(AuditChain.head_id, AuditChain.head_hash).where(AuditChain.id == CHAIN_ROW)
    ).one()
    if chain.head_id // every <= before // every:
        return
    try:  # the signature is made before anything is added to the session
        write_checkpoint(session, settings, chain.head_id, chain.head_hash, "auto")
    except SQLAlchemyError:
        raise
    except Exception:
        log.exception("the audit checkpoint at event %s could not be signed", chain.head_id)


event.listen(Session, "before_commit", _checkpoint_if_due)


class CheckpointService:
    def __init__(self, session: Session, authorizer: Authorizer, settings: Settings) -> None:
        self.session = session
        self.authorizer = authorizer
        self.settings = settings

    def _require(self, actor: Actor) -> None:
        """Checkpoints speak of the whole trail (its length, its head): super admins'."""
        self.authorizer.require(actor, Permission.AUDIT_READ, ALL_WORKSPACES)

    def create(self, actor: Actor) -> AuditCheckpoint:
        """Sign the chain's head now."""
        self._require(actor)
        try:
            head = lock_chain(self.session)
            if head.head_id == 0:
                raise Conflict("The audit trail has no events to sign yet")
            checkpoint = write_checkpoint(
                self.session, self.settings, head.head_id, head.head_hash, "manual"
            )
            self.session.commit()
        except BaseException:
            self.session.rollback()
            raise
        return checkpoint

    def list(
        self, actor: Actor, limit: int = 100, before: int | None = None
    ) -> list[AuditCheckpoint]:
        """Checkpoints newest first; ``before``: those with an id below it (the next page)."""
        self._require(actor)
        query = select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc())
        if before is not None:
            query = query.where(AuditCheckpoint.id < before)
        return list(self.session.scalars(query.limit(max(1, min(limit, MAX_LIST)))))

    def bundle(
        self, actor: Actor, records: Iterator[dict[str, Any]], filters: dict[str, Any]
    ) -> Iterator[str]:
        """An export bundle (JSON Lines): a header, ``records``, the checkpoints whose
        head is one of them, and the JWKS that verifies those. Checkpoints go only to
        readers of the whole trail (``audit:read`` everywhere)."""
        whole = self.authorizer.can(actor, Permission.AUDIT_READ, ALL_WORKSPACES)
        used = {name: value for name, value in filters.items() if value is not None}
        header = {
            EXPORT_MARK: EXPORT_VERSION,
            "issuer": self.settings.issuer,
            "exported_at": utcnow().astimezone(UTC).isoformat(timespec="seconds"),
            # Every event from the first exported to the last: a gap is a failure.
            "complete": whole and not used,
            "filtered_by": sorted(used),  # names only: the values were the caller's
            "jwks_url": self.settings.public_url.rstrip("/") + "/.well-known/jwks.json",
        }
        yield _line(header)
        ids: set[int] = set()
        for item in records:
            ids.add(item["id"])
            yield _line(item)
        checkpoints: list[AuditCheckpoint] = []
        if whole and ids:
            query = (
                select(AuditCheckpoint)
                .where(AuditCheckpoint.head_id.between(min(ids), max(ids)))
                .order_by(AuditCheckpoint.id)
            )
            checkpoints = [c for c in self.session.scalars(query) if c.head_id in ids]
        for checkpoint in checkpoints:
            yield _line({"checkpoint": checkpoint.jws})
        jwks = KeyRing(self.session, self.settings).jwks_of({c.kid for c in checkpoints})
        yield _line({"jwks": jwks})


def _line(item: dict[str, Any]) -> str:
    return json.dumps(item, ensure_ascii=False) + "\n"


def checkpoint_record(checkpoint: AuditCheckpoint) -> dict[str, Any]:
    return {
        "id": checkpoint.id,
        "head_id": checkpoint.head_id,
        "head_hash": checkpoint.head_hash,
        "count": checkpoint.count,
        "kid": checkpoint.kid,
        "jws": checkpoint.jws,
        "trigger": checkpoint.trigger,
        "created_at": checkpoint.created_at,
    }
