"""Run-time settings an admin changes through the API: email (SMTP) delivery and the
company-domain allow-list. Stored in ``app_settings``; unset fields fall back to the
environment's :class:`Settings`. The SMTP password is sealed at rest and never returned.
Single sign-on's settings (the environment's only) are read and checked here too."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from gateway.config import Settings
from gateway.db.models import AppSetting
from gateway.engine.rules import ALL_WORKSPACES
from gateway.errors import InvalidInput, SsoNotConfigured
from gateway.identity.security import seal, unseal
from gateway.notifier import Notifier, TestOutcome
from gateway.services.base import Actor, AuditTarget, Authorizer, UnitOfWork
from gateway.services.permissions import Permission
from gateway.services.sso_settings import ProviderCheck, SsoOverview, check_provider, overview

EMAIL = "email"
# Built once: every account a directory creates reads the allowed domains, and a lookup
# by primary key (``Session.get``) builds its statement and cache key each time.
_STORED_VALUE = select(AppSetting.value).where(AppSetting.key == bindparam("key"))
# The stored email settings inside another read: a directory's creation reads them with
# its uniqueness checks, one round trip for both (gateway.services.directory).
STORED_EMAIL = select(AppSetting.value).where(AppSetting.key == EMAIL).scalar_subquery()
EMAIL_FIELDS = (
    "smtp_host",
    "smtp_port",
    "smtp_security",
    "smtp_username",
    "smtp_timeout",
    "mail_from",
    "allowed_domains",
)
# The fields that say which server, and which account on it, the password is sent to.
# The stored password belongs to them: whoever changes one must give the password again
# (or remove it), or anyone with settings:write could have it sent to a server of theirs.
SERVER_FIELDS = ("smtp_host", "smtp_port", "smtp_security", "smtp_username")
SERVER_CHANGED = "required when the server changes"
# What a test with unsaved settings tries (the company-domain list plays no part in it).
TRIED_FIELDS = (*SERVER_FIELDS, "smtp_timeout", "mail_from")


@dataclass(frozen=True)
class EmailSettings:
    smtp_host: str
    smtp_port: int
    smtp_security: str
    smtp_username: str
    smtp_timeout: float
    mail_from: str
    allowed_domains: list[str]
    password_set: bool

    @property
    def transport(self) -> str:
        return "smtp" if self.smtp_host else "outbox"


def parse_domains(text: str) -> list[str]:
    return sorted({d.strip().lower().lstrip("@") for d in text.split(",") if d.strip()})


def allowed_domains_in(stored: Mapping[str, Any] | None, settings: Settings) -> list[str]:
    """The company domains new accounts' addresses must be in (none: any), as the stored
    email settings (``app_settings``) say, else the environment."""
    if stored and "allowed_domains" in stored:
        return list(stored["allowed_domains"])
    return parse_domains(settings.allowed_email_domains)


class SettingsService:
    def __init__(
        self,
        session: Session,
        uow: UnitOfWork,
        authorizer: Authorizer,
        notifier: Notifier,
        settings: Settings,
    ) -> None:
        self.session = session
        self.uow = uow
        self.authorizer = authorizer
        self.notifier = notifier
        self.settings = settings

    def _stored(self) -> dict[str, Any]:
        value = self.session.scalar(_STORED_VALUE, {"key": EMAIL})
        return dict(value) if value else {}

    def email(self) -> EmailSettings:
        """The effective email settings: stored values over the environment's."""
        stored = self._stored()
        env = self.settings
        return EmailSettings(
            smtp_host=stored.get("smtp_host", env.smtp_host),
            smtp_port=int(stored.get("smtp_port", env.smtp_port)),
            smtp_security=stored.get("smtp_security", env.smtp_security),
            smtp_username=stored.get("smtp_username", env.smtp_username),
            smtp_timeout=float(stored.get("smtp_timeout", env.smtp_timeout)),
            mail_from=stored.get("mail_from", env.mail_from),
            allowed_domains=allowed_domains_in(stored, env),
            password_set=bool(stored.get("smtp_password_sealed") or env.smtp_password),
        )

    def read_email(self, actor: Actor) -> EmailSettings:
        """The email settings, for admins with ``settings:write`` everywhere."""
        self.authorizer.require(actor, Permission.SETTINGS_WRITE, ALL_WORKSPACES)
        return self.email()

    def update_email(self, actor: Actor, changes: dict[str, Any]) -> EmailSettings:
        """Change some email settings; ``smtp_password`` is write-only (empty clears it) and
        required with any change of host, port, security or user name while one is set."""
        self.authorizer.require(actor, Permission.SETTINGS_WRITE, ALL_WORKSPACES)
        before = self.email()
        _check_changes(before, changes)
        stored = self._stored()
        for field in EMAIL_FIELDS:
            if field in changes:
                stored[field] = changes[field]
        if "allowed_domains" in changes:
            stored["allowed_domains"] = sorted(
                {d.lower().lstrip("@") for d in changes["allowed_domains"]}
            )
        if "smtp_password" in changes:
            password = changes["smtp_password"]
            stored["smtp_password_sealed"] = (
                seal(self.settings.secret_key, {"password": password}) if password else ""
            )
        with self.uow.change(actor) as change:
            row = self.session.get(AppSetting, EMAIL)
            if row is None:
                row = AppSetting(key=EMAIL, value=stored, updated_by_id=actor.user_id)
                self.session.add(row)
            else:
                row.value = stored
                row.updated_by_id = actor.user_id
            after = self.email()
            change.audit(
                "settings.email.updated",
                AuditTarget.SETTINGS,
                EMAIL,
                "email",
                None,
                _public(before),
                {**_public(after), "password_changed": "smtp_password" in changes},
            )
        return after

    def transport_config(self) -> dict[str, Any]:
        """The plain mail transport configuration the mailer sends with (password included)."""
        email = self.email()
        sealed = self._stored().get("smtp_password_sealed")
        if sealed:
            password = str(unseal(self.settings.secret_key, sealed)["password"])
        elif sealed == "":
            password = ""
        else:
            password = self.settings.smtp_password
        return {
            "smtp_host": email.smtp_host,
            "smtp_port": email.smtp_port,
            "smtp_security": email.smtp_security,
            "smtp_username": email.smtp_username,
            "smtp_password": password,
            "smtp_timeout": email.smtp_timeout,
            "smtp_test_connect_seconds": self.settings.smtp_test_connect_seconds,
            "mail_from": email.mail_from,
            "outbox_dir": str(self.settings.outbox_path),
        }

    def send_test_email(
        self, actor: Actor, to_address: str, changes: dict[str, Any] | None = None
    ) -> TestOutcome:
        """Send a test message now; the SMTP outcome. With ``changes`` (what
        :meth:`update_email` takes, checked the same way), the saved settings as they
        would be with them, saving nothing: the stored password goes only to the server
        and user name it was given for, as a saved change would have it."""
        self.authorizer.require(actor, Permission.SETTINGS_WRITE, ALL_WORKSPACES)
        tried: dict[str, Any] | None = None
        transport = self.transport_config()
        if changes:
            transport, tried = self._tried(changes)
        outcome = self.notifier.send_test(to_address, transport)
        after: dict[str, Any] = {"to": to_address, "ok": outcome.ok, "detail": outcome.detail}
        if tried is not None:
            after["tried"] = tried
        with self.uow.change(actor) as change:
            change.audit(
                "settings.email.tested",
                AuditTarget.SETTINGS,
                EMAIL,
                "email",
                None,
                after=after,
            )
        return outcome

    def _tried(self, changes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The transport configuration of the saved settings with ``changes`` (unsaved),
        and what the audit event records of it (never the password: where it came from)."""
        before = self.email()
        _check_changes(before, changes)
        transport = self.transport_config()
        for field in TRIED_FIELDS:
            if field in changes:
                transport[field] = changes[field]
        if "smtp_password" in changes:
            transport["smtp_password"] = changes["smtp_password"]
            password = "typed" if changes["smtp_password"] else "none"
        else:
            password = "saved" if before.password_set else "none"
        tried = {field: transport[field] for field in TRIED_FIELDS}
        return transport, {**tried, "password": password}

    def sso(self, actor: Actor) -> SsoOverview:
        """Single sign-on's configuration (never the client secret), for whoever may
        change the installation's settings (``settings:write`` everywhere)."""
        self.authorizer.require(actor, Permission.SETTINGS_WRITE, ALL_WORKSPACES)
        return overview(self.settings)

    def check_sso_provider(self, actor: Actor) -> ProviderCheck:
        """Whether the identity provider answers its discovery document as the sign-in
        needs, in words; changes nothing. SsoNotConfigured while single sign-on is off."""
        self.authorizer.require(actor, Permission.SETTINGS_WRITE, ALL_WORKSPACES)
        if not self.settings.oidc_issuer:
            raise SsoNotConfigured("This gateway has no single sign-on provider configured")
        return check_provider(self.settings)


def _check_changes(before: EmailSettings, changes: dict[str, Any]) -> None:
    """Refuse ``changes`` that no save may make: unknown fields, and a move of the server
    (or the user name) without the password while one is stored."""
    unknown = set(changes) - {*EMAIL_FIELDS, "smtp_password"}
    if unknown:
        raise InvalidInput(f"Unknown email settings: {', '.join(sorted(unknown))}")
    moved = _server_changes(before, changes)
    if moved and before.password_set and "smtp_password" not in changes:
        raise InvalidInput(
            f"Changing {', '.join(moved)} needs the SMTP password again: send "
            "smtp_password in the same request (an empty one removes the stored password)",
            errors={"smtp_password": [SERVER_CHANGED]},
        )


def _server_changes(before: EmailSettings, changes: dict[str, Any]) -> list[str]:
    """The fields of :data:`SERVER_FIELDS` that ``changes`` gives a new value (a form
    sends every field, so a field sent unchanged is no change)."""

    def same(field: str, old: Any, new: Any) -> bool:
        if field == "smtp_host":
            # Host names are case-insensitive; "Mail.Example.com" is the same server.
            return str(old).strip().lower() == str(new).strip().lower()
        return bool(old == new)

    return [
        field
        for field in SERVER_FIELDS
        if field in changes and not same(field, getattr(before, field), changes[field])
    ]


def _public(email: EmailSettings) -> dict[str, Any]:
    return {
        "smtp_host": email.smtp_host,
        "smtp_port": email.smtp_port,
        "smtp_security": email.smtp_security,
        "smtp_username": email.smtp_username,
        "smtp_timeout": email.smtp_timeout,
        "mail_from": email.mail_from,
        "allowed_domains": email.allowed_domains,
        "password_set": email.password_set,
    }
