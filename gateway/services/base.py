"""What every service shares: who is acting, the unit of work, authorization, paging.

A change is made inside :meth:`UnitOfWork.change`: the database rows, their Casbin
rules, the audit events and the revision bump commit in one transaction; only then is
the in-memory engine updated and are notifications sent.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

import gateway.audit.chain  # noqa: F401 - chains every audit event a session flushes
from gateway.db.models import AuditEvent, CasbinRule, User, Workspace
from gateway.db.session import DatabaseSilent
from gateway.engine.engine import Change, DecisionEngine, RuleAdded, RuleRemoved
from gateway.engine.expiry import expire_due, schedule_for
from gateway.engine.rules import ALL_WORKSPACES, Rule
from gateway.errors import Forbidden, ServiceUnavailable
from gateway.replication import changelog, sync
from gateway.services.permissions import Permission

log = logging.getLogger("ringfence")
T = TypeVar("T")


@dataclass(frozen=True)
class Actor:
    """Who is making a change: a signed-in user, or the system (CLI, start-up)."""

    user_id: int | None
    name: str
    request_id: str | None = None
    # Recorded on every audit event of the change: where the request came from, the
    # reason the admin typed (X-Ringfence-Reason), and the OAuth client acting, if any.
    source_address: str | None = None
    reason: str | None = None
    client_id: str | None = None


SYSTEM = Actor(None, "system")


class AuditTarget(enum.StrEnum):
    """What an audit event is about (``AuditEvent.target_type``). Every event is written
    through :meth:`ChangeSet.audit` (or :meth:`UnitOfWork.record`), which takes only
    these, so this is the whole list: the console's audit filter offers exactly it, and
    a new kind of target cannot be written without appearing there."""

    USER = "user"
    INVITATION = "invitation"
    WORKSPACE = "workspace"
    SETTINGS = "settings"
    POLICY = "policy"
    ROLE = "role"  # a custom role of one workspace (gateway.services.custom_roles)
    LOGIN = "login"  # a sign-in, reset or sign-on attempt for no known account
    REVIEW_CAMPAIGN = "review_campaign"
    REVIEW_ITEM = "review_item"
    OAUTH_CLIENT = "oauth_client"
    SIGNING_KEY = "signing_key"
    ACCESS_TOKEN = "access_token"  # noqa: S105 - a kind of target, not a secret
    DIRECTORY_CONNECTION = "directory_connection"  # SCIM provisioning (gateway.services.directory)
    EVENT_STREAM = "event_stream"
    SSO_CONNECTION = "sso_connection"  # gateway.services.sso_connections
    SSO_DOMAIN = "sso_domain"  # an email domain a workspace claims


def self_actor(user: User | None, client: str = "", request_id: str | None = None) -> Actor:
    """A person acting on their own account (password, single sign-on, accepting an
    invitation), or ``anonymous`` when nobody known: with the request id and the client
    address, as every sign-in event has them."""
    name = f"{user.name} <{user.email}>" if user else "anonymous"
    return Actor(
        user.id if user else None, name, request_id=request_id, source_address=client or None
    )


# Offsets are bound by the database's 32-bit integers: a page beyond them is an empty
# page, not an offset that overflows inside the driver (a 500).
MAX_OFFSET = 2**31 - 1


def page_offset(page: int, size: int) -> int:
    """The offset of numbered page ``page`` (from 1) of ``size`` items."""
    return min((max(page, 1) - 1) * size, MAX_OFFSET)


def page_count(total: int, size: int) -> int:
    """How many pages of ``size`` items ``total`` items fill; at least one (an empty
    result is one empty page)."""
    return max(1, -(-total // size))


@dataclass(frozen=True)
class Page(Generic[T]):
    items: Sequence[T]
    total: int

    def pages(self, size: int) -> int:
        return page_count(self.total, size)


@dataclass
class ChangeSet:
    """The parts of one change, collected while the transaction is open."""

    session: Session
    actor: Actor
    engine_changes: list[Change] = field(default_factory=list)
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    events: list[AuditEvent] = field(default_factory=list)
    revision: int = 0
    # End times of time-limited grants' rules, for the engine's expiry schedule.
    expiries: list[tuple[Rule, datetime | None]] = field(default_factory=list)
    # Whether the change ends service tokens (see end_tokens).
    tokens_ended: bool = False

    def add_rule(self, rule: Rule) -> None:
        self.session.add(CasbinRule.from_rule(rule))
        self.engine_changes.append(RuleAdded(rule))

    def remove_rule(self, rule: Rule) -> None:
        columns = (CasbinRule.v0, CasbinRule.v1, CasbinRule.v2, CasbinRule.v3, CasbinRule.v4)
        conditions = [CasbinRule.ptype == rule.ptype]
        conditions += [col == value for col, value in zip(columns, rule.values, strict=False)]
        conditions += [col.is_(None) for col in columns[len(rule.values) :]]
        self.session.execute(delete(CasbinRule).where(*conditions))
        self.engine_changes.append(RuleRemoved(rule))

    def engine(self, change: Change) -> None:
        self.engine_changes.append(change)

    def end_tokens(self) -> None:
        """The change ends service tokens (a client deleted, a token revoked, a key
        retired): every process forgets the decision tokens it remembers once it
        commits or applies it (gateway.identity.token_cache)."""
        self.tokens_ended = True

    def expire_rule(self, rule: Rule, at: datetime | None) -> None:
        """``rule`` stops counting for decisions at ``at`` (see :mod:`gateway.engine.expiry`)."""
        self.expiries.append((rule, at))

    def audit(
        self,
        action: str,
        target_type: AuditTarget,
        target_id: Any = None,
        target_name: str | None = None,
        workspace: str | None = None,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        event = AuditEvent(
            actor_id=self.actor.user_id,
            actor_name=self.actor.name,
            action=action,
            # A plain string, and a refusal of any type not registered in AuditTarget.
            target_type=AuditTarget(target_type).value,
            target_id=None if target_id is None else str(target_id),
            target_name=target_name,
            workspace=workspace,
            before=before,
            after=after,
            request_id=self.actor.request_id,
            actor_client_id=self.actor.client_id,
            source_address=self.actor.source_address,
            reason=self.actor.reason,
        )
        self.events.append(event)

    def audit_each(
        self,
        workspaces: Iterable[str],
        action: str,
        target_type: AuditTarget,
        target_id: Any = None,
        target_name: str | None = None,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        """One event per workspace (none: one global event), so that each workspace's
        auditors see the change; snapshots keep only the ``roles`` of that workspace."""
        targets: list[str | None] = [*sorted(set(workspaces))] or [None]
        for workspace in targets:
            self.audit(
                action,
                target_type,
                target_id,
                target_name,
                workspace,
                _roles_in(before, workspace),
                _roles_in(after, workspace),
            )

    def on_commit(self, callback: Callable[[], None]) -> None:
        self.after_commit.append(callback)


def _roles_in(snapshot: dict[str, Any] | None, workspace: str | None) -> dict[str, Any] | None:
    if snapshot is None or workspace is None or not isinstance(snapshot.get("roles"), dict):
        return snapshot
    roles = snapshot["roles"]
    return {**snapshot, "roles": {workspace: roles[workspace]} if workspace in roles else {}}


class CommitOutcomeUnknown(ServiceUnavailable):
    """The link stalled or dropped while COMMIT was on its way: the server may have
    committed (it reads the COMMIT once the link moves again) or not. Neither "made" nor
    "nothing was changed" would be true; a retry with the same Idempotency-Key, or
    reading the resource, tells."""

    type = "commit-outcome-unknown"
    title = "The database stopped answering during COMMIT: the change may have been made"


class UnitOfWork:
    def __init__(self, session: Session, engine: DecisionEngine) -> None:
        self.session = session
        self.engine = engine
        self.revision = 0  # the last revision committed through this unit of work
        # Called inside each change's transaction, just before COMMIT, with its revision
        # (an idempotency key records what its request committed: gateway.web.idempotency).
        self.in_commit: list[Callable[[Session, int], None]] = []

    @contextmanager
    def change(self, actor: Actor) -> Iterator[ChangeSet]:
        """One atomic change: commit everything or nothing, then update the engine."""
        changes = ChangeSet(self.session, actor)
        try:
            yield changes
            # The change's rows are written first, as the ORM's autoflush did, not
            # under the revision's lock (taken next, held until COMMIT).
            self.session.flush()
            taken = changelog.record_next(
                self.session,
                changes.engine_changes,
                changes.expiries,
                changes.tokens_ended,
                audited=bool(changes.events),
                known=self.engine.revision,
            )
            changes.revision = taken.revision
            for event in changes.events:
                event.revision = changes.revision
                self.session.add(event)
            for hook in self.in_commit:
                hook(self.session, changes.revision)
            try:
                self.session.commit()
            except DBAPIError as exc:
                if exc.connection_invalidated or isinstance(exc.orig, DatabaseSilent):
                    raise CommitOutcomeUnknown(
                        f"The change would be revision {changes.revision}; whether the "
                        "database committed it is not known yet. Read the resource again "
                        "or retry with the same Idempotency-Key once the database answers.",
                        revision=changes.revision,
                        retry_after=2,
                    ) from exc
                raise
        except BaseException:
            self.session.rollback()
            raise
        self.revision = changes.revision
        sync.apply_committed(
            self.engine,
            self.session,
            changes.engine_changes,
            changes.revision,
            changes.tokens_ended,
            taken.before,
        )
        schedule_for(self.engine).committed(changes.engine_changes, changes.expiries)
        for callback in changes.after_commit:
            try:
                callback()
            except Exception:
                # The change is committed; a failed notification must not undo it or
                # reach the caller as an error. It is logged for the operator.
                log.exception("after-commit action failed")

    def record(self, actor: Actor, action: str, target_type: AuditTarget, **fields: Any) -> None:
        """Commit one audit event that changes nothing the engine decides with (sign-ins,
        sign-outs): no revision bump, so decisions' revisions stay meaningful."""
        changes = ChangeSet(self.session, actor)
        changes.audit(action, target_type, **fields)
        try:
            self.session.add_all(changes.events)
            self.session.commit()
        except BaseException:
            self.session.rollback()
            raise

    @contextmanager
    def events_only(self, actor: Actor) -> Iterator[ChangeSet]:
        """Commit the audit events collected in the block, with whatever row changes it
        made that decisions do not depend on: no revision bump, no engine change."""
        changes = ChangeSet(self.session, actor)
        try:
            yield changes
            self.session.add_all(changes.events)
            self.session.commit()
        except BaseException:
            self.session.rollback()
            raise


class Authorizer:
    """Answers the admin API's permission questions with the decision engine."""

    def __init__(self, session: Session, engine: DecisionEngine) -> None:
        self.session = session
        self.engine = engine

    def can(self, actor: Actor, permission: Permission, workspace: str) -> bool:
        if actor.user_id is None:  # the system (CLI) may do anything
            return True
        expire_due(self.engine)  # an ended grant gives no admin permission either
        return self.engine.permits(actor.user_id, workspace, permission.resource, permission.action)

    def require(self, actor: Actor, permission: Permission, workspace: str) -> None:
        if not self.can(actor, permission, workspace):
            where = "in every workspace" if workspace == ALL_WORKSPACES else f"in '{workspace}'"
            raise Forbidden(
                f"You need the permission '{permission}' {where}",
                permission=str(permission),
                workspace=workspace,
            )

    def can_all(self, actor: Actor, permission: Permission, workspaces: Iterable[str]) -> bool:
        """Whether :meth:`require_all` would let ``actor`` through."""
        return not self._missing(actor, permission, workspaces)

    def _missing(
        self, actor: Actor, permission: Permission, workspaces: Iterable[str]
    ) -> list[str]:
        return [
            workspace
            for workspace in sorted(set(workspaces)) or [ALL_WORKSPACES]
            if not self.can(actor, permission, workspace)
        ]

    def require_all(self, actor: Actor, permission: Permission, workspaces: Iterable[str]) -> None:
        """Every workspace in ``workspaces``; the global scope when there are none. The
        workspaces come from someone else's roles (a person's, an invitation's): a
        refusal names only one that ``actor`` may see (``workspaces:read``), never
        another workspace's slug."""
        missing = self._missing(actor, permission, workspaces)
        if not missing:
            return
        for workspace in missing:
            if workspace == ALL_WORKSPACES or self.can(
                actor, Permission.WORKSPACES_READ, workspace
            ):
                self.require(actor, permission, workspace)
        raise Forbidden(
            f"You need the permission '{permission}' in every workspace where they have "
            "a role, some of which you cannot see",
            permission=str(permission),
        )

    def require_can_grant(
        self, actor: Actor, role: str, workspace: str, verb: str = "grant"
    ) -> None:
        """No escalation: ``actor`` may grant ``role`` in ``workspace`` only if they hold
        every permission it gives there themselves. Taking a role away needs the same
        right (``verb="remove"``): nobody strips a role they could not have given."""
        missing = self._beyond(actor, role, workspace)
        if missing:
            raise Forbidden(
                f"You cannot {verb} '{role}' in '{workspace}': it gives permissions you do "
                f"not hold there ({', '.join(missing)})",
                role=role,
                workspace=workspace,
                missing_permissions=missing,
            )

    def can_grant(self, actor: Actor, role: str, workspace: str) -> bool:
        """Whether :meth:`require_can_grant` would let ``actor`` grant (or take away)
        ``role`` in ``workspace``: what a form may offer them."""
        return not self._beyond(actor, role, workspace)

    def _beyond(self, actor: Actor, role: str, workspace: str) -> list[str]:
        """The permissions ``role`` gives in ``workspace`` that ``actor`` lacks there."""
        if actor.user_id is None:
            return []
        return sorted(
            f"{resource}:{action}"
            for resource, action in self.engine.role_permissions(role, workspace)
            if not self.engine.holds(actor.user_id, workspace, resource, action)
        )

    def workspaces_where(self, actor: Actor, permission: Permission) -> set[str] | None:
        """Workspaces where ``actor`` holds ``permission``; None means all of them."""
        if self.can(actor, permission, ALL_WORKSPACES):
            return None
        slugs = self.session.scalars(select(Workspace.slug)).all()
        return {slug for slug in slugs if self.can(actor, permission, slug)}
