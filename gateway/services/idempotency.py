"""Idempotency keys of admin writes (``Idempotency-Key``, as payment APIs have them).

A client that timed out cannot know whether its change was made; retrying it with the
same key is safe: the first request's outcome comes back instead of a second change.
Each key belongs to its caller. The row is claimed before the request runs (a second
request with the key while the first runs gets 409), the revision the change commits at
is written in the change's own transaction (:meth:`record_revision`, through
:attr:`UnitOfWork.in_commit`), and the answer is kept once given. So even a process that
died between its COMMIT and its answer leaves a retry the truth: "committed at revision
N". A request that failed without committing leaves no row, and may be sent again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gateway.db.models import IdempotencyKey, utcnow
from gateway.errors import Conflict, InvalidInput

# How long a key is kept; a retry later than this runs as a new request.
KEPT_FOR = timedelta(hours=24)
# A claim that never saw a COMMIT nor an answer this long: its request died before
# changing anything, so the key may be used again.
ABANDONED_AFTER = timedelta(minutes=5)
MAX_KEY_LENGTH = 255


class KeyReused(InvalidInput):
    type = "idempotency-key-reused"
    title = "This Idempotency-Key was used for another request"


class KeyInUse(Conflict):
    type = "idempotency-key-in-use"
    title = "A request with this Idempotency-Key is still being answered"


@dataclass(frozen=True)
class Claim:
    """The row this request claimed (``replay`` None), or the earlier outcome to replay."""

    row_id: int | None
    replay: IdempotencyKey | None = None


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What makes two requests the same request: method, path with query, body."""
    digest = hashlib.sha256(f"{method} {path}\n".encode())
    digest.update(body)
    return digest.hexdigest()


def valid_key(key: str) -> bool:
    return 0 < len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable()


class IdempotencyService:
    """Works on sessions of its own: a claim must be committed before the request runs,
    and the answer kept whatever the request's own transaction did."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    def claim(self, principal: str, key: str, print_: str) -> Claim:
        """Claim ``key`` for this request, or the earlier outcome of the same request;
        KeyReused for another request with the key, KeyInUse while one still runs."""
        if not valid_key(key):
            raise InvalidInput(
                "Idempotency-Key must be 1 to 255 printable ASCII characters",
                errors={"Idempotency-Key": ["1 to 255 printable ASCII characters"]},
            )
        with self.session_factory() as session:
            now = utcnow()
            session.execute(
                delete(IdempotencyKey).where(
                    IdempotencyKey.principal == principal,
                    IdempotencyKey.key == key,
                    (IdempotencyKey.created_at < now - KEPT_FOR)
                    | (
                        IdempotencyKey.status_code.is_(None)
                        & IdempotencyKey.revision.is_(None)
                        & (IdempotencyKey.created_at < now - ABANDONED_AFTER)
                    ),
                )
            )
            row = IdempotencyKey(principal=principal, key=key, fingerprint=print_)
            session.add(row)
            try:
                session.commit()
                return Claim(row.id)
            except IntegrityError:
                session.rollback()
            earlier = session.scalar(
                select(IdempotencyKey).where(
                    IdempotencyKey.principal == principal, IdempotencyKey.key == key
                )
            )
            if earlier is None:  # removed in between: a rare race; the caller may retry
                raise KeyInUse("Retry: the key was being released", retry_after=1)
            if earlier.fingerprint != print_:
                raise KeyReused(
                    "This Idempotency-Key was sent with another request (method, path or "
                    "body); use a new key for a new request",
                    errors={"Idempotency-Key": ["used before for another request"]},
                )
            if earlier.status_code is None and earlier.revision is None:
                raise KeyInUse(
                    "The first request with this Idempotency-Key is still being answered; "
                    "retry shortly",
                    retry_after=1,
                )
            session.expunge(earlier)
            return Claim(None, earlier)

    @staticmethod
    def record_revision(session: Session, row_id: int, revision: int) -> None:
        """Inside the change's transaction: the claimed request committed at ``revision``."""
        session.execute(
            update(IdempotencyKey).where(IdempotencyKey.id == row_id).values(revision=revision)
        )

    def keep_answer(
        self, row_id: int, status: int, body: str, headers: dict[str, str], committed: int
    ) -> None:
        """The answer a retry gets; a failure that changed nothing releases the key."""
        with self.session_factory() as session:
            if status >= 500 and not committed:
                session.execute(delete(IdempotencyKey).where(IdempotencyKey.id == row_id))
            else:
                session.execute(
                    update(IdempotencyKey)
                    .where(IdempotencyKey.id == row_id)
                    .values(status_code=status, response_body=body, response_headers=headers)
                )
            session.commit()
