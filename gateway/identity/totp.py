"""Time-based one-time passwords (RFC 6238, with pyotp) and recovery codes.

A TOTP code is accepted for the current 30-second time step and one step either side
(clocks drift, people type slowly), and only for a step later than the last one accepted
for the factor: a code is used once, and an older code never after a newer one.
"""

from __future__ import annotations

import secrets
import time

import pyotp

from gateway.identity.security import token_digest

DIGITS = 6
PERIOD = 30
WINDOW = 1  # steps accepted either side of now
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i


def new_secret() -> str:
    """A random base32 secret of 160 bits (RFC 4226's recommended length)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    """The otpauth:// URI authenticator apps read (from a QR code or pasted)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD).provisioning_uri(
        name=account, issuer_name=issuer
    )


def is_totp_code(code: str) -> bool:
    return len(code) == DIGITS and code.isascii() and code.isdigit()


def matching_step(
    secret: str, code: str, after: int | None, now: float | None = None
) -> int | None:
    """The time step (now ± WINDOW) whose code ``code`` is, if later than ``after``."""
    if not is_totp_code(code):
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD)
    current = int((time.time() if now is None else now) // PERIOD)
    for step in range(current - WINDOW, current + WINDOW + 1):
        if (after is None or step > after) and secrets.compare_digest(totp.at(step * PERIOD), code):
            return step
    return None


def new_recovery_codes() -> list[str]:
    """Ten codes like ``k7fq2-mx9tp`` (50 bits each), to be shown once."""
    return [
        "-".join("".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(5)) for _ in range(2))
        for _ in range(RECOVERY_CODES)
    ]


def recovery_digest(code: str) -> str:
    """What is stored of a recovery code: SHA-256 of it as typed, less case, spaces and
    hyphens (the codes are random, so no salt is needed)."""
    return token_digest("".join(c for c in code.lower() if c.isalnum()))
