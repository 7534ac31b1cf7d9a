"""Passwords people manage themselves: changing it while signed in, and resetting a
forgotten one with a link sent by email.

Either way every existing session of the person ends at once (their access tokens carry
the session version, which goes up; their sessions are revoked, so refresh tokens stop).
A change hands back a new session for the caller; a reset signs nobody in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gateway.config import Settings
from gateway.db.models import (
    OutboxMessage,
    TokenPurpose,
    User,
    UserStatus,
    UserToken,
    utcnow,
)
from gateway.emails import normalise_email
from gateway.errors import InvalidInput, InvalidResetToken, TooManyRequests
from gateway.identity.passwords import password_problem
from gateway.identity.security import hash_password, new_token, seal, token_digest, verify_password
from gateway.identity.throttle import LoginThrottle
from gateway.notifier import Notifier, PasswordResetNotice, reset_payload
from gateway.services.auth import AuthService, IssuedToken, claim_user_token
from gateway.services.base import AuditTarget, ChangeSet, self_actor
from gateway.services.users import account_by_email

log = logging.getLogger("ringfence")

PASSWORD_RESET_KIND = "password_reset"  # noqa: S105 - the outbox message kind (mailer.messages)


@dataclass(frozen=True)
class ResetLinkState:
    """What a reset link leads to, for the reset page."""

    usable: bool
    reason: str
    email: str = ""


def _field_problem(field: str, password: str) -> None:
    if problem := password_problem(password):
        raise InvalidInput(problem, errors={field: [problem]})


class CredentialService:
    def __init__(
        self,
        session: Session,
        settings: Settings,
        throttle: LoginThrottle,
        notifier: Notifier,
        auth: AuthService,
    ) -> None:
        self.session = session
        self.settings = settings
        self.throttle = throttle
        self.notifier = notifier
        self.auth = auth

    # -- changing, signed in ---------------------------------------------------------

    def change_password(
        self,
        user_id: int,
        current: str,
        new: str,
        client: str = "",
        request_id: str | None = None,
    ) -> IssuedToken:
        """Set a new password for the signed-in ``user_id`` who knows the current one.
        Every session of theirs ends, this one included; the answer is a new session
        for the caller. Wrong current passwords count as failed sign-ins (throttled)."""
        user = self.session.get(User, user_id)
        if user is None or user.status != UserStatus.ACTIVE:
            raise InvalidInput("This account cannot change its password")
        try:
            self.throttle.check(user.email, client)
        except TooManyRequests:
            self._audit(user, "auth.password_change_throttled", client, request_id)
            self.session.commit()
            raise
        if user.password_hash is None:
            # Accepted an invitation through single sign-on: nothing to compare with.
            message = (
                "This account has no password (it signs in with single sign-on); "
                "ask for a password reset email to set one"
            )
            raise InvalidInput(message, errors={"current_password": [message]})
        if not verify_password(user.password_hash, current, self.settings.password_hash_profile):
            # A stolen access token must not become a way to guess the password.
            self.throttle.failed(user.email, client)
            self._audit(user, "auth.password_change_failed", client, request_id)
            self.session.commit()
            message = "The current password is not correct"
            raise InvalidInput(message, errors={"current_password": [message]})
        _field_problem("new_password", new)
        if verify_password(user.password_hash, new, self.settings.password_hash_profile):
            message = "The new password must differ from the current one"
            raise InvalidInput(message, errors={"new_password": [message]})
        user.password_hash = hash_password(new, self.settings.password_hash_profile)
        ended = self.auth.end_all_sessions(user, "password changed")
        self._void_reset_links(user)
        self._audit(user, "auth.password_changed", client, request_id, sessions_ended=ended)
        # One commit: the new hash, the ended sessions, the audit event and the new session.
        return self.auth.start_session(user, "auth.login_after_password_change", client, request_id)

    # -- resetting by email ------------------------------------------------------------

    def check_reset_allowed(
        self, email: str, client: str = "", request_id: str | None = None
    ) -> None:
        """Count a reset request; TooManyRequests when the address typed or the client
        asked too often (the same for every address, known or not)."""
        typed = normalise_email(email)[:320]
        try:
            self.throttle.reset_requested(typed, client)
        except TooManyRequests:
            self._audit(None, "auth.password_reset_throttled", client, request_id, email=typed)
            self.session.commit()
            raise

    def request_reset(self, email: str, client: str = "", request_id: str | None = None) -> None:
        """Email a one-time reset link to ``email`` if it belongs to an active account;
        otherwise only audit the request. Meant to run off the request (after
        :meth:`check_reset_allowed`), so that the answer cannot tell the two apart."""
        typed = normalise_email(email)[:320]
        user = account_by_email(self.session, typed)
        token = new_token()
        if user is None or user.status != UserStatus.ACTIVE:
            self._audit(
                user, "auth.password_reset_requested", client, request_id, email=typed, sent=False
            )
            self.session.commit()
            return
        self._void_reset_links(user)
        expires_at = utcnow() + timedelta(minutes=self.settings.password_reset_ttl_minutes)
        self.session.add(
            UserToken(
                token_hash=token_digest(token),
                purpose=TokenPurpose.PASSWORD_RESET,
                user_id=user.id,
                expires_at=expires_at,
            )
        )
        notice = PasswordResetNotice(
            user_id=user.id,
            to_address=user.email,
            to_name=user.name,
            reset_url=f"{self.settings.public_url.rstrip('/')}/reset/{quote(token)}",
            expires_at=expires_at.isoformat(),
        )
        message = OutboxMessage(
            kind=PASSWORD_RESET_KIND,
            to_address=user.email,
            sealed_payload=seal(self.settings.secret_key, reset_payload(notice)),
        )
        self.session.add(message)
        self._audit(
            user, "auth.password_reset_requested", client, request_id, email=typed, sent=True
        )
        self.session.commit()
        self.notifier.message_queued(message.id)

    def reset_link_state(self, token: str) -> ResetLinkState:
        """Whether a reset link can still be used, and why not."""
        row, user = self._reset_token(token)
        if row is None or user is None or user.status != UserStatus.ACTIVE:
            return ResetLinkState(False, "This password reset link is not valid.")
        if row.used_at is not None:
            return ResetLinkState(
                False, "This link was used already or replaced by a newer one; ask for a new one."
            )
        if row.expires_at <= utcnow():
            return ResetLinkState(False, "This password reset link has expired; ask for a new one.")
        return ResetLinkState(True, "", user.email)

    def confirm_reset(
        self, token: str, new_password: str, client: str = "", request_id: str | None = None
    ) -> User:
        """Set a new password with a reset link's token, once. Every session of the
        person ends; they sign in again with the new password."""
        _field_problem("new_password", new_password)
        state = self.reset_link_state(token)
        row, user = self._reset_token(token)
        if not state.usable or row is None or user is None:
            raise InvalidResetToken(state.reason)
        if not claim_user_token(self.session, row.id):
            self.session.rollback()
            raise InvalidResetToken("This link was used already; ask for a new one.")
        user.password_hash = hash_password(new_password, self.settings.password_hash_profile)
        ended = self.auth.end_all_sessions(user, "password reset")
        self._void_reset_links(user)
        self._audit(user, "auth.password_reset", client, request_id, sessions_ended=ended)
        self.session.commit()
        # Whoever holds the mailbox may sign in again at once, even after a lock-out.
        self.throttle.succeeded(user.email)
        return user

    # -- helpers -------------------------------------------------------------------------

    def _reset_token(self, token: str) -> tuple[UserToken | None, User | None]:
        row = self.session.scalar(
            select(UserToken).where(
                UserToken.token_hash == token_digest(token),
                UserToken.purpose == TokenPurpose.PASSWORD_RESET,
            )
        )
        return row, (self.session.get(User, row.user_id) if row else None)

    def _void_reset_links(self, user: User) -> None:
        """Older reset links stop working: only the latest one, unused, ever does."""
        self.session.execute(
            update(UserToken)
            .where(
                UserToken.user_id == user.id,
                UserToken.purpose == TokenPurpose.PASSWORD_RESET,
                UserToken.used_at.is_(None),
            )
            .values(used_at=utcnow())
            .execution_options(synchronize_session=False)
        )

    def _audit(
        self,
        user: User | None,
        action: str,
        client: str,
        request_id: str | None = None,
        **after: Any,
    ) -> None:
        """Add (not commit) an audit event: the person acts on their own account; no
        policy revision, as for sign-ins. Like sign-ins, it records the request id and
        the client's address."""
        actor = self_actor(user, client, request_id)
        changes = ChangeSet(self.session, actor)
        changes.audit(
            action,
            AuditTarget.USER if user else AuditTarget.LOGIN,
            target_id=user.id if user else None,
            target_name=user.name if user else after.get("email"),
            after={**after, "source_address": client or None},
        )
        self.session.add_all(changes.events)
