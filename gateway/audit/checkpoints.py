"""Signed checkpoints of the audit chain, and the offline check of an exported trail.

A checkpoint is a compact JWS (RS256, the installation's token signing key, ``kid`` in
the header) over a small JSON object: the chain's head event id (``head_id``) and hash
(``head_hash``), ``count`` (the events chained since the trail began: ids are the chain
positions, so it is the head id), ``iat`` (when, seconds) and ``iss`` (the
installation). Since each event's hash covers the one before, a checkpoint vouches for
every event up to its head: an auditor holding the public keys (the JWKS) checks an
exported trail with no access to the installation, with :func:`verify_export` (``ringfence
audit verify-export``) or a few lines of Python (docs/audit.md).

An export bundle (``GET /audit/export?format=bundle``) is JSON Lines: a header object
(``{"ringfence_audit_export": 1, ...}``), the event records exactly as the ``jsonl``
export has them, then one ``{"checkpoint": "<JWS>"}`` per checkpoint covering an exported
event, then ``{"jwks": {...}}``: the public keys that signed them, retired ones included
(a key that stopped signing tokens still vouches for what it signed).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey

from gateway.audit.chain import compute_hash

ALGORITHM = "RS256"
CHECKPOINT_TYPE = "ringfence-audit-checkpoint+jws"
EXPORT_MARK = "ringfence_audit_export"
EXPORT_VERSION = 1


def checkpoint_claims(head_id: int, head_hash: str, issuer: str, at: int) -> dict[str, Any]:
    """What a checkpoint signs (``count`` is ``head_id``: ids are chain positions)."""
    return {"iss": issuer, "iat": at, "head_id": head_id, "head_hash": head_hash, "count": head_id}


def checkpoint_header(kid: str) -> dict[str, Any]:
    return {"alg": ALGORITHM, "typ": CHECKPOINT_TYPE, "kid": kid}


def read_checkpoint(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """The claims of a checkpoint whose signature one of ``jwks``'s keys verifies (by
    ``kid``, RS256 only); ValueError saying why not."""
    try:
        compact = jws.extract_compact(token.encode())
        header = compact.headers()
    except (JoseError, ValueError, TypeError, UnicodeError) as exc:
        raise ValueError("not a compact JWS") from exc
    if header.get("alg") != ALGORITHM or header.get("typ") != CHECKPOINT_TYPE:
        raise ValueError(f"not an {ALGORITHM} audit checkpoint (header {header})")
    kid = header.get("kid")
    matches = [key for key in jwks.get("keys", []) if key.get("kid") == kid]
    if not matches:
        raise ValueError(f"signed by key {kid!r}, which is not in the JWKS")
    try:
        key = RSAKey.import_key(matches[0])
        verified = jws.deserialize_compact(token, key, algorithms=[ALGORITHM])
    except JoseError as exc:
        raise ValueError(f"its signature does not verify with key {kid!r}") from exc
    claims = json.loads(verified.payload)
    if not isinstance(claims, dict) or not isinstance(claims.get("head_id"), int):
        raise ValueError("its payload is not a checkpoint")
    return claims


@dataclass
class ExportCheck:
    """The outcome of :func:`verify_export`."""

    events: int = 0
    first_id: int | None = None
    last_id: int | None = None
    gaps: int = 0  # runs of ids missing from a filtered export (not links checked)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)  # verified claims
    problems: list[str] = field(default_factory=list)
    bad_event: int | None = None  # the first event that fails
    header: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def covered_to(self) -> int | None:
        """The newest event a verified checkpoint vouches for."""
        return max((c["head_id"] for c in self.checkpoints), default=None)


def verify_export(
    lines: Iterable[dict[str, Any]], jwks: dict[str, Any] | None = None
) -> ExportCheck:
    """Check an export bundle (or a plain ``jsonl`` export with ``jwks`` and no
    checkpoints): every event's hash, every link between consecutive events (in a
    complete export, no event missing), and every checkpoint's signature and head. The
    keys are ``jwks`` if given, else the bundle's own."""
    result = ExportCheck()
    hashes: dict[int, str] = {}
    tokens: list[str] = []
    bundled: dict[str, Any] | None = None
    prev: dict[str, Any] | None = None

    def fail(problem: str, event_id: int | None = None) -> None:
        result.problems.append(problem)
        if event_id is not None and result.bad_event is None:
            result.bad_event = event_id

    for item in lines:
        if EXPORT_MARK in item:
            result.header = item
            continue
        if "checkpoint" in item:
            tokens.append(str(item["checkpoint"]))
            continue
        if "jwks" in item:
            bundled = item["jwks"]
            continue
        event_id = item.get("id")
        if not isinstance(event_id, int):
            fail(f"a line is neither an event nor a checkpoint: {str(item)[:80]}")
            continue
        recomputed = compute_hash(item, str(item.get("prev_hash")))
        if recomputed != item.get("hash"):
            fail(
                f"event {event_id}: its content does not match its hash (stored "
                f"{item.get('hash')}, recomputed {recomputed}): it was changed",
                event_id,
            )
        if prev is not None:
            if event_id <= prev["id"]:
                fail(f"event {event_id}: not after event {prev['id']}: reordered", event_id)
            elif event_id == prev["id"] + 1:
                if item.get("prev_hash") != prev["hash"]:
                    fail(
                        f"event {event_id}: its prev_hash is not event {prev['id']}'s hash",
                        event_id,
                    )
            elif result.header.get("complete"):
                fail(
                    f"event {event_id}: events {prev['id'] + 1}..{event_id - 1} are missing",
                    event_id,
                )
            else:
                result.gaps += 1
        hashes[event_id] = str(item.get("hash"))
        result.events += 1
        result.first_id = event_id if result.first_id is None else result.first_id
        result.last_id = event_id
        prev = item
    keys = jwks if jwks is not None else bundled
    if tokens and keys is None:
        fail("the export has checkpoints but no JWKS: pass the installation's (--jwks)")
        return result
    for number, token in enumerate(tokens, 1):
        try:
            claims = read_checkpoint(token, keys or {})
        except ValueError as exc:
            fail(f"checkpoint {number}: refused: {exc}")
            continue
        head_id = claims["head_id"]
        if head_id not in hashes:
            fail(f"checkpoint {number} (event {head_id}): that event is not in the export")
        elif hashes[head_id] != claims.get("head_hash"):
            fail(
                f"checkpoint {number}: event {head_id}'s hash in the export is not the "
                f"signed one ({claims.get('head_hash')})",
                head_id,
            )
        else:
            result.checkpoints.append(claims)
    return result


def keyset_ok(jwks: dict[str, Any]) -> bool:
    """Whether ``jwks`` parses as a JWK Set (for a clear message on a bad file)."""
    try:
        KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError):
        return False
    return True
