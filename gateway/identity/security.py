"""Secrets: password hashing (argon2id), one-time tokens, and sealed values.

Access tokens (RS256 JWTs) are issued and read by :mod:`gateway.identity.signing`, which
seals its private keys with :func:`seal`; this module imports nothing of it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import secrets
from typing import Any

from argon2 import Parameters, PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken

# argon2id parameter sets by name (``password_hash_profile`` setting). Production uses
# argon2-cffi's default, RFC 9106's second recommendation (t=3, m=64 MiB, p=4); a test
# suite signs in thousands of times and uses the cheapest parameters argon2 allows. A hash
# carries its parameters, so either verifies under both.
PASSWORD_HASH_PROFILES: dict[str, Parameters] = {
    "rfc9106-low-memory": profiles.RFC_9106_LOW_MEMORY,
    "test-only-cheapest": profiles.CHEAPEST,
}


@functools.cache
def _hasher(profile: str) -> tuple[PasswordHasher, str]:
    """The hasher of ``profile``, and a real hash of a random password that is verified
    against when the account does not exist, so that a login for an unknown address costs
    the same time as one with a wrong password."""
    if profile not in PASSWORD_HASH_PROFILES:
        known = ", ".join(PASSWORD_HASH_PROFILES)
        raise ValueError(f"RINGFENCE_PASSWORD_HASH_PROFILE: {profile!r} is not one of {known}")
    hasher = PasswordHasher.from_parameters(PASSWORD_HASH_PROFILES[profile])
    return hasher, hasher.hash(secrets.token_urlsafe(16))


def prepare_password_hashing(profile: str) -> None:
    """Refuse an unknown profile at start-up, not at the first sign-in, and make the
    unknown-account hash now, so that the first sign-in costs what every other does."""
    _hasher(profile)


def hash_password(password: str, profile: str) -> str:
    return _hasher(profile)[0].hash(password)


def verify_password(password_hash: str | None, password: str, profile: str) -> bool:
    """True if ``password`` matches; constant work whether or not a hash exists."""
    hasher, dummy_hash = _hasher(profile)
    try:
        return hasher.verify(password_hash or dummy_hash, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    """A URL-safe one-time token with 256 bits of entropy."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What we store instead of a token: its SHA-256 (tokens are random, so no salt needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


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
