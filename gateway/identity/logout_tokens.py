"""Logout tokens of OpenID Connect Back-Channel Logout 1.0, read as its section 2.6 says,
with joserfc (the JOSE library Authlib verifies ID tokens with): what a workspace
connection's provider posts to tell Ringfence that a person's session there ended.

The token must be a signed JWT (an encrypted one is refused: no connection registers
encryption keys), signed with one of the provider's keys (its JWKS, fetched again once
when the token names a key not in it) by an algorithm the provider announces for ID
tokens, never ``none`` nor a symmetric one; its ``typ``, if any, ``JWT`` or
``logout+jwt``. Its claims: ``iss`` the provider's issuer exactly, ``aud`` holding the
connection's client id, ``iat`` neither in the future nor older than
:data:`MAX_AGE_SECONDS`, ``exp`` not passed (both with :data:`LEEWAY_SECONDS` of clock
skew), a ``jti``, ``events`` a JSON object with the back-channel logout event as a JSON
object, ``sub`` or ``sid`` or both, and no ``nonce`` (which would let it pass for an ID
token). Whether the ``jti`` was seen before is the caller's (gateway.services.sso_logout).

Nothing here touches a database or the network: the caller hands the keys in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

from joserfc import jwt
from joserfc.errors import (
    ExpiredTokenError,
    InvalidClaimError,
    InvalidKeyIdError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import KeySet, KeySetSerialization
from joserfc.jws import JWSRegistry

BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
# Seconds of clock skew allowed on iat and exp (as Authlib allows on ID tokens).
LEEWAY_SECONDS = 120
# A logout token issued longer ago than this is refused, whatever its exp: the spec asks
# for short-lived tokens (two minutes, it suggests), and a replay is detected only as
# long as its jti is remembered, which is this long (plus the leeway).
MAX_AGE_SECONDS = 600
MAX_TOKEN_LENGTH = 8192
MAX_CLAIM_LENGTH = 255  # sub, sid, jti: as stored (auth_sessions.sso_sid)
TYPES = {"jwt", "logout+jwt", "application/jwt", "application/logout+jwt"}


@dataclass(frozen=True)
class LogoutClaims:
    """What a valid logout token asks: end the sessions of ``subject`` (all of them, or
    only the provider's session ``sid``), or of the provider's session ``sid``."""

    subject: str | None
    sid: str | None
    jti: str
    issued_at: int


class LogoutTokenRefused(Exception):
    """The token is not a valid logout token. ``reason`` is a short category (for metrics
    and the audit trail); ``detail`` says it in words (for the provider's answer);
    ``verified``: whether the signature verified (then the provider itself sent it)."""

    def __init__(self, reason: str, detail: str, verified: bool) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.verified = verified


def signing_algorithms(announced: Iterable[str] | None) -> list[str]:
    """The algorithms a logout token may be signed with: those the provider announces for
    ID tokens (``id_token_signing_alg_values_supported``; RS256 when it says nothing),
    without ``none`` and the symmetric ones (keyed by the client secret: no key set
    holds that)."""
    algorithms = [a for a in (announced or ["RS256"]) if isinstance(a, str)]
    return [a for a in algorithms if a != "none" and not a.startswith("HS")] or ["RS256"]


def read_logout_token(
    token: str,
    jwks: Callable[[bool], dict[str, Any]],
    issuer: str,
    client_id: str,
    algorithms: list[str],
    now: int | None = None,
) -> LogoutClaims:
    """The claims of ``token`` if it is a valid logout token of ``issuer`` for
    ``client_id``; LogoutTokenRefused otherwise. ``jwks(force)`` gives the provider's
    key set (fetched anew when ``force``)."""
    now = int(time.time()) if now is None else now
    if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        raise LogoutTokenRefused("malformed", "The logout token is missing or malformed", False)
    parts = token.count(".")
    if parts == 4:
        raise LogoutTokenRefused(
            "encrypted", "Encrypted logout tokens are not accepted: send it signed only", False
        )
    if parts != 2:
        raise LogoutTokenRefused("malformed", "The logout token is not a signed JWT", False)
    registry = JWSRegistry(algorithms=algorithms, strict_check_header=False)
    try:
        try:
            decoded = jwt.decode(token, _key_set(jwks(False)), registry=registry)
        except InvalidKeyIdError:
            # A key the provider added since its set was fetched (rotation).
            decoded = jwt.decode(token, _key_set(jwks(True)), registry=registry)
    except InvalidKeyIdError as exc:
        raise LogoutTokenRefused(
            "unknown-key", "The logout token is signed with a key the provider does not list", False
        ) from exc
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise LogoutTokenRefused(
            "bad-signature",
            "The logout token's signature does not verify with the provider's keys "
            f"(algorithms {', '.join(algorithms)})",
            False,
        ) from exc
    return _checked(decoded.header, decoded.claims, issuer, client_id, now)


def _key_set(jwks: dict[str, Any]) -> KeySet:
    """The provider's JWKS document as keys (a malformed one: ValueError or JoseError)."""
    if not isinstance(jwks.get("keys"), list):
        raise ValueError("The provider's key set holds no keys")
    return KeySet.import_key_set(cast(KeySetSerialization, jwks))


def _checked(
    header: dict[str, Any], claims: dict[str, Any], issuer: str, client_id: str, now: int
) -> LogoutClaims:
    def refuse(reason: str, detail: str) -> LogoutTokenRefused:
        return LogoutTokenRefused(reason, detail, True)

    kind = header.get("typ")
    if kind is not None and (not isinstance(kind, str) or kind.lower() not in TYPES):
        raise refuse("wrong-type", "The logout token's typ is neither JWT nor logout+jwt")
    registry = jwt.JWTClaimsRegistry(
        now=now,
        leeway=LEEWAY_SECONDS,
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": client_id},
        iat={"essential": True},
        exp={"essential": True},
        jti={"essential": True},
    )
    try:
        registry.validate(claims)
    except MissingClaimError as exc:
        raise refuse("missing-claim", f"The logout token lacks {exc.claim}") from exc
    except ExpiredTokenError as exc:
        raise refuse("expired", "The logout token has expired (exp)") from exc
    except InvalidClaimError as exc:
        claim = exc.claim
        if claim == "iss":
            raise refuse("wrong-issuer", "The logout token is of another issuer") from exc
        if claim == "aud":
            raise refuse("wrong-audience", "The logout token is meant for another client") from exc
        if claim == "iat" and "future" in exc.description:
            raise refuse("issued-in-future", "The logout token was issued in the future") from exc
        raise refuse("invalid-claim", f"The logout token's {claim} is not valid") from exc
    if claims["iat"] < now - MAX_AGE_SECONDS:
        raise refuse(
            "too-old", f"The logout token was issued more than {MAX_AGE_SECONDS} s ago (iat)"
        )
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_LOGOUT_EVENT), dict):
        raise refuse(
            "not-a-logout-token",
            f"The token's events claim is not an object holding {BACKCHANNEL_LOGOUT_EVENT} "
            "as an object",
        )
    if "nonce" in claims:
        raise refuse("nonce-present", "A logout token must not hold a nonce")
    subject, sid = claims.get("sub"), claims.get("sid")
    for name, value in (("sub", subject), ("sid", sid), ("jti", claims["jti"])):
        if value is not None and (
            not isinstance(value, str) or not 0 < len(value) <= MAX_CLAIM_LENGTH
        ):
            raise refuse("invalid-claim", f"The logout token's {name} is not a short string")
    if subject is None and sid is None:
        raise refuse("no-subject", "The logout token names neither a subject (sub) nor a sid")
    return LogoutClaims(subject, sid, claims["jti"], int(claims["iat"]))
