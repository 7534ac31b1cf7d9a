"""Signing in, refreshing and signing out; recognising callers by their access token.

A sign-in opens a session: a short-lived access token (JWT) naming the session, and a
refresh token (random, stored hashed) used once to get the next pair. Presenting a used
refresh token again means it was stolen or replayed: the whole session ends.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gateway import metrics
from gateway.audit.refusals import RefusalSummary, with_reason
from gateway.config import Settings
from gateway.db.models import (
    AuthSession,
    Grant,
    MfaFactor,
    PasskeyCredential,
    RefreshToken,
    TokenPurpose,
    User,
    UserStatus,
    UserToken,
    utcnow,
)
from gateway.emails import normalise_email
from gateway.engine.rules import ALL_WORKSPACES
from gateway.errors import (
    InvalidCredentials,
    MfaRequired,
    SsoRequired,
    TooManyRequests,
    Unauthorized,
)
from gateway.identity.security import new_token, token_digest, verify_password
from gateway.identity.signing import KeyRing, issue_access_token, read_access_token
from gateway.identity.throttle import LoginThrottle
from gateway.services.base import Actor, AuditTarget, UnitOfWork
from gateway.services.users import account_by_email

# Last seen is kept to the minute: precise enough for activity reports, and at most one
# write per person per minute.
SEEN_GRANULARITY = timedelta(minutes=1)
# How long the password step's ticket to the second step (gateway.services.mfa) lasts.
MFA_CHALLENGE_TTL = timedelta(minutes=5)


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    refresh_token: str
    token_type: str = "Bearer"  # noqa: S105 - a name, not a secret


class SsoRoute(Protocol):
    """Where a verified domain's people sign in (gateway.services.sso_domains.Route)."""

    @property
    def domain(self) -> str: ...
    @property
    def connection_id(self) -> int: ...
    @property
    def required(self) -> bool: ...


def holds_everywhere(session: Session, user: User) -> bool:
    """Whether ``user`` holds a role in every workspace (``*``): the installation's
    operators, whom no workspace's single sign-on signs in or holds to it."""
    found = select(Grant.id).where(Grant.user_id == user.id, Grant.workspace_slug == ALL_WORKSPACES)
    return session.scalar(found.limit(1)) is not None


def claim_user_token(session: Session, token_id: int) -> bool:
    """Mark a single-use token (reset link, sign-in code) used; False if it was already.
    The conditional update is the single-use guarantee: of two concurrent uses exactly one
    finds it unused."""
    claimed = session.execute(
        update(UserToken)
        .where(UserToken.id == token_id, UserToken.used_at.is_(None))
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return claimed.rowcount == 1  # type: ignore[attr-defined]


class AuthService:
    def __init__(
        self, session: Session, settings: Settings, throttle: LoginThrottle, uow: UnitOfWork
    ) -> None:
        self.session = session
        self.settings = settings
        self.throttle = throttle
        self.uow = uow
        # Whether RINGFENCE_MFA_REQUIRED asks ``user`` for a second factor (wired by
        # Services to MfaService.must_enrol; nobody, until then).
        self.must_enrol: Callable[[User], bool] = lambda user: False
        # Where an address's people sign in if a workspace verified its domain (wired by
        # Services to SsoDomainService.route_for; nowhere, until then).
        self.sso_route: Callable[[str], SsoRoute | None] = lambda email: None

    def login(
        self, email: str, password: str, client: str = "", request_id: str | None = None
    ) -> IssuedToken:
        """A signed access token for an active user with the right password. The error
        is the same whether the address is unknown, the password wrong or the account
        inactive, and failures are throttled per address and per ``client`` alike, so
        that login reveals nothing about who has an account. ``request_id`` (the HTTP
        layer's X-Request-ID) goes on the audit event, to find the request in the logs."""
        typed = normalise_email(email)[:320]
        try:
            self.throttle.check(email, client)
        except TooManyRequests:
            self._audit_sign_in("auth.login_throttled", None, typed, client, request_id)
            metrics.LOGIN_FAILURES.labels("throttled").inc()
            raise
        user = account_by_email(self.session, typed)
        password_ok = verify_password(
            user.password_hash if user else None, password, self.settings.password_hash_profile
        )
        self._refuse_if_sso_required(typed, email, user, password_ok, client, request_id)
        if user is None or not password_ok or user.status != UserStatus.ACTIVE:
            self.throttle.failed(email, client)
            self._audit_sign_in("auth.login_failed", user, typed, client, request_id)
            metrics.LOGIN_FAILURES.labels("invalid_credentials").inc()
            raise InvalidCredentials()
        self.throttle.succeeded(email)
        if self._has_second_factor(user):
            self._challenge(user, typed, client, request_id)
        # Without a factor where one is required: a session good only for enrolling.
        pending = self.must_enrol(user)
        self._audit_sign_in("auth.login", user, typed, client, request_id)
        if pending:
            self._audit_sign_in("mfa.enrolment_required", user, typed, client, request_id)
        user.last_login_at = utcnow()
        auth_session = AuthSession(
            id=secrets.token_hex(16),
            user_id=user.id,
            session_version=user.session_version,
            mfa_pending=pending,
            created_at=utcnow(),  # its maximum age counts from now (_session_end)
        )
        self.session.add(auth_session)
        issued = self._issue(user, auth_session)
        self.session.commit()
        return issued

    def _has_second_factor(self, user: User) -> bool:
        return bool(self.second_factors(user.id))

    def second_factors(self, user_id: int) -> list[str]:
        """The second steps open to the person, as ``methods`` names them: ``totp`` (a
        confirmed authenticator app), ``webauthn`` (a passkey or security key), and
        ``recovery_code`` beside either; empty: the password alone signs them in."""
        methods = []
        if self.session.scalar(
            select(MfaFactor.id).where(
                MfaFactor.user_id == user_id, MfaFactor.confirmed_at.is_not(None)
            )
        ):
            methods.append("totp")
        if self.session.scalar(
            select(PasskeyCredential.id).where(PasskeyCredential.user_id == user_id).limit(1)
        ):
            methods.append("webauthn")
        return [*methods, "recovery_code"] if methods else []

    def _challenge(self, user: User, typed: str, client: str, request_id: str | None) -> None:
        """No session yet: a single-use ticket to the second step, in the refusal. (The
        API's second step takes codes; a passkey's is a browser's ceremony, in the
        console, with the same ticket.)"""
        methods = self.second_factors(user.id)
        ticket = new_token()
        self.session.add(
            UserToken(
                token_hash=token_digest(ticket),
                purpose=TokenPurpose.MFA_CHALLENGE,
                user_id=user.id,
                expires_at=utcnow() + MFA_CHALLENGE_TTL,
            )
        )
        self._audit_sign_in("auth.mfa_challenged", user, typed, client, request_id)  # commits
        raise MfaRequired(
            "Enter a code from your authenticator app (or a recovery code)"
            if "totp" in methods
            else "Use your passkey or security key (or a recovery code)",
            mfa_token=ticket,
            expires_in=int(MFA_CHALLENGE_TTL.total_seconds()),
            methods=methods,
        )

    def _refuse_if_sso_required(
        self,
        typed: str,
        email: str,
        user: User | None,
        password_ok: bool,
        client: str,
        request_id: str | None,
    ) -> None:
        """SsoRequired when a workspace holds the address's domain verified and requires
        its single sign-on. Decided by the domain alone, after the password was checked
        as for anyone (the same time and throttle), so that the answer tells nothing the
        domain does not: not whether the account exists, nor whether the password was
        right. One exception, for a right password only: the installation's operators
        (a role in every workspace) keep their password, so that no workspace can lock
        them out (or take them over: its connection never signs them in)."""
        route = self.sso_route(typed)
        if route is None or not route.required:
            return
        active = user is not None and user.status == UserStatus.ACTIVE
        if active and password_ok and user is not None and holds_everywhere(self.session, user):
            return
        if not password_ok:
            self.throttle.failed(email, client)
        self._audit_sign_in("auth.sso_required", user, typed, client, request_id)
        metrics.LOGIN_FAILURES.labels("sso_required").inc()
        raise SsoRequired(
            f"People at {route.domain} sign in with their organisation's single sign-on, "
            "not a password here",
            domain=route.domain,
            sso_login=f"/auth/sso/connections/{route.connection_id}/login",
        )

    def refresh(self, refresh_token: str, request_id: str | None = None) -> IssuedToken:
        """The next token pair for a valid, unused refresh token. A used one ends its
        whole session (reuse means someone else has it)."""
        row = self.session.scalar(
            select(RefreshToken).where(RefreshToken.token_hash == token_digest(refresh_token))
        )
        auth_session = self.session.get(AuthSession, row.session_id) if row else None
        if row is None or auth_session is None or auth_session.revoked_at is not None:
            raise Unauthorized("The refresh token is not valid; sign in again")
        user = self.session.get(User, auth_session.user_id)
        if row.used_at is not None:
            self._end(auth_session, "refresh token reused")
            self.session.commit()
            if user is not None:
                self._audit_sign_in("auth.refresh_reused", user, user.email, "", request_id)
            raise Unauthorized("The refresh token was used already; the session has ended")
        if self._session_end(auth_session) <= utcnow():
            self._end(auth_session, "reached its maximum age")
            self.session.commit()
            raise Unauthorized("The session has reached its maximum age; sign in again")
        if row.expires_at <= utcnow() or user is None or not self._live(user, auth_session):
            raise Unauthorized("The refresh token has expired or the account is not active")
        # Conditional, so that of two concurrent refreshes with one token only one wins.
        used = self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None))
            .values(used_at=utcnow())
        )
        if used.rowcount != 1:  # type: ignore[attr-defined]
            self.session.rollback()
            raise Unauthorized("The refresh token was used already; sign in again")
        issued = self._issue(user, auth_session)
        self.session.commit()
        return issued

    def logout(self, session_id: str | None, request_id: str | None = None) -> None:
        """End the session the caller's access token belongs to (and its refresh tokens)."""
        auth_session = self.session.get(AuthSession, session_id) if session_id else None
        if auth_session is not None and auth_session.revoked_at is None:
            self._end(auth_session, "signed out")
            self.session.commit()
            user = self.session.get(User, auth_session.user_id)
            if user is not None:
                self._audit_sign_in("auth.logout", user, user.email, "", request_id)

    def authenticate(self, token: str) -> tuple[User, str | None]:
        """The active user a token belongs to, and its session. Checked on every request,
        so deactivation (which bumps the session version) and sign-out end it at once."""
        claims = read_access_token(KeyRing(self.session, self.settings), token)
        user = self.session.get(User, claims.user_id)
        auth_session = (
            self.session.get(AuthSession, claims.session_id) if claims.session_id else None
        )
        if (
            user is None
            or user.status != UserStatus.ACTIVE
            or user.session_version != claims.session_version
            or (claims.session_id is not None and (auth_session is None or auth_session.revoked_at))
        ):
            raise with_reason(Unauthorized("The access token is no longer valid"), "session-ended")
        self._note_seen(user)
        return user, claims.session_id

    def record_refusals(self, summary: RefusalSummary) -> None:
        """Audit a sample of refusals of callers who are not signed in (gateway.audit.refusals):
        nobody is known, so the event says only where from, what kind, how many since
        the source's previous event, and why, by category."""
        self.session.rollback()  # nothing of the refused request is committed with it
        self.uow.record(
            Actor(None, "anonymous", source_address=summary.source),
            summary.action,
            AuditTarget(summary.target_type),
            after={
                "kind": summary.kind,
                "refusals": summary.refusals,
                "reasons": summary.reasons,
                "window_seconds": summary.window_seconds,
                "source_address": summary.source,
            },
        )

    def enrolment_only(self, session_id: str | None) -> bool:
        """Whether the session is good only for enrolling a second factor (the session
        was just read by :meth:`authenticate` or :meth:`session_user`: no query)."""
        auth_session = self.session.get(AuthSession, session_id) if session_id else None
        return bool(auth_session is not None and auth_session.mfa_pending)

    def session_user(self, session_id: str) -> User:
        """The active user of a live sign-in session (the web console keeps the session
        id, not a token). Checked on every request, like :meth:`authenticate`."""
        auth_session = self.session.get(AuthSession, session_id)
        user = self.session.get(User, auth_session.user_id) if auth_session else None
        if auth_session is None or user is None or not self._live(user, auth_session):
            raise Unauthorized("The session has ended; sign in again")
        return user

    def _note_seen(self, user: User) -> None:
        """Record the request as the user's last seen time, at most once a minute: one
        conditional UPDATE (concurrent requests write once), not a write per request."""
        now = utcnow()
        if user.last_seen_at is not None and now - user.last_seen_at < SEEN_GRANULARITY:
            return
        self.session.execute(
            update(User)
            .where(
                User.id == user.id,
                (User.last_seen_at.is_(None)) | (User.last_seen_at < now - SEEN_GRANULARITY),
            )
            .values(last_seen_at=now, updated_at=User.updated_at)  # activity is no edit
            .execution_options(synchronize_session=False)
        )
        self.session.commit()

    def _issue(self, user: User, auth_session: AuthSession) -> IssuedToken:
        refresh_token = new_token()
        self.session.add(
            RefreshToken(
                token_hash=token_digest(refresh_token),
                session_id=auth_session.id,
                expires_at=min(
                    utcnow() + timedelta(days=self.settings.refresh_token_ttl_days),
                    self._session_end(auth_session),
                ),
            )
        )
        access = issue_access_token(
            KeyRing(self.session, self.settings),
            user.id,
            user.session_version,
            self.settings.access_token_ttl,
            session_id=auth_session.id,
        )
        return IssuedToken(access, self.settings.access_token_ttl, refresh_token)

    def _session_end(self, auth_session: AuthSession) -> datetime:
        """When ``auth_session`` ends however it is renewed (RINGFENCE_SESSION_MAX_DAYS):
        a person removed at an identity provider that pushes nothing, or whose refresh
        token leaked, is out by then at the latest."""
        return auth_session.created_at + timedelta(days=self.settings.session_max_days)

    def _audit_sign_in(
        self,
        action: str,
        user: User | None,
        email: str,
        client: str,
        request_id: str | None = None,
    ) -> None:
        # The person acts on their own account; an unknown address is named as typed.
        name = f"{user.name} <{user.email}>" if user else email
        actor = Actor(
            user.id if user else None, name, request_id=request_id, source_address=client or None
        )
        self.uow.record(
            actor,
            action,
            AuditTarget.USER if user else AuditTarget.LOGIN,
            target_id=user.id if user else None,
            target_name=user.name if user else email,
            after={"email": email, "source_address": client or None},
        )

    def start_session(
        self,
        user: User,
        via: str,
        client: str = "",
        request_id: str | None = None,
        *,
        sso_connection_id: int | None = None,
        sso_sid: str | None = None,
    ) -> IssuedToken:
        """A new session for ``user``, who proved who they are some other way than the
        password form (single sign-on, a password change); commits with whatever the
        caller changed, and audits ``via`` like a sign-in. A sign-on through a
        workspace's connection names it and the provider's session (``sid``): its
        back-channel logout ends the session."""
        user.last_login_at = utcnow()
        auth_session = AuthSession(
            id=secrets.token_hex(16),
            user_id=user.id,
            session_version=user.session_version,
            sso_connection_id=sso_connection_id,
            sso_sid=sso_sid,
            created_at=utcnow(),
        )
        self.session.add(auth_session)
        issued = self._issue(user, auth_session)
        self._audit_sign_in(via, user, user.email, client, request_id)  # commits
        return issued

    def end_all_sessions(self, user: User, reason: str) -> int:
        """End every session of ``user`` at once (not committed): bump the session version
        that each access token carries, and revoke the sessions so refresh tokens stop.
        How many live sessions ended."""
        user.session_version += 1
        ended = self.session.execute(
            update(AuthSession)
            .where(AuthSession.user_id == user.id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revoked_reason=reason)
            .execution_options(synchronize_session=False)
        )
        return int(ended.rowcount)  # type: ignore[attr-defined]

    @staticmethod
    def _live(user: User, auth_session: AuthSession) -> bool:
        return (
            user.status == UserStatus.ACTIVE
            and auth_session.revoked_at is None
            and auth_session.session_version == user.session_version
        )

    @staticmethod
    def _end(auth_session: AuthSession, reason: str) -> None:
        auth_session.revoked_at = utcnow()
        auth_session.revoked_reason = reason
