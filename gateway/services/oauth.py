"""OAuth 2.0 for services: their clients, the signing keys, and their access tokens.

Clients are installation-wide (a token with ``decisions:check`` may ask about every
workspace), so managing them needs ``clients:read`` / ``clients:write`` in every
workspace (``*``), which only a super admin holds. None of this changes what the engine
decides, so most changes are committed with :meth:`UnitOfWork.record` (audited, no
revision bump). Whatever ends tokens (deleting a client, revoking a token, retiring a key)
is a revision marked as such (:meth:`ChangeSet.end_tokens`), because every process that
remembers decision tokens (gateway.identity.token_cache) must forget them: at once here, and on
the revision's notice or at the revision check in every other process.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.config import Settings
from gateway.db.models import OAuthClient, SigningKey, utcnow
from gateway.engine.rules import ALL_WORKSPACES
from gateway.errors import (
    Forbidden,
    InsufficientScope,
    InvalidInput,
    InvalidToken,
    NotFound,
)
from gateway.identity.security import new_token, token_digest
from gateway.identity.signing import DECISIONS_AUDIENCE, KeyRing
from gateway.services.base import SYSTEM, Actor, AuditTarget, Authorizer, UnitOfWork
from gateway.services.permissions import Permission

DECISIONS_SCOPE = "decisions:check"
INTROSPECT_SCOPE = "tokens:introspect"
REPLICATE_SCOPE = "decisions:replicate"
# What a client may be given; anything else is refused when the client is created (a
# typo must not silently grant nothing) and at the token endpoint.
SCOPES = {
    DECISIONS_SCOPE: "Ask for decisions: POST /v1/check and everything under /access/v1/",
    INTROSPECT_SCOPE: "Introspect tokens issued to other clients (RFC 7662)",
    REPLICATE_SCOPE: "Follow the change log: GET /v1/changes and GET /v1/snapshot",
}


@dataclass(frozen=True)
class ClientWithSecret:
    """A client and its secret, which exists only in this answer (stored hashed)."""

    client: OAuthClient
    client_secret: str


def client_actor(client_id: str, name: str | None = None) -> Actor:
    """A service named in the audit trail by its client id."""
    return Actor(None, f"client {name} ({client_id})" if name else f"client {client_id}")


class ClientService:
    def __init__(self, session: Session, uow: UnitOfWork, authorizer: Authorizer) -> None:
        self.session = session
        self.uow = uow
        self.authorizer = authorizer

    def create(self, actor: Actor, name: str, scopes: list[str]) -> ClientWithSecret:
        """A new client with ``scopes``; its secret is returned this once."""
        self.authorizer.require(actor, Permission.CLIENTS_WRITE, ALL_WORKSPACES)
        wanted = sorted(set(scopes))
        unknown = [s for s in wanted if s not in SCOPES]
        if not wanted or unknown:
            raise InvalidInput(
                f"Unknown scopes: {', '.join(unknown)}" if unknown else "Give at least one scope",
                errors={"scopes": [f"unknown scope '{s}'" for s in unknown] or ["required"]},
                known_scopes=sorted(SCOPES),
            )
        name = name.strip()
        if not name:
            raise InvalidInput("The client needs a name", errors={"name": ["required"]})
        secret = new_token()
        client = OAuthClient(
            client_id="rfc_" + secrets.token_hex(12),
            secret_hash=token_digest(secret),
            name=name,
            scopes=" ".join(wanted),
            created_by_id=actor.user_id,
            created_by_name=actor.name,
            created_at=utcnow(),
        )
        self.session.add(client)
        self.uow.record(
            actor,
            "client.created",
            AuditTarget.OAUTH_CLIENT,
            target_id=client.client_id,
            target_name=name,
            after={"scopes": wanted},
        )
        return ClientWithSecret(client, secret)

    def list(self, actor: Actor, include_revoked: bool = False) -> list[OAuthClient]:
        """Every client, newest first; revoked ones only when asked."""
        self.authorizer.require(actor, Permission.CLIENTS_READ, ALL_WORKSPACES)
        query = select(OAuthClient).order_by(OAuthClient.id.desc())
        if not include_revoked:
            query = query.where(OAuthClient.revoked_at.is_(None))
        return list(self.session.scalars(query))

    def get(self, actor: Actor, client_id: str) -> OAuthClient:
        """One client (revoked ones included)."""
        self.authorizer.require(actor, Permission.CLIENTS_READ, ALL_WORKSPACES)
        client = self.session.scalar(select(OAuthClient).where(OAuthClient.client_id == client_id))
        if client is None:
            raise NotFound(f"No client '{client_id}'", client_id=client_id)
        return client

    def rotate_secret(self, actor: Actor, client_id: str) -> ClientWithSecret:
        """A new secret for the client; the old one stops working at once (tokens already
        issued stay valid until they expire)."""
        self.authorizer.require(actor, Permission.CLIENTS_WRITE, ALL_WORKSPACES)
        client = self._live(actor, client_id)
        secret = new_token()
        client.secret_hash = token_digest(secret)
        client.secret_rotated_at = utcnow()
        self.uow.record(
            actor,
            "client.secret_rotated",
            AuditTarget.OAUTH_CLIENT,
            target_id=client_id,
            target_name=client.name,
        )
        return ClientWithSecret(client, secret)

    def delete(self, actor: Actor, client_id: str) -> OAuthClient:
        """Revoke a client for good: no new tokens, and its tokens stop working at once."""
        self.authorizer.require(actor, Permission.CLIENTS_WRITE, ALL_WORKSPACES)
        client = self._live(actor, client_id)
        with self.uow.change(actor) as changes:
            client.revoked_at = utcnow()
            changes.audit(
                "client.deleted",
                AuditTarget.OAUTH_CLIENT,
                target_id=client_id,
                target_name=client.name,
                before={"scopes": client.scopes.split()},
            )
            changes.end_tokens()
        return client

    def find_active(self, client_id: str) -> OAuthClient | None:
        """The client with this id unless it was revoked (for the token endpoint)."""
        client = self.session.scalar(select(OAuthClient).where(OAuthClient.client_id == client_id))
        return client if client is not None and client.revoked_at is None else None

    @staticmethod
    def secret_matches(client: OAuthClient, secret: str) -> bool:
        return hmac.compare_digest(client.secret_hash, token_digest(secret))

    def _live(self, actor: Actor, client_id: str) -> OAuthClient:
        client = self.get(actor, client_id)
        if client.revoked_at is not None:
            raise NotFound(f"Client '{client_id}' was deleted", client_id=client_id)
        return client


class KeyService:
    """Signing keys: rotated and retired by operators (the CLI), published as a JWK Set."""

    def __init__(self, session: Session, uow: UnitOfWork, settings: Settings) -> None:
        self.session = session
        self.uow = uow
        self.ring = KeyRing(session, settings)

    def ensure(self) -> SigningKey:
        """The signing key, made now if there is none yet (start-up, ``init``)."""
        key = self.ring.ensure_signing_key()
        self.session.commit()
        return key

    def rotate(self, actor: Actor = SYSTEM) -> tuple[SigningKey, list[str]]:
        """A new signing key; the old ones verify until their tokens have expired. The new
        key and the kids retired now."""
        previous = [k.kid for k in self.ring.all_keys() if not self.ring.is_retired(k)]
        key, retired = self.ring.rotate()
        self.uow.record(
            actor,
            "signing_key.rotated",
            AuditTarget.SIGNING_KEY,
            target_id=key.kid,
            after={"kid": key.kid, "still_verifying": previous, "retired": retired},
        )
        return key, retired

    def retire(self, kid: str, actor: Actor = SYSTEM) -> SigningKey:
        """Stop a previous key verifying at once (say it leaked)."""
        with self.uow.change(actor) as changes:
            key = self.ring.retire(kid)
            changes.audit("signing_key.retired", AuditTarget.SIGNING_KEY, target_id=kid)
            changes.end_tokens()
        return key

    def list(self) -> list[tuple[SigningKey, str]]:
        """Every key with its state: signing, verifying or retired."""
        return [
            (
                key,
                "retired"
                if self.ring.is_retired(key)
                else "signing"
                if key.deactivated_at is None
                else "verifying",
            )
            for key in self.ring.all_keys()
        ]

    def jwks(self) -> dict[str, Any]:
        return self.ring.jwks()


class TokenService:
    """Services' access tokens: issued, checked, introspected and revoked."""

    def __init__(
        self, session: Session, uow: UnitOfWork, settings: Settings, clients: ClientService
    ) -> None:
        self.session = session
        self.uow = uow
        self.settings = settings
        self.clients = clients
        self.ring = KeyRing(session, settings)

    def issue(self, client: OAuthClient, scope: str) -> str:
        """A client-credentials access token for ``client`` with ``scope``."""
        token = self.ring.sign(
            {"sub": client.client_id, "client_id": client.client_id, "scope": scope},
            DECISIONS_AUDIENCE,
            self.settings.client_token_ttl,
        )
        self.session.commit()  # a first signing key, if one was just made
        return token

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a live service token: valid (see :meth:`KeyRing.verify`) and its
        client not deleted; else :class:`InvalidToken`."""
        claims, client_live = self.ring.verify_with_client(token, DECISIONS_AUDIENCE)
        if not client_live:
            raise InvalidToken("The client of this access token was deleted", "client-deleted")
        return claims

    def require(self, token: str, scope: str) -> dict[str, Any]:
        """The claims of a live service token holding ``scope``; else InvalidToken (401)
        or InsufficientScope (403). Refusals are counted by the caller, never audited
        one by one (gateway.audit.refusals)."""
        claims = self.verify(token)
        if scope not in str(claims.get("scope", "")).split():
            raise InsufficientScope(scope)
        return claims

    def revoke(self, caller: OAuthClient, token: str) -> bool:
        """RFC 7009: revoke a token the caller was issued. Unknown, expired or already
        revoked tokens are fine (nothing to do); another client's token is refused."""
        try:
            claims = self.ring.verify(token, DECISIONS_AUDIENCE)
        except InvalidToken:
            return False
        if claims.get("client_id") != caller.client_id:
            raise Forbidden("The token was issued to another client")
        if not self.ring.revoke(claims):
            return False
        # The revocation row joins the change's transaction.
        with self.uow.change(client_actor(caller.client_id, caller.name)) as changes:
            changes.audit(
                "token.revoked",
                AuditTarget.ACCESS_TOKEN,
                target_id=claims["jti"],
                target_name=caller.name,
                after={"client_id": caller.client_id, "expires": claims["exp"]},
            )
            changes.end_tokens()
        return True

    def introspect(self, caller: OAuthClient, token: str) -> dict[str, Any]:
        """RFC 7662: what a token is, if active and the caller may know (its own tokens;
        any service token with ``tokens:introspect``); else ``{"active": false}``."""
        try:
            claims = self.verify(token)
        except InvalidToken:
            return {"active": False}
        own = claims.get("client_id") == caller.client_id
        if not own and INTROSPECT_SCOPE not in caller.scopes.split():
            return {"active": False}
        return {
            "active": True,
            "token_type": "Bearer",
            **{
                name: claims[name]
                for name in ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "jti")
                if name in claims
            },
        }
