"""A workspace's own single sign-on connection (OpenID Connect), set up by its owners
(``sso:manage``): the issuer, this gateway's client there and its secret, whether it is
on, whether the people of the workspace's verified email domains must use it, and
just-in-time provisioning (off by default).

One connection per workspace. It signs in only people whose email domain the workspace
has verified (:mod:`gateway.services.sso_domains`): an identity provider is the
workspace's to choose, so what it says about addresses of other domains is not believed.

The client secret is sealed with the installation's secret key (as the SMTP password),
write-only, and must be given again whenever the issuer changes: otherwise whoever may
edit the connection could have the stored secret sent to a provider of theirs.

Disabling the connection ends, at once, the sessions of the people who signed in through
it and have no password (they have no other way in); the rest keep theirs.

Its owners also see the accounts linked to it (who, which subject, since when, their
last sign-in) and may unlink one: the link is forgotten and the sessions that person
started through the connection end (audited ``sso.unlinked``; the answer says whether
the person has another way in). Only people who hold a role in the workspace are
listed or unlinked; anyone else's id answers as an unknown one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.config import Settings
from gateway.db.models import (
    AuthSession,
    Grant,
    PasskeyCredential,
    SsoConnection,
    SsoLink,
    User,
    UserStatus,
    utcnow,
)
from gateway.errors import (
    Conflict,
    IdentityProviderUnavailable,
    InvalidInput,
    NotFound,
    SsoNotConfigured,
)
from gateway.identity.security import seal, unseal
from gateway.services.auth import AuthService
from gateway.services.base import Actor, AuditTarget, Authorizer, UnitOfWork
from gateway.services.grants import GrantService
from gateway.services.permissions import Permission
from gateway.services.sso_settings import ProviderCheck, check_issuer
from gateway.services.streams import refused_address
from gateway.services.users import grant_in_force

CALLBACK_PATH = "/auth/sso/connections/{id}/callback"
BACKCHANNEL_LOGOUT_PATH = "/auth/sso/connections/{id}/backchannel-logout"
UNLINK_REASON = "unlinked from single sign-on"
MOVED_REASON = "single sign-on connection moved to another issuer"
EDITABLE = ("name", "issuer", "client_id", "client_secret", "enabled", "require_sso", "jit_role")
MAX_SECRET = 1000


@dataclass(frozen=True)
class ConnectionView:
    """A connection as an admin reads it: never the secret, only that one is set."""

    connection: SsoConnection
    redirect_uri: str  # to register at the provider
    backchannel_logout_uri: str  # likewise, for OpenID Connect Back-Channel Logout

    def __getattr__(self, name: str) -> Any:
        return getattr(self.connection, name)


def connection_view(connection: SsoConnection) -> dict[str, Any]:
    """What the audit trail keeps of a connection (never its secret)."""
    return {
        "name": connection.name,
        "issuer": connection.issuer,
        "client_id": connection.client_id,
        "enabled": connection.enabled,
        "require_sso": connection.require_sso,
        "jit_role": connection.jit_role,
    }


def redirect_uri(settings: Settings, connection_id: int) -> str:
    return settings.public_url.rstrip("/") + CALLBACK_PATH.format(id=connection_id)


def backchannel_logout_uri(settings: Settings, connection_id: int) -> str:
    return settings.public_url.rstrip("/") + BACKCHANNEL_LOGOUT_PATH.format(id=connection_id)


@dataclass(frozen=True)
class LinkView:
    """An account linked to a subject of the connection, as its owners see it."""

    user_id: int
    name: str
    email: str
    status: str
    subject: str
    linked_at: datetime
    last_sign_in_at: datetime | None


@dataclass(frozen=True)
class Unlinked:
    """What unlinking did: the link that was, the sessions it ended, and the person's
    other ways in (none: they can sign in only through this connection again, which
    links them anew if the provider still vouches for them)."""

    link: LinkView
    sessions_ended: int
    other_ways_in: list[str]


def issuer_problem(issuer: str, allow_private: bool) -> str | None:
    """Why ``issuer`` may not be a connection's issuer, or None: an http(s) URL without
    query or fragment; https, on a public address, unless the installation allows
    private issuers (``RINGFENCE_SSO_ALLOW_PRIVATE_ISSUERS``), since the gateway fetches
    from it."""
    try:
        parts = urlsplit(issuer)
        port = parts.port
    except ValueError:
        return "Must be a URL"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "Must be an https URL naming a host"
    if parts.query or parts.fragment or parts.username or parts.password:
        return "Must be the issuer's URL, without a query, a fragment or credentials"
    if allow_private:
        return None
    if parts.scheme != "https":
        return (
            "Must be an https URL (an installation setting, "
            "RINGFENCE_SSO_ALLOW_PRIVATE_ISSUERS, allows http)"
        )
    problem = refused_address(parts.hostname, port or 443)
    if problem:
        return (
            f"Refused: {problem} (an installation setting, "
            "RINGFENCE_SSO_ALLOW_PRIVATE_ISSUERS, allows them)"
        )
    return None


class SsoConnectionService:
    def __init__(
        self,
        session: Session,
        uow: UnitOfWork,
        authorizer: Authorizer,
        grants: GrantService,
        auth: AuthService,
        settings: Settings,
    ) -> None:
        self.session = session
        self.uow = uow
        self.authorizer = authorizer
        self.grants = grants
        self.auth = auth
        self.settings = settings

    def view(self, connection: SsoConnection) -> ConnectionView:
        return ConnectionView(
            connection,
            redirect_uri(self.settings, connection.id),
            backchannel_logout_uri(self.settings, connection.id),
        )

    # -- reading -------------------------------------------------------------------

    def connections(self, actor: Actor, workspace: str | None = None) -> list[ConnectionView]:
        """The connections of the workspaces where ``actor`` holds ``sso:manage`` (of
        ``workspace`` alone, if given)."""
        where = self.authorizer.workspaces_where(actor, Permission.SSO_MANAGE)
        query = select(SsoConnection).order_by(SsoConnection.id)
        if workspace is not None:
            if where is not None and workspace not in where:
                return []
            query = query.where(SsoConnection.workspace_slug == workspace)
        elif where is not None:
            query = query.where(SsoConnection.workspace_slug.in_(where))
        return [self.view(c) for c in self.session.scalars(query)]

    def get(self, actor: Actor, connection_id: int) -> ConnectionView:
        return self.view(self._get(actor, connection_id))

    def _get(self, actor: Actor, connection_id: int) -> SsoConnection:
        """NotFound, as for an id that does not exist, unless ``actor`` holds
        ``sso:manage`` in the connection's workspace."""
        connection = self.session.get(SsoConnection, connection_id)
        if connection is None or not self.authorizer.can(
            actor, Permission.SSO_MANAGE, connection.workspace_slug
        ):
            raise NotFound(f"No single sign-on connection {connection_id}")
        return connection

    def client_secret(self, connection: SsoConnection) -> str:
        """The connection's client secret, unsealed: for the sign-in only."""
        return str(unseal(self.settings.secret_key, connection.sealed_client_secret)["secret"])

    def for_sign_in(self, connection_id: int) -> SsoConnection:
        """The connection a sign-in starts or ends with: it exists, is on, and its issuer
        is still one the installation allows (the name may resolve elsewhere now)."""
        connection = self.session.get(SsoConnection, connection_id)
        if connection is None or not connection.enabled:
            raise SsoNotConfigured(
                "This single sign-on does not exist or is turned off; sign in from the "
                "sign-in page with your email address"
            )
        problem = issuer_problem(connection.issuer, self.settings.sso_allow_private_issuers)
        if problem:
            raise IdentityProviderUnavailable(f"The connection's issuer is refused: {problem}")
        return connection

    def check(self, actor: Actor, connection_id: int) -> ProviderCheck:
        """Fetch the connection's discovery document now; say whether it answers."""
        connection = self._get(actor, connection_id)
        problem = issuer_problem(connection.issuer, self.settings.sso_allow_private_issuers)
        if problem:
            return ProviderCheck(False, problem)
        return check_issuer(connection.issuer, self.settings.oidc_timeout)

    # -- changing ------------------------------------------------------------------

    def create(self, actor: Actor, workspace: str, fields: dict[str, Any]) -> ConnectionView:
        """The workspace's connection (one per workspace: 409 if it has one)."""
        self.authorizer.require(actor, Permission.SSO_MANAGE, workspace)
        self.grants.workspaces.require_exists(workspace)
        missing = [f for f in ("name", "issuer", "client_id", "client_secret") if not fields.get(f)]
        if missing:
            raise InvalidInput(
                f"A connection needs {', '.join(missing)}",
                errors={f: ["required"] for f in missing},
            )
        values = self._checked(actor, workspace, fields)
        if self.session.scalar(
            select(SsoConnection.id).where(SsoConnection.workspace_slug == workspace)
        ):
            raise Conflict(f"Workspace '{workspace}' has a single sign-on connection already")
        now = utcnow()
        connection = SsoConnection(
            workspace_slug=workspace,
            name=values["name"],
            issuer=values["issuer"],
            client_id=values["client_id"],
            sealed_client_secret=self._seal(values["client_secret"]),
            enabled=values.get("enabled", True),
            require_sso=values.get("require_sso", False),
            jit_role=values.get("jit_role"),
            created_by_id=actor.user_id,
            created_by_name=actor.name,
            created_at=now,
            updated_at=now,
        )
        try:
            with self.uow.events_only(actor) as changes:
                self.session.add(connection)
                self.session.flush()
                after = connection_view(connection)
                changes.audit(
                    "sso.connection.created",
                    AuditTarget.SSO_CONNECTION,
                    connection.id,
                    connection.name,
                    workspace,
                    after=after,
                )
                if connection.jit_role:
                    self._audit_jit(changes, connection, None)
        except IntegrityError as exc:  # a concurrent create won the workspace
            raise Conflict(
                f"Workspace '{workspace}' has a single sign-on connection already"
            ) from exc
        return self.view(connection)

    def update(self, actor: Actor, connection_id: int, fields: dict[str, Any]) -> ConnectionView:
        """Change some of the connection's fields. A new issuer needs the client secret
        in the same change, and ends the links and the sessions started through the old
        one; turning it off ends the sessions of the people who have no other way in
        than this connection."""
        connection = self._get(actor, connection_id)
        workspace = connection.workspace_slug
        values = self._checked(actor, workspace, fields)
        new_issuer = "issuer" in values and values["issuer"] != connection.issuer
        if new_issuer and not values.get("client_secret"):
            raise InvalidInput(
                "A new issuer needs the client secret again: the stored one is never sent "
                "to another provider",
                errors={"client_secret": ["required when the issuer changes"]},
            )
        if (
            "jit_role" in values
            and connection.jit_role
            and connection.jit_role != values["jit_role"]
        ):
            # Taking a provisioning role away is giving it no more: the same right.
            self.authorizer.require_can_grant(actor, connection.jit_role, workspace, "remove")
        before = connection_view(connection)
        was_on, had_jit = connection.enabled, connection.jit_role
        with self.uow.events_only(actor) as changes:
            for field in ("name", "issuer", "client_id", "enabled", "require_sso", "jit_role"):
                if field in values:
                    setattr(connection, field, values[field])
            if values.get("client_secret"):
                connection.sealed_client_secret = self._seal(values["client_secret"])
            connection.updated_at = utcnow()
            unlinked = moved = 0
            if new_issuer:
                # Subjects are the old provider's: they name nobody at the new one. And
                # its sessions here could no longer be ended by its back-channel logout.
                unlinked = self._unlink_all(connection)
                moved = self._end_connection_sessions(connection, None, MOVED_REASON)
            after = connection_view(connection)
            if after != before or values.get("client_secret"):
                changes.audit(
                    "sso.connection.updated",
                    AuditTarget.SSO_CONNECTION,
                    connection.id,
                    connection.name,
                    workspace,
                    before,
                    {
                        **after,
                        "secret_changed": bool(values.get("client_secret")),
                        **(
                            {"links_removed": unlinked, "sessions_ended": moved}
                            if new_issuer
                            else {}
                        ),
                    },
                )
            if had_jit != connection.jit_role:
                self._audit_jit(changes, connection, had_jit)
            if was_on and not connection.enabled:
                ended = self._end_sso_only_sessions(connection)
                changes.audit(
                    "sso.connection.disabled",
                    AuditTarget.SSO_CONNECTION,
                    connection.id,
                    connection.name,
                    workspace,
                    after={"sessions_ended_of": ended},
                )
        return self.view(connection)

    # -- linked accounts -----------------------------------------------------------

    def links(self, actor: Actor, connection_id: int) -> list[LinkView]:
        """The accounts linked to the connection, of people with a role in its
        workspace, by email."""
        connection = self._get(actor, connection_id)
        rows = self.session.execute(
            select(SsoLink, User)
            .join(User, User.id == SsoLink.user_id)
            .where(SsoLink.connection_id == connection.id, self._member(connection))
            .order_by(User.email)
        ).all()
        return [_link_view(link, user) for link, user in rows]

    def unlink(self, actor: Actor, connection_id: int, user_id: int) -> Unlinked:
        """Forget the person's link to the connection and end the sessions they started
        through it (audited ``sso.unlinked``). NotFound, worded alike, for an id that
        does not exist, someone without a role in the workspace, or someone not linked."""
        connection = self._get(actor, connection_id)
        found = self.session.execute(
            select(SsoLink, User)
            .join(User, User.id == SsoLink.user_id)
            .where(
                SsoLink.connection_id == connection.id,
                SsoLink.user_id == user_id,
                self._member(connection),
            )
        ).first()
        if found is None:
            raise NotFound(f"No account {user_id} is linked to this single sign-on connection")
        link, user = found
        view = _link_view(link, user)
        with self.uow.events_only(actor) as changes:
            self.session.delete(link)
            ended = self._end_connection_sessions(connection, user.id, UNLINK_REASON)
            self.session.flush()
            others = self._other_ways_in(user)
            changes.audit(
                "sso.unlinked",
                AuditTarget.USER,
                user.id,
                user.name,
                connection.workspace_slug,
                {"connection": connection.id, "subject": link.subject},
                {"sessions_ended": ended, "other_ways_in": others},
            )
        return Unlinked(view, ended, others)

    def _end_connection_sessions(
        self, connection: SsoConnection, user_id: int | None, reason: str
    ) -> int:
        """End the live sessions started through ``connection`` (only ``user_id``'s, if
        given), not committed; how many."""
        query = select(AuthSession).where(
            AuthSession.sso_connection_id == connection.id, AuthSession.revoked_at.is_(None)
        )
        if user_id is not None:
            query = query.where(AuthSession.user_id == user_id)
        sessions = self.session.scalars(query).all()
        now = utcnow()
        for auth_session in sessions:
            auth_session.revoked_at, auth_session.revoked_reason = now, reason
        return len(sessions)

    def _member(self, connection: SsoConnection) -> Any:
        """People with a role in force in the connection's workspace: those its owners
        may see (an invitation not yet accepted links nobody)."""
        return User.grants.any(
            grant_in_force() & (Grant.workspace_slug == connection.workspace_slug)
        )

    def _other_ways_in(self, user: User) -> list[str]:
        """How ``user`` can sign in besides the connection just unlinked."""
        ways = []
        if user.password_hash is not None:
            ways.append("password")
        passkey = select(PasskeyCredential.id).where(PasskeyCredential.user_id == user.id)
        if self.session.scalar(passkey.limit(1)) is not None:
            ways.append("passkey")
        other_link = select(SsoLink.id).where(SsoLink.user_id == user.id)
        if self.session.scalar(other_link.limit(1)) is not None:
            ways.append("another workspace's single sign-on")
        if user.oidc_subject is not None and self.settings.oidc_issuer:
            ways.append("the installation's single sign-on")
        return ways

    def _audit_jit(self, changes: Any, connection: SsoConnection, before: str | None) -> None:
        """Just-in-time provisioning turned on, off or to another role: an event of its
        own, so that it stands out in the trail."""
        role = connection.jit_role
        changes.audit(
            "sso.connection.jit_enabled" if role else "sso.connection.jit_disabled",
            AuditTarget.SSO_CONNECTION,
            connection.id,
            connection.name,
            connection.workspace_slug,
            {"jit_role": before},
            {"jit_role": role},
        )

    def _end_sso_only_sessions(self, connection: SsoConnection) -> list[int]:
        """End every session of the people linked to ``connection`` who have no password:
        the connection was their only way in. Their ids."""
        people = self.session.scalars(
            select(User)
            .join(SsoLink, SsoLink.user_id == User.id)
            .where(
                SsoLink.connection_id == connection.id,
                User.password_hash.is_(None),
                User.status == UserStatus.ACTIVE,
            )
            .order_by(User.id)
        ).all()
        for user in people:
            self.auth.end_all_sessions(user, "single sign-on connection disabled")
        return [user.id for user in people]

    def _unlink_all(self, connection: SsoConnection) -> int:
        links = self.session.scalars(
            select(SsoLink).where(SsoLink.connection_id == connection.id)
        ).all()
        for link in links:
            self.session.delete(link)
        return len(links)

    def _seal(self, secret: str) -> str:
        return seal(self.settings.secret_key, {"secret": secret})

    def _checked(self, actor: Actor, workspace: str, fields: dict[str, Any]) -> dict[str, Any]:
        """The given fields, trimmed and checked; InvalidInput naming each bad one."""
        values = {k: v for k, v in fields.items() if k in EDITABLE}
        errors: dict[str, list[str]] = {}
        for key in ("name", "issuer", "client_id"):
            if key in values:
                values[key] = str(values[key]).strip()
                if not values[key] or not values[key].isprintable():
                    errors[key] = ["must be printable text, not empty"]
        if "issuer" in values and "issuer" not in errors:
            problem = issuer_problem(values["issuer"], self.settings.sso_allow_private_issuers)
            if problem:
                errors["issuer"] = [problem]
        secret = values.get("client_secret")
        if secret is not None and (len(secret) > MAX_SECRET or not secret.isprintable()):
            errors["client_secret"] = [f"must be printable, at most {MAX_SECRET} characters"]
        if errors:
            raise InvalidInput(
                "The connection's settings are not valid: "
                + "; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()),
                errors=errors,
            )
        role = values.get("jit_role")
        if role:
            # No escalation: provisioning gives only a role the admin could give.
            self.grants.require_roles_exist(workspace, [role])
            self.grants.require_grantable_here(workspace, [role])
            self.authorizer.require_can_grant(actor, role, workspace)
        return values


def _link_view(link: SsoLink, user: User) -> LinkView:
    return LinkView(
        user.id,
        user.name,
        user.email,
        str(user.status),
        link.subject,
        link.created_at,
        link.last_sign_in_at,
    )
