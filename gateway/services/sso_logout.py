"""OpenID Connect Back-Channel Logout for a workspace's connection: its provider posts a
logout token (read by :mod:`gateway.identity.logout_tokens`), and the sessions that were
started through that connection for the token's subject (only the provider's session
``sid``, when the token names one) end at once.

Each session started through a connection records it and the provider's ``sid`` from the
ID token (``AuthSession.sso_connection_id``, ``sso_sid``), so a logout ends exactly
those: the person's sessions through other ways in (a password, a passkey, another
connection) and everyone else's stay. A token whose subject is linked to nobody ends
nothing and is answered as any other (it tells nothing of who has an account).

A logout token is used once: the SHA-256 of its ``jti`` is kept (``sso_logout_tokens``)
until a replay would be refused for its age anyway, and the scheduled upkeep deletes the
expired ones (:meth:`SsoLogoutService.prune`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.db.models import AuthSession, SsoConnection, SsoLink, SsoLogoutToken, User, utcnow
from gateway.identity.logout_tokens import (
    LEEWAY_SECONDS,
    MAX_AGE_SECONDS,
    LogoutClaims,
    LogoutTokenRefused,
)
from gateway.identity.security import token_digest
from gateway.services.base import Actor, AuditTarget, UnitOfWork
from gateway.services.sso_connections import SsoConnectionService

LOGOUT_REASON = "single sign-on back-channel logout"
# How long a jti is remembered: a replay after this is refused for its iat (accepted up
# to MAX_AGE_SECONDS old, and up to LEEWAY_SECONDS in the future).
REMEMBER_JTI = timedelta(seconds=MAX_AGE_SECONDS + 2 * LEEWAY_SECONDS)


@dataclass(frozen=True)
class BackchannelLogout:
    """What a logout did: whose sessions ended (None: nobody identified), how many."""

    user_id: int | None
    sessions_ended: int


def provider_actor(connection: SsoConnection, client: str, request_id: str | None) -> Actor:
    """The connection's identity provider, acting through its back channel."""
    return Actor(
        None,
        f"identity provider of {connection.name} ({connection.workspace_slug})",
        request_id=request_id,
        source_address=client or None,
        client_id=f"sso:{connection.id}",
    )


def end_sessions(session: Session, sessions: list[AuthSession], reason: str) -> int:
    """Revoke ``sessions`` (not committed): their access tokens are refused at the next
    request, their refresh tokens too, console sessions at the next click."""
    now = utcnow()
    for auth_session in sessions:
        auth_session.revoked_at = now
        auth_session.revoked_reason = reason
    return len(sessions)


class SsoLogoutService:
    def __init__(
        self, session: Session, uow: UnitOfWork, connections: SsoConnectionService
    ) -> None:
        self.session = session
        self.uow = uow
        self.connections = connections

    def connection(self, connection_id: int) -> SsoConnection:
        """The connection a logout token is posted to: it exists and is on (else
        ``SsoNotConfigured``, as its sign-in answers), its issuer still allowed."""
        return self.connections.for_sign_in(connection_id)

    def logout(
        self,
        connection: SsoConnection,
        claims: LogoutClaims,
        client: str = "",
        request_id: str | None = None,
    ) -> BackchannelLogout:
        """End the sessions ``claims`` name, started through ``connection``; audited
        ``sso.backchannel_logout``. LogoutTokenRefused (audited) for a replayed token."""
        now = utcnow()
        try:
            with self.uow.events_only(provider_actor(connection, client, request_id)) as changes:
                self.session.add(
                    SsoLogoutToken(
                        connection_id=connection.id,
                        jti_hash=token_digest(claims.jti),
                        received_at=now,
                        expires_at=now + REMEMBER_JTI,
                    )
                )
                # The unique index decides between two deliveries of one token at once.
                self.session.flush()
                user, sessions = self._sessions(connection, claims)
                ended = end_sessions(self.session, sessions, LOGOUT_REASON)
                people = sorted({s.user_id for s in sessions})
                if user is None and len(people) == 1:  # named by its sid alone
                    user = self.session.get(User, people[0])
                changes.audit(
                    "sso.backchannel_logout",
                    AuditTarget.USER if user else AuditTarget.SSO_CONNECTION,
                    user.id if user else connection.id,
                    user.name if user else connection.name,
                    connection.workspace_slug,
                    after={
                        "connection": connection.id,
                        "subject": claims.subject,
                        "sid": claims.sid,
                        "sessions_ended": ended,
                        "people": people,
                    },
                )
        except IntegrityError:
            self.refused(connection, "replayed", client, request_id)
            raise LogoutTokenRefused(
                "replayed", "This logout token was received already (its jti)", True
            ) from None
        return BackchannelLogout(user.id if user else None, ended)

    def _sessions(
        self, connection: SsoConnection, claims: LogoutClaims
    ) -> tuple[User | None, list[AuthSession]]:
        """The person the token's subject is linked to (None: nobody, or no subject), and
        the live sessions to end: that person's through this connection (with a ``sid``,
        that provider session's, and those that recorded none, which cannot be told
        apart); without a subject, that provider session's."""
        query = select(AuthSession).where(
            AuthSession.sso_connection_id == connection.id, AuthSession.revoked_at.is_(None)
        )
        user = None
        if claims.subject is not None:
            link = self.session.scalar(
                select(SsoLink).where(
                    SsoLink.connection_id == connection.id, SsoLink.subject == claims.subject
                )
            )
            user = self.session.get(User, link.user_id) if link else None
            if user is None:
                return None, []
            query = query.where(AuthSession.user_id == user.id)
            if claims.sid is not None:
                query = query.where(
                    or_(AuthSession.sso_sid == claims.sid, AuthSession.sso_sid.is_(None))
                )
        else:
            query = query.where(AuthSession.sso_sid == claims.sid)
        return user, list(self.session.scalars(query.order_by(AuthSession.created_at)))

    def refused(
        self,
        connection: SsoConnection,
        reason: str,
        client: str = "",
        request_id: str | None = None,
    ) -> None:
        """Audit a logout token the connection's provider signed but that is refused
        (``sso.backchannel_logout_refused``, with the reason's category): only the
        provider can send those, so each is recorded. (Tokens whose signature does not
        verify, anyone can send: the HTTP layer counts them and audits by sample.)"""
        self.session.rollback()
        self.uow.record(
            provider_actor(connection, client, request_id),
            "sso.backchannel_logout_refused",
            AuditTarget.SSO_CONNECTION,
            target_id=connection.id,
            target_name=connection.name,
            workspace=connection.workspace_slug,
            after={"connection": connection.id, "reason": reason},
        )

    def prune(self) -> int:
        """Forget the logout tokens whose replay would be refused for their age anyway;
        how many (the scheduled upkeep)."""
        pruned = self.session.execute(
            delete(SsoLogoutToken)
            .where(SsoLogoutToken.expires_at < utcnow())
            .execution_options(synchronize_session=False)
        )
        self.session.commit()
        return int(pruned.rowcount)  # type: ignore[attr-defined]
