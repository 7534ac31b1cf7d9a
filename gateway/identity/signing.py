"""The keys that sign access tokens, and the JWTs they sign and verify.

Every access token (people's and services') is an RS256 JWT (RFC 9068 ``at+jwt``) naming
its key by ``kid``, with ``iss``, ``aud``, ``exp``, ``iat`` and ``jti``. Keys live in the
database, the private half sealed with the secret key, so every replica signs and
verifies with the same keys, and services can verify tokens themselves with the public
keys published at ``/.well-known/jwks.json``.

Rotation without downtime: rotating makes a new key the signing key; the old one stops
signing but keeps verifying until every token it signed has expired (the longest token
lifetime plus leeway), after which it counts as retired and is no longer published.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import RSAKey
from joserfc.jws import extract_compact, serialize_compact
from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from gateway.config import Settings
from gateway.db.models import OAuthClient, RevokedToken, SigningKey, utcnow
from gateway.errors import Conflict, InvalidToken, NotFound, Unauthorized
from gateway.identity.security import seal, unseal

ALGORITHM = "RS256"
TOKEN_TYPE = "at+jwt"  # noqa: S105 - RFC 9068's media type, not a secret
LEEWAY = 5  # seconds of clock skew tolerated between replicas
# Audiences keep the two kinds of token apart: a service's token is refused by the admin
# API and a person's token by the decision endpoints.
ADMIN_AUDIENCE = "ringfence:admin"
DECISIONS_AUDIENCE = "ringfence:decisions"

# Parsed keys by kid. A kid is the key's RFC 7638 thumbprint, so an entry can never be
# stale: the same kid is the same key. Whether a key may still be used is read from the
# database on every use (a retirement must take effect at once everywhere).
_private_keys: dict[str, RSAKey] = {}
_public_keys: dict[str, RSAKey] = {}


class KeyRing:
    """Signing and verifying with the keys in the database of ``session``."""

    def __init__(self, session: Session, settings: Settings) -> None:
        self.session = session
        self.settings = settings

    @property
    def verify_window(self) -> timedelta:
        """How long a key keeps verifying after it stopped signing."""
        longest = max(self.settings.access_token_ttl, self.settings.client_token_ttl)
        return timedelta(seconds=longest + LEEWAY)

    # -- keys ----------------------------------------------------------------------------

    def ensure_signing_key(self) -> SigningKey:
        """The key that signs now; made (and flushed, for the caller to commit) if none."""
        with self.session.no_autoflush:
            key = self.session.scalars(
                select(SigningKey)
                .where(SigningKey.deactivated_at.is_(None), SigningKey.retired_at.is_(None))
                .order_by(SigningKey.created_at.desc(), SigningKey.kid)
                .limit(1)
            ).first()
        return key or self._new_key()

    def rotate(self) -> tuple[SigningKey, list[str]]:
        """Make a new signing key; the current one keeps verifying. Keys whose tokens have
        all expired are retired. The new key and the kids retired; the caller commits."""
        now = utcnow()
        self.session.execute(
            update(SigningKey)
            .where(SigningKey.deactivated_at.is_(None), SigningKey.retired_at.is_(None))
            .values(deactivated_at=now)
        )
        retired = []
        for key in self.session.scalars(select(SigningKey).where(SigningKey.retired_at.is_(None))):
            if key.deactivated_at is not None and key.deactivated_at + self.verify_window <= now:
                key.retired_at = now
                retired.append(key.kid)
        return self._new_key(), retired

    def retire(self, kid: str) -> SigningKey:
        """Stop a key verifying at once (e.g. it leaked); never the signing key."""
        key = self.session.get(SigningKey, kid)
        if key is None:
            raise NotFound(f"No signing key '{kid}'")
        if key.deactivated_at is None:
            raise Conflict("The signing key cannot be retired; rotate first", kid=kid)
        key.retired_at = key.retired_at or utcnow()
        return key

    def all_keys(self) -> list[SigningKey]:
        return list(
            self.session.scalars(
                select(SigningKey).order_by(SigningKey.created_at.desc(), SigningKey.kid)
            )
        )

    def is_retired(self, key: SigningKey) -> bool:
        return _retired(key.retired_at, key.deactivated_at, self.verify_window, utcnow())

    def jwks(self) -> dict[str, Any]:
        """The public keys that verify tokens now (RFC 7517 JWK Set): the signing key and
        the previous keys still in their verify window."""
        return {
            "keys": [
                {**key.public_jwk, "kid": key.kid, "alg": key.algorithm, "use": "sig"}
                for key in self.all_keys()
                if not self.is_retired(key)
            ]
        }

    def _new_key(self) -> SigningKey:
        private = RSAKey.generate_key(2048)
        kid = private.thumbprint()
        pem = private.as_pem(private=True).decode()
        key = SigningKey(
            kid=kid,
            algorithm=ALGORITHM,
            public_jwk=dict(private.as_dict(private=False)),
            sealed_private_key=seal(self.settings.secret_key, {"pem": pem}),
            created_at=utcnow(),
        )
        self.session.add(key)
        self.session.flush()
        _private_keys[kid] = private
        return key

    def jwks_of(self, kids: Collection[str]) -> dict[str, Any]:
        """The public keys ``kids`` (retired ones too: what they signed stays theirs), as a
        JWK Set: what verifies the audit checkpoints of an export offline."""
        rows = self.session.scalars(select(SigningKey).where(SigningKey.kid.in_(list(kids))))
        return {
            "keys": [
                {**key.public_jwk, "kid": key.kid, "alg": key.algorithm, "use": "sig"}
                for key in sorted(rows, key=lambda key: key.kid)
            ]
        }

    def _private_key(self, key: SigningKey) -> RSAKey:
        private = _private_keys.get(key.kid)
        if private is None:
            pem = unseal(self.settings.secret_key, key.sealed_private_key)["pem"]
            private = _private_keys.setdefault(key.kid, RSAKey.import_key(pem))
        return private

    def sign_document(self, header: dict[str, Any], payload: dict[str, Any]) -> tuple[str, str]:
        """A compact JWS of ``payload`` (JSON) signed now with the signing key, whose kid
        goes into ``header``; and that kid. For documents that are not tokens (the audit
        checkpoints)."""
        key = self.ensure_signing_key()
        body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        token = serialize_compact({**header, "kid": key.kid}, body, self._private_key(key))
        return token, key.kid

    # -- tokens --------------------------------------------------------------------------

    def sign(self, claims: dict[str, Any], audience: str, ttl: int) -> str:
        """A JWT of ``claims`` for ``audience``, valid ``ttl`` seconds, signed now."""
        key = self.ensure_signing_key()
        private = self._private_key(key)
        now = int(time.time())
        payload = {
            "iss": self.settings.issuer,
            "aud": audience,
            "iat": now,
            "exp": now + ttl,
            "jti": secrets.token_urlsafe(16),
            **claims,
        }
        header = {"alg": ALGORITHM, "typ": TOKEN_TYPE, "kid": key.kid}
        return jwt.encode(header, payload, private, algorithms=[ALGORITHM])

    def verify(self, token: str, audience: str | Collection[str]) -> dict[str, Any]:
        """The claims of a token this installation signed for ``audience``, unexpired and
        not revoked; else :class:`InvalidToken` saying why."""
        return self.verify_with_client(token, audience)[0]

    def verify_with_client(
        self, token: str, audience: str | Collection[str]
    ) -> tuple[dict[str, Any], bool | None]:
        """:meth:`verify`, and whether the token's ``client_id`` names a live client (None:
        no such client). One database round trip for the key, the revocation list and
        the client: this runs before every decision."""
        try:
            compact = extract_compact(token.encode())
            header = compact.headers()
            unverified = json.loads(compact.payload)
        # RecursionError: a header or payload nested too deeply for the parser is as
        # malformed as any other (it was a 500 before any key was touched).
        except (JoseError, ValueError, TypeError, UnicodeError, RecursionError) as exc:
            raise InvalidToken("The access token is not a well-formed JWT", "malformed") from exc
        # Only our one algorithm: "none" and HS256 (with the public key as the HMAC
        # secret) are the classic forgeries, refused before any key is touched.
        if header.get("alg") != ALGORITHM:
            raise InvalidToken(
                f"The access token must be signed with {ALGORITHM}", "unsupported-algorithm"
            )
        if header.get("typ") not in (TOKEN_TYPE, "application/" + TOKEN_TYPE):
            raise InvalidToken("The token is not an access token (typ at+jwt)", "malformed")
        if not isinstance(unverified, dict):
            raise InvalidToken("The access token is not a well-formed JWT", "malformed")
        kid = header.get("kid")
        # The payload read here is the one the signature is checked over below, so what
        # the query learns about its jti and client is used only once that check passed.
        jti, client_id = unverified.get("jti"), unverified.get("client_id")
        row = (
            self.session.execute(
                select(
                    SigningKey.public_jwk,
                    SigningKey.deactivated_at,
                    SigningKey.retired_at,
                    exists()
                    .where(RevokedToken.jti == (jti if isinstance(jti, str) else ""))
                    .label("revoked"),
                    select(OAuthClient.revoked_at.is_(None))
                    .where(
                        OAuthClient.client_id == (client_id if isinstance(client_id, str) else "")
                    )
                    .scalar_subquery()
                    .label("client_live"),
                ).where(SigningKey.kid == kid)
            ).first()
            if isinstance(kid, str)
            else None
        )
        if row is None:
            raise InvalidToken("The access token names an unknown signing key", "unknown-key")
        if _retired(row.retired_at, row.deactivated_at, self.verify_window, utcnow()):
            raise InvalidToken("The access token's signing key is retired", "retired-key")
        public = _public_keys.get(str(kid))
        if public is None:
            public = _public_keys.setdefault(str(kid), RSAKey.import_key(row.public_jwk))
        try:
            claims = jwt.decode(token, public, algorithms=[ALGORITHM]).claims
        except BadSignatureError as exc:
            raise InvalidToken("The access token's signature is wrong", "bad-signature") from exc
        except (JoseError, ValueError, TypeError) as exc:
            raise InvalidToken("The access token is not a well-formed JWT", "malformed") from exc
        audiences = [audience] if isinstance(audience, str) else list(audience)
        registry = jwt.JWTClaimsRegistry(
            leeway=LEEWAY,
            iss={"essential": True, "value": self.settings.issuer},
            aud={"essential": True, "values": audiences},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            jti={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError as exc:
            raise InvalidToken("The access token has expired", "expired") from exc
        except MissingClaimError as exc:
            raise InvalidToken(f"The access token lacks claims: {exc.claim}", "malformed") from exc
        except InvalidClaimError as exc:
            reason = {"aud": "wrong-audience", "iss": "wrong-issuer"}.get(exc.claim, "malformed")
            raise InvalidToken(f"The access token's '{exc.claim}' is not valid", reason) from exc
        if row.revoked:
            raise InvalidToken("The access token was revoked", "revoked")
        live = row.client_live
        return claims, None if live is None else bool(live)

    def revoke(self, claims: dict[str, Any]) -> bool:
        """Record a verified token's ``jti`` as revoked (until it expires); False if it was
        already. Expired entries are dropped on the way. The caller commits."""
        now = utcnow()
        for stale in self.session.scalars(
            select(RevokedToken).where(RevokedToken.expires_at < now - timedelta(seconds=LEEWAY))
        ):
            self.session.delete(stale)
        if self.session.get(RevokedToken, claims["jti"]) is not None:
            return False
        expires = datetime.fromtimestamp(int(claims["exp"]), tz=now.tzinfo)
        self.session.add(RevokedToken(jti=claims["jti"], expires_at=expires, revoked_at=now))
        return True


def _retired(
    retired_at: datetime | None, deactivated_at: datetime | None, window: timedelta, now: datetime
) -> bool:
    """Retired by hand, or out of signing for longer than any token it signed lives."""
    if retired_at is not None:
        return True
    if deactivated_at is None:
        return False
    if deactivated_at.tzinfo is None:  # SQLite through Core: naive, but stored as UTC
        deactivated_at = deactivated_at.replace(tzinfo=now.tzinfo)
    return deactivated_at + window <= now


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
    claims: dict[str, Any] = {"sub": str(user_id), "sv": session_version}
    if session_id:
        claims["sid"] = session_id
    return keys.sign(claims, ADMIN_AUDIENCE, ttl)


def read_access_token(keys: KeyRing, token: str) -> AccessClaims:
    """The claims of a valid person's token (see :meth:`KeyRing.verify`); else Unauthorized."""
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
