"""Database models: the source of truth. Alembic migrations own the schema."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from gateway.engine.rules import Rule

# Stable constraint names, so migrations can refer to them on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# Ids are never reused: other services hold ``user:<id>``, the audit trail and review
# assignments name people and things by id, so a reissued id would make them mean someone
# else. PostgreSQL sequences never go back; SQLite without AUTOINCREMENT hands the largest
# id out again once its row is deleted. Every table with a surrogate id takes this
# (migration 0011), except the single-row tables and casbin_rule, whose ids no one refers to.
NEVER_REUSED: dict[str, Any] = {"sqlite_autoincrement": True}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes everywhere; SQLite hands back naive values, read as UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given; use gateway.db.models.utcnow()")
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
    __table_args__ = (
        Index("uq_users_oidc_identity", "oidc_issuer", "oidc_subject", unique=True),
        # One account per address. Invitations' placeholders (pending) are not accounts:
        # each inviting workspace has its own, so that an invitation never tells the
        # inviter whether the address has an account or another workspace's invitation.
        Index(
            "uq_users_email_account",
            "email",
            unique=True,
            sqlite_where=text("status <> 'pending'"),
            postgresql_where=text("status <> 'pending'"),
        ),
        Index("ix_users_email", "email"),
        NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Stored lower-cased, so the unique index is case-insensitive on every database.
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[UserStatus] = mapped_column(_enum(UserStatus), default=UserStatus.PENDING)
    password_hash: Mapped[str | None] = mapped_column(String(255), default=None)
    # Bumped whenever every existing session must end (deactivation, password change).
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    # The last authenticated admin API request, recorded at most once a minute.
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
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
    # Good only for enrolling a second factor (RINGFENCE_MFA_REQUIRED): gateway.web.http
    # refuses everything else until the person confirms one.
    mfa_pending: Mapped[bool] = mapped_column(Boolean, default=False)
    # Started through a workspace's single sign-on connection: which one, and the
    # provider's session there (the ID token's ``sid``, if it sent one), so that the
    # provider's back-channel logout and unlinking the person end exactly these sessions
    # (gateway.services.sso_logout, gateway.services.sso_connections).
    sso_connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("sso_connections.id", ondelete="SET NULL"), index=True, default=None
    )
    sso_sid: Mapped[str | None] = mapped_column(String(255), default=None)


class RefreshToken(Base):
    """SHA-256 of a refresh token; each is used once and replaced by the next."""

    __tablename__ = "refresh_tokens"
    __table_args__ = NEVER_REUSED

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
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The slug is the Casbin domain; it never changes. Renaming changes ``name``.
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Who of its members must sign in with a second factor: off | admins | everyone
    # (on top of RINGFENCE_MFA_REQUIRED; gateway.services.mfa).
    mfa_required: Mapped[str] = mapped_column(String(20), default="off")


class WorkspaceActivity(Base):
    """When a person was last seen in a workspace: the time of the latest answered check
    about them there, recorded by :mod:`gateway.audit.activity` (to the minute, in batches).
    No ORM relationship: the database's ON DELETE CASCADE removes the rows with the
    person or the workspace."""

    __tablename__ = "workspace_activity"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    workspace_id: Mapped[int] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Grant(Base):
    """A user holds ``role`` in a workspace; ``workspace_id`` None means every workspace."""

    __tablename__ = "grants"
    __table_args__ = (
        UniqueConstraint("user_id", "workspace_slug", "role", name="uq_grants_user_workspace_role"),
        Index("ix_grants_workspace_role", "workspace_slug", "role"),
        NEVER_REUSED,
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
    # A time-limited grant: decisions deny from this moment (gateway.engine.expiry), and the
    # cleanup task removes the grant for good. None: until revoked.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None, index=True)

    user: Mapped[User] = relationship(back_populates="grants", foreign_keys=[user_id])


class CustomRole(Base):
    """A role one workspace's admins defined for that workspace alone (the roles of
    ``policies/`` are the installation's). Its permissions are ``p`` rules in the
    workspace's domain, written with it in the same change; deleting the workspace
    deletes it."""

    __tablename__ = "custom_roles"
    __table_args__ = (
        UniqueConstraint("workspace_slug", "name", name="uq_custom_roles_workspace_slug"),
        NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_slug: Mapped[str] = mapped_column(
        String(63), ForeignKey("workspaces.slug", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(String(500))
    # Catalogue permissions as written (``documents:read``, ``documents:update:own``), sorted.
    permissions: Mapped[list[str]] = mapped_column(JSON)
    created_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Invitation(Base):
    __tablename__ = "invitations"
    __table_args__ = (Index("ix_invitations_email_status", "email", "status"), NEVER_REUSED)

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
    __table_args__ = NEVER_REUSED

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
    __table_args__ = (Index("ix_outbox_messages_status", "status", "created_at"), NEVER_REUSED)

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


class IdempotencyKey(Base):
    """An admin write sent with ``Idempotency-Key``: what it was (a fingerprint of method,
    path and body), the revision it committed at (written in the change's own
    transaction), and once answered, the answer a retry with the same key gets again."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("principal", "key", name="uq_idempotency_keys_principal"),
        Index("ix_idempotency_keys_created_at", "created_at"),
        NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    principal: Mapped[str] = mapped_column(String(100))  # "user:<id>": keys are per caller
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    revision: Mapped[int | None] = mapped_column(Integer, default=None)
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    response_body: Mapped[str | None] = mapped_column(Text, default=None)
    response_headers: Mapped[dict[str, str] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class MailWorker(Base):
    """A mail worker whose consumer is connected to the broker, as of ``seen_at`` (it
    stamps its row while it consumes: mailer.worker.Heartbeat)."""

    __tablename__ = "mail_workers"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AppSetting(Base):
    """Settings changed at run time through the admin API (they override the environment)."""

    __tablename__ = "app_settings"

    key: Mapped[str] = mapped_column(String(63), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )


class InvitationGrant(Base):
    __tablename__ = "invitation_grants"
    __table_args__ = (
        UniqueConstraint(
            "invitation_id", "workspace_slug", "role", name="uq_invitation_grants_entry"
        ),
        Index("ix_invitation_grants_workspace", "workspace_slug"),
        NEVER_REUSED,
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
        Index("ix_audit_events_actor", "actor_id"),
        # Retention deletes the oldest events, possibly all: the next must not take an
        # archived event's id (the anchor and the archive files name them).
        NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Deliberately historical, no foreign key: the person may be removed since; their
    # recorded name is beside it, and ids are never reused, so it names nobody else.
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
    # An OAuth client acting (the person, if any, is actor_id / actor_name).
    actor_client_id: Mapped[str | None] = mapped_column(String(100), default=None)
    source_address: Mapped[str | None] = mapped_column(String(100), default=None)
    reason: Mapped[str | None] = mapped_column(String(1000), default=None)
    # Tamper evidence (gateway.audit.chain): SHA-256 over this event's fields and the
    # previous event's hash. Filled in at flush, under the chain's lock.
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditChain(Base):
    """The head of the audit chain (a single row): appends lock it, so that two
    transactions cannot both chain onto the same event; and the anchor, the hash of the
    last event archived and deleted by retention, where the stored chain now starts."""

    __tablename__ = "audit_chain"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    head_id: Mapped[int] = mapped_column(Integer, default=0)
    head_hash: Mapped[str] = mapped_column(String(64))
    anchor_id: Mapped[int] = mapped_column(Integer, default=0)
    anchor_hash: Mapped[str] = mapped_column(String(64))
    anchored_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class AuditCheckpoint(Base):
    """A signed checkpoint of the audit chain: a compact JWS, signed with the signing key
    of the moment, over the chain's head (event id and hash), the count of events chained
    since the start, the time and the issuer. Written every
    ``RINGFENCE_AUDIT_CHECKPOINT_EVERY`` events and on demand; exports carry them, so an
    auditor verifies a trail offline with the public keys alone."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    head_id: Mapped[int] = mapped_column(Integer, index=True)
    head_hash: Mapped[str] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(Integer)
    kid: Mapped[str] = mapped_column(String(64))
    jws: Mapped[str] = mapped_column(Text)
    trigger: Mapped[str] = mapped_column(String(16))  # auto | manual
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


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


class PolicyChange(Base):
    """What one revision changed in the engine, written in the revision's own transaction,
    so that replicas can apply the revisions they missed one by one instead of reloading
    everything. Old rows are pruned; a replica missing a pruned revision reloads."""

    __tablename__ = "policy_changes"

    revision: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    changes: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ReviewCampaign(Base):
    """An access review: the grants active at its start, each to be kept or revoked by
    its reviewers before the deadline; undecided ones are then flagged or revoked."""

    __tablename__ = "review_campaigns"
    __table_args__ = (
        Index("ix_review_campaigns_status_deadline", "status", "deadline"),
        NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # One workspace slug, or "*" for every workspace.
    workspace_slug: Mapped[str] = mapped_column(String(63))
    # Deliberately historical (no foreign key), with the recorded name beside it.
    created_by_id: Mapped[int | None] = mapped_column(Integer, default=None)
    created_by_name: Mapped[str] = mapped_column(String(400), default="system")
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    deadline: Mapped[datetime] = mapped_column(UTCDateTime())
    on_deadline: Mapped[str] = mapped_column(String(10), default="flag")  # flag | revoke
    status: Mapped[str] = mapped_column(String(10), default="open")  # open | closed
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # Started by the scheduler (RINGFENCE_REVIEW_EVERY_DAYS) rather than by a person.
    periodic: Mapped[bool] = mapped_column(Boolean, default=False)

    items: Mapped[list[ReviewItem]] = relationship(
        back_populates="campaign", cascade="all, delete-orphan", order_by="ReviewItem.id"
    )


class ReviewItem(Base):
    """One grant as it was at the campaign's start (a frozen snapshot: no foreign key to
    the grant or the user, so later changes and removals keep the record)."""

    __tablename__ = "review_items"
    __table_args__ = (
        Index("ix_review_items_campaign_decision", "campaign_id", "decision"),
        NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("review_campaigns.id", ondelete="CASCADE"))
    # Deliberately historical: the holder as they were (email and name beside it).
    user_id: Mapped[int] = mapped_column(Integer)
    user_email: Mapped[str] = mapped_column(String(320))
    user_name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(63))
    workspace_slug: Mapped[str] = mapped_column(String(63))
    granted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    decision: Mapped[str] = mapped_column(String(10), default="undecided")  # keep | revoke
    # Left undecided at a "flag" deadline: someone should look at it.
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    comment: Mapped[str | None] = mapped_column(Text, default=None)
    # Deliberately historical (no foreign key), with the recorded name beside it.
    decided_by_id: Mapped[int | None] = mapped_column(Integer, default=None)
    decided_by_name: Mapped[str | None] = mapped_column(String(400), default=None)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    campaign: Mapped[ReviewCampaign] = relationship(back_populates="items")
    reviewers: Mapped[list[ReviewItemReviewer]] = relationship(
        cascade="all, delete-orphan", order_by="ReviewItemReviewer.user_id"
    )


class ReviewItemReviewer(Base):
    """Who may decide an item: at the start, those who could revoke that grant (never
    its holder). An assignment, not history: removing the person removes it (the
    database cascades), so that nobody else can ever inherit it; who decided an item is
    kept on the item itself."""

    __tablename__ = "review_item_reviewers"

    item_id: Mapped[int] = mapped_column(
        ForeignKey("review_items.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class OAuthClient(Base):
    """A service that calls Ringfence with OAuth 2.0 client credentials. The secret is
    stored only as its SHA-256: it is random (256 bits), so no salt or slow hash is needed,
    and the token endpoint stays cheap."""

    __tablename__ = "oauth_clients"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    scopes: Mapped[str] = mapped_column(String(500))  # space-separated, as in OAuth
    # Deliberately historical (no foreign key), with the recorded name beside it.
    created_by_id: Mapped[int | None] = mapped_column(Integer, default=None)
    created_by_name: Mapped[str] = mapped_column(String(400), default="system")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    secret_rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # Revoked clients are kept (their id is never reused, the audit trail names them);
    # their tokens stop working at once.
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class DirectoryConnection(Base):
    """A company directory (Okta, Entra ID, ...) provisioning one workspace over SCIM 2.0
    (gateway.services.directory). Its bearer token is stored only as its SHA-256 (random,
    256 bits, as OAuth clients' secrets); revoked connections are kept, as the people and
    grants they provisioned stay."""

    __tablename__ = "directory_connections"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_slug: Mapped[str] = mapped_column(
        String(63), ForeignKey("workspaces.slug", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The role every active provisioned person holds (None: only their groups' roles).
    default_role: Mapped[str | None] = mapped_column(String(63), default=None)
    # Directory group (displayName, lower-cased) -> workspace role.
    group_roles: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # Deliberately historical (no foreign key), with the recorded name beside it.
    created_by_id: Mapped[int | None] = mapped_column(Integer, default=None)
    created_by_name: Mapped[str] = mapped_column(String(400), default="system")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    token_rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class DirectoryUser(Base):
    """A SCIM User of one connection: a person's membership of its workspace, linked to
    their account (created by the directory, or an existing one with that email; none
    while the directory has sent no email address). The SCIM attributes are kept as the
    directory sent them (``resource``, no password)."""

    __tablename__ = "directory_users"
    __table_args__ = (
        UniqueConstraint("connection_id", "user_name_key", name="uq_directory_users_user_name"),
        UniqueConstraint("connection_id", "external_id_key", name="uq_directory_users_external_id"),
        UniqueConstraint("connection_id", "user_id", name="uq_directory_users_account"),
        NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scim_id: Mapped[str] = mapped_column(String(36), unique=True)
    connection_id: Mapped[int] = mapped_column(
        ForeignKey("directory_connections.id", ondelete="CASCADE")
    )
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True, default=None
    )
    user_name: Mapped[str] = mapped_column(String(320))
    user_name_key: Mapped[str] = mapped_column(String(320))  # lower-cased: unique per connection
    external_id: Mapped[str | None] = mapped_column(String(255), default=None)
    external_id_key: Mapped[str | None] = mapped_column(String(255), default=None)  # the same
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # The account was created for this directory user (not an existing one linked).
    created_account: Mapped[bool] = mapped_column(Boolean, default=False)
    resource: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    user: Mapped[User | None] = relationship()


class DirectoryGroup(Base):
    """A SCIM Group of one connection; its members get the workspace role the
    connection maps its name to (``DirectoryConnection.group_roles``)."""

    __tablename__ = "directory_groups"
    __table_args__ = (
        UniqueConstraint("connection_id", "display_name_key", name="uq_directory_groups_name"),
        NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scim_id: Mapped[str] = mapped_column(String(36), unique=True)
    connection_id: Mapped[int] = mapped_column(
        ForeignKey("directory_connections.id", ondelete="CASCADE")
    )
    display_name: Mapped[str] = mapped_column(String(255))
    display_name_key: Mapped[str] = mapped_column(String(255))
    external_id: Mapped[str | None] = mapped_column(String(255), default=None)
    resource: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DirectoryGroupMember(Base):
    __tablename__ = "directory_group_members"

    group_id: Mapped[int] = mapped_column(
        ForeignKey("directory_groups.id", ondelete="CASCADE"), primary_key=True
    )
    member_id: Mapped[int] = mapped_column(
        ForeignKey("directory_users.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class DirectoryGrant(Base):
    """Marks a grant as given by a directory connection (the default role or a mapped
    group): the directory takes back only what it gave, never a role granted by hand.
    The grant's removal, by anyone, removes the mark (the database cascades)."""

    __tablename__ = "directory_grants"

    grant_id: Mapped[int] = mapped_column(
        ForeignKey("grants.id", ondelete="CASCADE"), primary_key=True
    )
    connection_id: Mapped[int] = mapped_column(
        ForeignKey("directory_connections.id", ondelete="CASCADE"), index=True
    )


class SigningKey(Base):
    """A key that signs access tokens (JWT, ``kid`` = its RFC 7638 thumbprint). The newest
    key not yet deactivated signs; deactivated keys keep verifying until every token they
    signed has expired, then count as retired. The private key is sealed (Fernet)."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(10))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    sealed_private_key: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    deactivated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class RevokedToken(Base):
    """The ``jti`` of a revoked access token, kept until the token would have expired."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class TokenPurpose(enum.StrEnum):
    PASSWORD_RESET = "password_reset"  # noqa: S105 - the emailed link of POST /auth/password-reset
    SSO_CODE = "sso_code"  # the one-time code a single sign-on hands to the client
    MFA_CHALLENGE = "mfa_challenge"  # the password step's ticket to the second step


class UserToken(Base):
    """SHA-256 of a one-time token issued to a user (a password reset link, an SSO
    sign-in code); the token itself exists only in the email or the redirect. Used once:
    ``used_at`` is set by a conditional update."""

    __tablename__ = "user_tokens"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    purpose: Mapped[TokenPurpose] = mapped_column(_enum(TokenPurpose))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # A sign-on code's connection and provider session (``sid``), handed on to the
    # session it is exchanged for (AuthSession.sso_connection_id, sso_sid).
    sso_connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("sso_connections.id", ondelete="CASCADE"), default=None
    )
    sso_sid: Mapped[str | None] = mapped_column(String(255), default=None)


class EventStream(Base):
    """A subscription of a SIEM to the audit trail (gateway.services.streams): where the
    events go, which actions, and how far delivery got. The audit trail itself is the
    outbox: its events are committed in their change's transaction, their ids in commit
    order (the chain's lock), so ``cursor`` (the last audit id delivered or skipped) is
    all a stream needs to deliver at least once, in order, and to replay."""

    __tablename__ = "event_streams"
    __table_args__ = (Index("ix_event_streams_status", "status"), NEVER_REUSED)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # None: installation-wide (super admins); else only that workspace's events.
    workspace_id: Mapped[int | None] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), default=None
    )
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))  # webhook | syslog | file
    target: Mapped[str] = mapped_column(String(2000))  # URL, host:port or file name
    event_types: Mapped[list[str]] = mapped_column(JSON)
    # Webhooks: the signing secrets (newest first, at most two), sealed.
    sealed_secrets: Mapped[str | None] = mapped_column(Text, default=None)
    status: Mapped[str] = mapped_column(String(20), default="active")  # active | paused
    paused_reason: Mapped[str | None] = mapped_column(Text, default=None)
    cursor: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # consecutive
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    claim_token: Mapped[str | None] = mapped_column(String(32), default=None)
    delivered: Mapped[int] = mapped_column(Integer, default=0)
    last_delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    secret_rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_by_id: Mapped[int | None] = mapped_column(Integer, default=None)
    created_by_name: Mapped[str] = mapped_column(String(400), default="system")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Sampled decision events (0: none, 1: every decision), and the last decision event
    # id delivered or skipped: a lane of its own beside the audit ``cursor``.
    decision_sample: Mapped[float] = mapped_column(Float, default=0.0)
    decision_cursor: Mapped[int] = mapped_column(Integer, default=0)

    workspace: Mapped[Workspace | None] = relationship()


class DecisionEvent(Base):
    """A sampled decision of the check endpoints, kept for the event streams that asked
    for decisions (gateway.audit.decision_feed writes them in batches, off the request;
    gateway.services.streams delivers them). Not an audit event: no chain, and gone once
    every stream that wants decisions is past it. Ids are given under the lock of
    ``decision_event_head``, so they are in commit order, as the audit ids are.
    ``draw`` is the decision's random draw: a stream sampling at rate r takes the events
    whose draw is below r (the same ones at every retry)."""

    __tablename__ = "decision_events"
    __table_args__ = (Index("ix_decision_events_workspace_id", "workspace", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    subject: Mapped[str] = mapped_column(Text)
    workspace: Mapped[str] = mapped_column(Text)
    resource: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)
    allowed: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    revision: Mapped[int | None] = mapped_column(Integer, default=None)
    request_id: Mapped[str | None] = mapped_column(Text, default=None)
    draw: Mapped[float] = mapped_column(Float)


class DecisionEventHead(Base):
    """The last decision event id given (a single row): writers lock it while they
    insert, so a reader never sees a later id before an earlier one."""

    __tablename__ = "decision_event_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    head_id: Mapped[int] = mapped_column(Integer, default=0)


class MfaFactor(Base):
    """A person's second factor (gateway.services.mfa): a TOTP secret (RFC 6238), sealed
    with the secret key and never shown again after enrolment, which a first code
    confirms. ``last_step`` is the last time step whose code was accepted: a code is
    accepted once, and never one of an earlier step."""

    __tablename__ = "mfa_factors"
    __table_args__ = (
        Index("uq_mfa_factors_user_kind", "user_id", "kind", unique=True),
        NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))  # totp
    sealed_secret: Mapped[str] = mapped_column(Text)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_step: Mapped[int | None] = mapped_column(Integer, default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class MfaRecoveryCode(Base):
    """SHA-256 of a one-time recovery code (shown once, when made); ``used_at`` is set by
    a conditional update, so each is accepted once."""

    __tablename__ = "mfa_recovery_codes"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class SsoConnection(Base):
    """A workspace's own single sign-on (OpenID Connect) connection, configured by its
    admins (gateway.services.sso_connections): one per workspace. It signs in only people
    whose email domain the workspace has verified (:class:`SsoDomain`). The client secret
    is sealed with the secret key, as the SMTP password, and never shown again."""

    __tablename__ = "sso_connections"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_slug: Mapped[str] = mapped_column(
        String(63), ForeignKey("workspaces.slug", ondelete="CASCADE"), unique=True
    )
    name: Mapped[str] = mapped_column(String(200))
    issuer: Mapped[str] = mapped_column(String(255))
    client_id: Mapped[str] = mapped_column(String(255))
    sealed_client_secret: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Password sign-in refused for people of the workspace's verified domains.
    require_sso: Mapped[bool] = mapped_column(Boolean, default=False)
    # Just-in-time provisioning: the role a person of a verified domain with no account
    # gets at their first sign-on (None: off, the default).
    jit_role: Mapped[str | None] = mapped_column(String(63), default=None)
    # Deliberately historical (no foreign key), with the recorded name beside it.
    created_by_id: Mapped[int | None] = mapped_column(Integer, default=None)
    created_by_name: Mapped[str] = mapped_column(String(400), default="system")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SsoDomain(Base):
    """A workspace's claim to an email domain, proved by a DNS TXT record
    (gateway.services.sso_domains). Several workspaces may claim one domain; at most one
    holds it verified at a time (the partial unique index)."""

    __tablename__ = "sso_domains"
    __table_args__ = (
        UniqueConstraint("workspace_slug", "domain", name="uq_sso_domains_workspace_domain"),
        Index(
            "uq_sso_domains_verified",
            "domain",
            unique=True,
            sqlite_where=text("verified_at IS NOT NULL"),
            postgresql_where=text("verified_at IS NOT NULL"),
        ),
        NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_slug: Mapped[str] = mapped_column(
        String(63), ForeignKey("workspaces.slug", ondelete="CASCADE"), index=True
    )
    domain: Mapped[str] = mapped_column(String(253), index=True)  # lower-case, ASCII (IDNA)
    # The random part of the TXT value to publish (public by design: it is put in DNS).
    token: Mapped[str] = mapped_column(String(64))
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # The last check's outcome in words (found, not found, no answer).
    last_check: Mapped[str | None] = mapped_column(String(300), default=None)
    created_by_id: Mapped[int | None] = mapped_column(Integer, default=None)
    created_by_name: Mapped[str] = mapped_column(String(400), default="system")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SsoLink(Base):
    """An account linked to a subject of a workspace's connection: once linked, the
    subject signs in to that account (as long as its email's domain stays verified)."""

    __tablename__ = "sso_links"
    __table_args__ = (
        UniqueConstraint("connection_id", "subject", name="uq_sso_links_subject"),
        UniqueConstraint("connection_id", "user_id", name="uq_sso_links_account"),
        NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("sso_connections.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_sign_in_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class SsoLogoutToken(Base):
    """A logout token a connection's provider sent (OpenID Connect Back-Channel Logout
    1.0; gateway.services.sso_logout), by SHA-256 of its ``jti``: the same token again
    is a replay. Kept until ``expires_at``, past which the token's ``iat`` is too old to
    be accepted anyway; the scheduled upkeep deletes what expired."""

    __tablename__ = "sso_logout_tokens"
    __table_args__ = (
        UniqueConstraint("connection_id", "jti_hash", name="uq_sso_logout_tokens_jti"),
        NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("sso_connections.id", ondelete="CASCADE"))
    jti_hash: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class PasskeyCredential(Base):
    """A person's passkey or security key (WebAuthn; gateway.services.passkeys): a second
    factor, and a sign-in of its own when the authenticator keeps it (discoverable). The
    public key is public; ``sign_count`` is the authenticator's counter at its last use
    (a counter that does not grow means a cloned authenticator). ``user_handle`` is the
    random WebAuthn user id the person's passkeys carry: a passwordless sign-in names its
    account by it, never by an id or an address."""

    __tablename__ = "passkey_credentials"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    credential_id: Mapped[str] = mapped_column(String(1400), unique=True)  # base64url
    user_handle: Mapped[str] = mapped_column(String(100), index=True)  # base64url
    public_key: Mapped[bytes] = mapped_column(LargeBinary)  # COSE_Key
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    name: Mapped[str] = mapped_column(String(64))
    transports: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    aaguid: Mapped[str] = mapped_column(String(36), default="")
    backed_up: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class PasskeyChallenge(Base):
    """SHA-256 of a WebAuthn challenge handed to a browser, for one ceremony: its
    ``purpose`` (register, sign_in, second_factor), the person it is for (none for a
    passwordless sign-in), and SHA-256 of what binds it to that browser (its console
    session, sign-in cookie or second-step ticket). Used once, by a conditional update,
    and only until ``expires_at``."""

    __tablename__ = "passkey_challenges"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    challenge_hash: Mapped[str] = mapped_column(String(64), unique=True)
    purpose: Mapped[str] = mapped_column(String(20))
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True, default=None
    )
    binding_hash: Mapped[str] = mapped_column(String(64))
    # A registration's: the WebAuthn user id its options named, kept with the passkey.
    user_handle: Mapped[str | None] = mapped_column(String(100), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class RememberedDevice(Base):
    """A browser a person asked to remember after their second step
    (gateway.services.remembered_devices; RINGFENCE_MFA_REMEMBER_DAYS): SHA-256 of the
    random token in its cookie, never the token. At that person's next password step from
    that browser the second step is skipped, until ``expires_at``, as long as their
    ``session_version`` is the one it was made under (a password change or reset, an
    admin's reset of their factors, deactivation end it) and one of the factors they had
    then is left. ``label`` is what the person recognises it by (from the User-Agent)."""

    __tablename__ = "remembered_devices"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    session_version: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
