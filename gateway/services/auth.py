"""Signing in and recognising callers by their access token."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.config import Settings
from gateway.errors import InvalidCredentials, Unauthorized
from gateway.models import User, UserStatus, utcnow
from gateway.security import issue_access_token, read_access_token, verify_password
from gateway.throttle import LoginThrottle


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    token_type: str = "Bearer"  # noqa: S105 - a name, not a secret


class AuthService:
    def __init__(self, session: Session, settings: Settings, throttle: LoginThrottle) -> None:
        self.session = session
        self.settings = settings
        self.throttle = throttle

    def login(self, email: str, password: str, client: str = "") -> IssuedToken:
        """A signed access token for an active user with the right password. The error
        is the same whether the address is unknown, the password wrong or the account
        inactive, and failures are throttled per address and per ``client`` alike, so
        that login reveals nothing about who has an account."""
        self.throttle.check(email, client)
        user = self.session.scalar(select(User).where(User.email == email.strip().lower()))
        password_ok = verify_password(user.password_hash if user else None, password)
        if user is None or not password_ok or user.status != UserStatus.ACTIVE:
            self.throttle.failed(email, client)
            raise InvalidCredentials()
        self.throttle.succeeded(email)
        user.last_login_at = utcnow()
        self.session.commit()
        token = issue_access_token(
            self.settings.secret_key, user.id, user.session_version, self.settings.access_token_ttl
        )
        return IssuedToken(token, self.settings.access_token_ttl)

    def authenticate(self, token: str) -> User:
        """The active user a token belongs to. Checked on every request, so deactivation
        (which bumps the session version) ends every token at once."""
        claims = read_access_token(self.settings.secret_key, token)
        user = self.session.get(User, claims.user_id)
        if (
            user is None
            or user.status != UserStatus.ACTIVE
            or user.session_version != claims.session_version
        ):
            raise Unauthorized("The access token is no longer valid")
        return user
