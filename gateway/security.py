"""Secrets: password hashing (argon2id), one-time tokens, and signed access tokens.

Access tokens are RS256 JWTs signed with the keys of :mod:`gateway.signing` (joserfc, the
JOSE implementation of the Authlib project).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken

from gateway.errors import Unauthorized

if TYPE_CHECKING:
    from gateway.signing import KeyRing

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters

# A real hash of a random password, verified against when the account does not exist, so
# that a login for an unknown address costs the same time as one with a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True if ``password`` matches; constant work whether or not a hash exists."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    """A URL-safe one-time token with 256 bits of entropy."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What we store instead of a token: its SHA-256 (tokens are random, so no salt needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class AccessClaims:
    user_id: int
    session_version: int
    expires_at: int
    session_id: str | None = None


def issue_access_token(
    keys: KeyRing, user_id: int, session_version: int, ttl: int, session_id: str | None = None
) -> str:
    """A person's access token for the admin API, signed with the current signing key."""
    from gateway.signing import ADMIN_AUDIENCE

    claims: dict[str, Any] = {"sub": str(user_id), "sv": session_version}
    if session_id:
        claims["sid"] = session_id
    return keys.sign(claims, ADMIN_AUDIENCE, ttl)


def read_access_token(keys: KeyRing, token: str) -> AccessClaims:
    """The claims of a valid person's token (see :meth:`KeyRing.verify`); else Unauthorized."""
    from gateway.signing import ADMIN_AUDIENCE

    claims = keys.verify(token, ADMIN_AUDIENCE)
    try:
        sid = claims.get("sid")
        return AccessClaims(
            int(claims["sub"]),
            int(claims.get("sv", 0)),
            int(claims["exp"]),
            str(sid) if sid is not None else None,
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise Unauthorized("The access token is not valid or has expired") from exc


def _fernet(secret: str) -> Fernet:
    # A key of its own for sealing, derived from the secret key (not the JWT key itself).
    digest = hashlib.sha256(b"ringfence/seal/v1:" + secret.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def seal(secret: str, value: dict[str, Any]) -> str:
    """``value`` encrypted and authenticated (Fernet): for secrets that must be read back,
    such as an accept link waiting in the outbox or the SMTP password."""
    return _fernet(secret).encrypt(json.dumps(value).encode()).decode()


def unseal(secret: str, sealed: str) -> dict[str, Any]:
    try:
        value = json.loads(_fernet(secret).decrypt(sealed.encode()))
    except InvalidToken as exc:
        raise ValueError("sealed value cannot be opened with this secret key") from exc
    if not isinstance(value, dict):
        raise ValueError("sealed value is not an object")
    return value
