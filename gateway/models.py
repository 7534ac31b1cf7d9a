"""Database models: the source of truth. Alembic migrations own the schema."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from gateway.rules import Rule

# Stable constraint names, so migrations can refer to them on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes everywhere; SQLite hands back naive values, read as UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given; use gateway.models.utcnow()")
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UserStatus(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    DEACTIVATED = "deactivated"


class DeliveryStatus(enum.StrEnum):
    QUEUED = "queued"  # committed, not yet handed to SMTP
    SENDING = "sending"  # claimed by a worker
    RETRY = "retry"  # a transient failure; another attempt is scheduled
    SENT = "sent"  # the SMTP server accepted it
    FAILED = "failed"  # permanently refused, or out of attempts


class InvitationStatus(enum.StrEnum):
    """What an admin sees. Stored: pending, accepted, revoked, expired; ``sent`` and
    ``failed`` are a pending invitation's delivery status, shown in its place."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    ACCEPTED = "accepted"
    REVOKED = "revoked"
    EXPIRED = "expired"


def _enum(cls: type[enum.Enum]) -> Enum:
    # Stored as plain strings (no native ENUM type): the same migration runs everywhere
    # and adding a status later needs no ALTER TYPE.
    return Enum(cls, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e])


class User(Base):
    __tablename__ = "users"
    __table_args__ = (Index("uq_users_oidc_identity", "oidc_issuer", "oidc_subject", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Stored lower-cased, so the unique constraint is case-insensitive on every database.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[UserStatus] = mapped_column(_enum(UserStatus), default=UserStatus.PENDING)
    password_hash: Mapped[str | None] = mapped_column(String(255), default=None)
    # Bumped whenever every existing session must end (deactivation, password change).
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    # The single sign-on identity linked to this account (OpenID Connect issuer and
    # subject): once linked, the subject signs in even if the IdP's email changes.
    oidc_issuer: Mapped[str | None] = mapped_column(String(255), default=None)
    oidc_subject: Mapped[str | None] = mapped_column(String(255), default=None)

    grants: Mapped[list[Grant]] = relationship(
        back_populates="user",
        cascade="all, delete-orphan",
        foreign_keys="Grant.user_id",
        order_by="Grant.id",
    )


class AuthSession(Base):
    """One sign-in: the family of refresh tokens it rotates through. Access tokens name
    their session, so logging out (or a replayed refresh token) ends it at once."""

    __tablename__ = "auth_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # The user's session_version at sign-in: deactivation or a password change bumps it,
    # which ends this session for good (reactivation does not revive it).
    session_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    revoked_reason: Mapped[str | None] = mapped_column(String(100), default=None)


class RefreshToken(Base):
    """SHA-256 of a refresh token; each is used once and replaced by the next."""

    __tablename__ = "refresh_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("auth_sessions.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class Workspace(Base):
    __tablename__ = "workspaces"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The slug is the Casbin domain; it never changes. Renaming changes ``name``.
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Grant(Base):
    """A user holds ``role`` in a workspace; ``workspace_id`` None means every workspace."""

    __tablename__ = "grants"
    __table_args__ = (
        UniqueConstraint("user_id", "workspace_slug", "role", name="uq_grants_user_workspace_role"),
        Index("ix_grants_workspace_role", "workspace_slug", "role"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # The domain as Casbin sees it: a workspace slug, or "*" for every workspace.
    workspace_slug: Mapped[str] = mapped_column(String(63))
    role: Mapped[str] = mapped_column(String(63))
    granted_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    user: Mapped[User] = relationship(back_populates="grants", foreign_keys=[user_id])


class Invitation(Base):
    __tablename__ = "invitations"
    __table_args__ = (Index("ix_invitations_email_status", "email", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[InvitationStatus] = mapped_column(
        _enum(InvitationStatus), default=InvitationStatus.PENDING
    )
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    invited_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # Delivery of the latest email (see OutboxMessage): queued, sending, retry, sent, failed.
    delivery_status: Mapped[DeliveryStatus] = mapped_column(
        _enum(DeliveryStatus), default=DeliveryStatus.QUEUED
    )
    delivery_detail: Mapped[str | None] = mapped_column(Text, default=None)
    delivery_attempts: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    resent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    resend_count: Mapped[int] = mapped_column(Integer, default=0)
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    # The roles the person gets on acceptance, per workspace.
    grants: Mapped[list[InvitationGrant]] = relationship(
        cascade="all, delete-orphan", order_by="InvitationGrant.id"
    )


class InvitationToken(Base):
    """SHA-256 of each token ever sent for an invitation; the token itself exists only in
    the email. Superseded tokens are kept so that an old link can say why it stopped."""

    __tablename__ = "invitation_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invitation_id: Mapped[int] = mapped_column(ForeignKey("invitations.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    superseded_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class OutboxMessage(Base):
    """An email to send, committed in the same transaction as the change that asked for
    it (transactional outbox). The payload is sealed (encrypted): it holds the accept
    link until the message is sent, then it is wiped."""

    __tablename__ = "outbox_messages"
    __table_args__ = (Index("ix_outbox_messages_status", "status", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # invitation | reminder
    invitation_id: Mapped[int | None] = mapped_column(
        ForeignKey("invitations.id", ondelete="SET NULL"), default=None
    )
    to_address: Mapped[str] = mapped_column(String(320))
    sealed_payload: Mapped[str | None] = mapped_column(Text)
    status: Mapped[DeliveryStatus] = mapped_column(
        _enum(DeliveryStatus), default=DeliveryStatus.QUEUED
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    detail: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AppSetting(Base):
    """Settings changed at run time through the admin API (they override the environment)."""

    __tablename__ = "app_settings"

    key: Mapped[str] = mapped_column(String(63), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(Integer, default=None)


class InvitationGrant(Base):
    __tablename__ = "invitation_grants"
    __table_args__ = (
        UniqueConstraint(
            "invitation_id", "workspace_slug", "role", name="uq_invitation_grants_entry"
        ),
        Index("ix_invitation_grants_workspace", "workspace_slug"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    invitation_id: Mapped[int] = mapped_column(ForeignKey("invitations.id", ondelete="CASCADE"))
    workspace_slug: Mapped[str] = mapped_column(String(63))
    role: Mapped[str] = mapped_column(String(63))


class AuditEvent(Base):
    """One change, kept forever: names people by id and a recorded display name, without
    foreign keys, so that removing a user keeps their history."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_at", "at"),
        Index("ix_audit_events_target", "target_type", "target_id"),
        Index("ix_audit_events_workspace", "workspace"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(Integer, default=None)
    actor_name: Mapped[str] = mapped_column(String(400), default="system")
    action: Mapped[str] = mapped_column(String(63))
    target_type: Mapped[str] = mapped_column(String(63))
    target_id: Mapped[str | None] = mapped_column(String(63), default=None)
    target_name: Mapped[str | None] = mapped_column(String(400), default=None)
    workspace: Mapped[str | None] = mapped_column(String(63), default=None)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    revision: Mapped[int | None] = mapped_column(Integer, default=None)
    request_id: Mapped[str | None] = mapped_column(String(100), default=None)


class PolicyState(Base):
    """A single row holding the policy revision, bumped by every committed change."""

    __tablename__ = "policy_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, default=0)


class CasbinRule(Base):
    """The table of ``sqlalchemy-adapter`` (same columns), owned by our migrations."""

    __tablename__ = "casbin_rule"
    __table_args__ = (Index("ix_casbin_rule_ptype_v0", "ptype", "v0"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ptype: Mapped[str] = mapped_column(String(255))
    v0: Mapped[str | None] = mapped_column(String(255), default=None)
    v1: Mapped[str | None] = mapped_column(String(255), default=None)
    v2: Mapped[str | None] = mapped_column(String(255), default=None)
    v3: Mapped[str | None] = mapped_column(String(255), default=None)
    v4: Mapped[str | None] = mapped_column(String(255), default=None)
    v5: Mapped[str | None] = mapped_column(String(255), default=None)

    @classmethod
    def from_rule(cls, rule: Rule) -> CasbinRule:
        values = dict(zip(("v0", "v1", "v2", "v3", "v4", "v5"), rule.values, strict=False))
        return cls(ptype=rule.ptype, **values)

    def to_rule(self) -> Rule:
        values = (self.v0, self.v1, self.v2, self.v3, self.v4, self.v5)
        return Rule(self.ptype, tuple(v for v in values if v is not None))

    # sqlalchemy-adapter's loader formats rules with str(); keep the same shape.
    def __str__(self) -> str:
        return str(self.to_rule())


class TokenPurpose(enum.StrEnum):
    PASSWORD_RESET = "password_reset"  # noqa: S105 - the emailed link of POST /auth/password-reset
    SSO_CODE = "sso_code"  # the one-time code a single sign-on hands to the client


class UserToken(Base):
    """SHA-256 of a one-time token issued to a user (a password reset link, an SSO
    sign-in code); the token itself exists only in the email or the redirect. Used once:
    ``used_at`` is set by a conditional update."""

    __tablename__ = "user_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    purpose: Mapped[TokenPurpose] = mapped_column(_enum(TokenPurpose))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
