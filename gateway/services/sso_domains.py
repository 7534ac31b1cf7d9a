"""Verified email domains: a workspace proves it owns ``acme.com`` by publishing a DNS
TXT record, and from then on its single sign-on connection is the way in for every
address at ``acme.com`` (:meth:`SsoDomainService.route_for`).

- **Claiming** a domain gives the value to publish: a TXT record at
  ``_ringfence.<domain>`` holding ``ringfence-domain-verification=<token>`` (the token is
  the claim's own, random; it is public by design, since it goes into DNS). Several
  workspaces may claim one domain (nobody can block another by claiming first).
- **Verifying** looks the record up (dnspython, through ``RINGFENCE_DNS_NAMESERVERS`` or
  the system's resolvers). At most one workspace holds a domain verified at a time (a
  partial unique index decides races): another workspace's attempt is refused while it
  does.
- **Checking again**: the same action on a verified domain, and the scheduled upkeep
  every ``RINGFENCE_SSO_DOMAIN_RECHECK_HOURS``, look the record up again. A record that
  is gone (the name does not exist, or holds no such value) unverifies the domain at
  once, audited; verifying it again takes the admin's action. A lookup that gets no
  answer (timeout, server failure) changes nothing: a verified domain stays verified, a
  pending one pending, so a DNS outage neither moves people off their connection nor on.

A failed verification (no record, another workspace's domain, no answer) is a clear
error and an audit event, and changes nothing else.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.config import Settings
from gateway.db.models import SsoConnection, SsoDomain, utcnow
from gateway.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from gateway.services.base import SYSTEM, Actor, AuditTarget, Authorizer, UnitOfWork
from gateway.services.permissions import Permission
from gateway.services.workspaces import WorkspaceService

TXT_PREFIX = "_ringfence"
TXT_VALUE = "ringfence-domain-verification={token}"
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
MAX_DOMAINS = 100  # per workspace
RECHECK_BATCH = 50  # verified domains looked up again in one upkeep run


class DomainNotVerified(Conflict):
    type = "domain-not-verified"
    title = "The domain could not be verified"


class DnsUnavailable(ServiceUnavailable):
    type = "dns-unavailable"
    title = "DNS did not answer"


def normalise_domain(text: str) -> str:
    """``text`` as a domain is stored and compared: lower-case ASCII (IDNA for other
    scripts), no trailing dot, at least two labels; ValueError in words otherwise."""
    domain = text.strip().rstrip(".").lower()
    if domain.startswith("@"):
        domain = domain[1:]
    try:
        domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError as exc:
        raise ValueError("Not a domain name") from exc
    labels = domain.split(".")
    if len(domain) > 253 or len(labels) < 2 or not all(_LABEL.match(x) for x in labels):
        raise ValueError("Not a domain name: give one such as acme.com")
    if labels[-1].isdigit():
        raise ValueError("Not a domain name: an IP address has no email domain")
    return domain


def email_domain(email: str) -> str | None:
    """The normalised domain of an address (as stored), or None if it has none."""
    _, at, domain = email.rpartition("@")
    if not at:
        return None
    try:
        return normalise_domain(domain)
    except ValueError:
        return None


def txt_name(domain: str) -> str:
    return f"{TXT_PREFIX}.{domain}"


def txt_value(token: str) -> str:
    return TXT_VALUE.format(token=token)


@dataclass(frozen=True)
class Lookup:
    """One TXT lookup: ``found`` True (the value is there), False (the name does not
    exist, or holds no such value: a definite answer), or None (no answer)."""

    found: bool | None
    detail: str


def nameservers(text: str) -> list[dns.nameserver.Do53Nameserver]:
    """``RINGFENCE_DNS_NAMESERVERS``: ``address`` or ``address:port``, IPv6 in brackets."""
    servers = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        host, port = item, 53
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else 53
        elif item.count(":") == 1:
            host, _, number = item.partition(":")
            port = int(number)
        ipaddress.ip_address(host)  # a resolver needs addresses, not names
        servers.append(dns.nameserver.Do53Nameserver(host, port))
    return servers


def lookup_txt(settings: Settings, domain: str, token: str) -> Lookup:
    """Whether ``_ringfence.<domain>`` holds the claim's value, asked of the configured
    DNS servers within ``RINGFENCE_DNS_TIMEOUT`` in all."""
    name = txt_name(domain)
    expected = txt_value(token)
    try:
        configured = nameservers(settings.dns_nameservers)
        resolver = dns.resolver.Resolver(configure=not configured)
        if configured:
            resolver.nameservers = configured
    except (ValueError, dns.exception.DNSException) as exc:
        return Lookup(None, f"the DNS servers are not usable ({exc})")
    resolver.lifetime = resolver.timeout = settings.dns_timeout
    try:
        answer = resolver.resolve(
            dns.name.from_text(name), dns.rdatatype.TXT, search=False, raise_on_no_answer=False
        )
    except dns.resolver.NXDOMAIN:
        return Lookup(False, f"{name} does not exist in DNS")
    except dns.resolver.LifetimeTimeout:
        return Lookup(None, f"DNS did not answer for {name} within {settings.dns_timeout:g} s")
    except dns.exception.DNSException:
        return Lookup(None, f"DNS did not answer for {name} (server failure)")
    values = [
        b"".join(record.strings).decode("utf-8", "replace")
        for record in (answer.rrset or [])
        if hasattr(record, "strings")
    ]
    if expected in values:
        return Lookup(True, f"{name} holds the value")
    if values:
        return Lookup(False, f"{name} holds TXT records, but not this workspace's value")
    return Lookup(False, f"{name} holds no TXT record")


@dataclass(frozen=True)
class Route:
    """Where a person of a verified domain signs in: the workspace's connection."""

    domain: str
    workspace: str
    connection_id: int
    required: bool  # password sign-in refused


@dataclass(frozen=True)
class DomainView:
    domain: SsoDomain
    txt_name: str
    txt_value: str

    @property
    def verified(self) -> bool:
        return self.domain.verified_at is not None


class SsoDomainService:
    def __init__(
        self,
        session: Session,
        uow: UnitOfWork,
        authorizer: Authorizer,
        workspaces: WorkspaceService,
        settings: Settings,
    ) -> None:
        self.session = session
        self.workspaces = workspaces
        self.uow = uow
        self.authorizer = authorizer
        self.settings = settings

    @staticmethod
    def view(row: SsoDomain) -> DomainView:
        return DomainView(row, txt_name(row.domain), txt_value(row.token))

    # -- reading -------------------------------------------------------------------

    def domains(self, actor: Actor, workspace: str | None = None) -> list[DomainView]:
        """The claims of the workspaces where ``actor`` holds ``sso:manage``."""
        where = self.authorizer.workspaces_where(actor, Permission.SSO_MANAGE)
        query = select(SsoDomain).order_by(SsoDomain.domain, SsoDomain.id)
        if workspace is not None:
            if where is not None and workspace not in where:
                return []
            query = query.where(SsoDomain.workspace_slug == workspace)
        elif where is not None:
            query = query.where(SsoDomain.workspace_slug.in_(where))
        return [self.view(row) for row in self.session.scalars(query)]

    def get(self, actor: Actor, domain_id: int) -> DomainView:
        return self.view(self._get(actor, domain_id))

    def _get(self, actor: Actor, domain_id: int) -> SsoDomain:
        row = self.session.get(SsoDomain, domain_id)
        if row is None or not self.authorizer.can(actor, Permission.SSO_MANAGE, row.workspace_slug):
            raise NotFound(f"No domain claim {domain_id}")
        return row

    def route_for(self, email: str) -> Route | None:
        """The connection people with ``email``'s domain sign in through: the one of the
        workspace that holds the domain verified, while it is on. None otherwise."""
        domain = email_domain(email)
        if domain is None:
            return None
        found = self.session.execute(
            select(SsoDomain.workspace_slug, SsoConnection.id, SsoConnection.require_sso)
            .join(SsoConnection, SsoConnection.workspace_slug == SsoDomain.workspace_slug)
            .where(
                SsoDomain.domain == domain,
                SsoDomain.verified_at.is_not(None),
                SsoConnection.enabled.is_(True),
            )
        ).first()
        if found is None:
            return None
        workspace, connection_id, required = found
        return Route(domain, workspace, connection_id, bool(required))

    def verified_by(self, workspace: str, domain: str | None) -> bool:
        """Whether ``workspace`` holds ``domain`` verified now."""
        if domain is None:
            return False
        return (
            self.session.scalar(
                select(SsoDomain.id).where(
                    SsoDomain.workspace_slug == workspace,
                    SsoDomain.domain == domain,
                    SsoDomain.verified_at.is_not(None),
                )
            )
            is not None
        )

    # -- changing ------------------------------------------------------------------

    def claim(self, actor: Actor, workspace: str, text: str) -> DomainView:
        """A claim of ``workspace`` to the domain: the TXT record to publish."""
        self.authorizer.require(actor, Permission.SSO_MANAGE, workspace)
        try:
            domain = normalise_domain(text)
        except ValueError as exc:
            raise InvalidInput(str(exc), errors={"domain": [str(exc)]}) from exc
        self.workspaces.require_exists(workspace)
        mine = select(SsoDomain.id).where(SsoDomain.workspace_slug == workspace)
        if self.session.scalar(mine.where(SsoDomain.domain == domain)) is not None:
            raise Conflict(f"Workspace '{workspace}' has claimed {domain} already")
        if len(self.session.scalars(mine).all()) >= MAX_DOMAINS:
            raise Conflict(f"A workspace may claim at most {MAX_DOMAINS} domains")
        if self._holder(domain) is not None:
            # Saying so tells nothing the domain itself does not: its people are sent to
            # another workspace's single sign-on at sign-in.
            self._audit_refusal(actor, workspace, domain, None, "verified by another workspace")
            raise Conflict(
                f"{domain} is verified by another workspace; it can be claimed once that "
                "workspace's TXT record is gone and its verification lapsed",
                domain=domain,
            )
        row = SsoDomain(
            workspace_slug=workspace,
            domain=domain,
            token=secrets.token_urlsafe(24),
            created_by_id=actor.user_id,
            created_by_name=actor.name,
            created_at=utcnow(),
        )
        try:
            with self.uow.events_only(actor) as changes:
                self.session.add(row)
                self.session.flush()
                changes.audit(
                    "sso.domain.claimed",
                    AuditTarget.SSO_DOMAIN,
                    row.id,
                    domain,
                    workspace,
                    after={"domain": domain, "txt_name": txt_name(domain)},
                )
        except IntegrityError as exc:  # a concurrent claim of the same workspace
            raise Conflict(f"Workspace '{workspace}' has claimed {domain} already") from exc
        return self.view(row)

    def release(self, actor: Actor, domain_id: int) -> None:
        """Withdraw the claim (verified or not): its people are no longer routed."""
        row = self._get(actor, domain_id)
        with self.uow.events_only(actor) as changes:
            changes.audit(
                "sso.domain.released",
                AuditTarget.SSO_DOMAIN,
                row.id,
                row.domain,
                row.workspace_slug,
                before={"domain": row.domain, "verified": row.verified_at is not None},
            )
            self.session.delete(row)

    def verify(self, actor: Actor, domain_id: int) -> DomainView:
        """Look the TXT record up now: verify a pending claim, or check a verified one
        again (a record that is gone unverifies it). Refusals change nothing."""
        row = self._get(actor, domain_id)
        lookup = lookup_txt(self.settings, row.domain, row.token)
        if lookup.found is None:
            self._audit_refusal(actor, row.workspace_slug, row.domain, row.id, lookup.detail)
            raise DnsUnavailable(
                f"{lookup.detail}; nothing was changed, try again later", domain=row.domain
            )
        if row.verified_at is not None:
            if lookup.found:
                with self.uow.events_only(actor):
                    row.last_checked_at, row.last_check = utcnow(), lookup.detail
                return self.view(row)
            self._unverify(actor, row, lookup.detail)
            return self.view(row)
        if not lookup.found:
            self._audit_refusal(actor, row.workspace_slug, row.domain, row.id, lookup.detail)
            raise DomainNotVerified(
                f"{lookup.detail}: publish a TXT record at {txt_name(row.domain)} with the "
                f"value {txt_value(row.token)} and try again",
                domain=row.domain,
            )
        if self._holder(row.domain) is not None:
            self._audit_refusal(
                actor, row.workspace_slug, row.domain, row.id, "verified by another workspace"
            )
            raise DomainNotVerified(
                f"{row.domain} is verified by another workspace: it can be verified here once "
                "that workspace's TXT record is gone and its verification lapsed",
                domain=row.domain,
            )
        try:
            with self.uow.events_only(actor) as changes:
                now = utcnow()
                row.verified_at = row.last_checked_at = now
                row.last_check = lookup.detail
                changes.audit(
                    "sso.domain.verified",
                    AuditTarget.SSO_DOMAIN,
                    row.id,
                    row.domain,
                    row.workspace_slug,
                    {"verified": False},
                    {"verified": True, "txt_name": txt_name(row.domain)},
                )
        except IntegrityError as exc:
            # Another workspace verified it in the same moment: the index decided.
            self._audit_refusal(
                actor, row.workspace_slug, row.domain, row.id, "verified by another workspace"
            )
            raise DomainNotVerified(
                f"{row.domain} is verified by another workspace", domain=row.domain
            ) from exc
        return self.view(row)

    def recheck_due(self, limit: int = RECHECK_BATCH) -> int:
        """The scheduled upkeep: look up again the verified domains not checked for
        ``RINGFENCE_SSO_DOMAIN_RECHECK_HOURS`` (oldest first, at most ``limit``); a record
        that is gone unverifies its domain. How many were unverified."""
        hours = self.settings.sso_domain_recheck_hours
        if hours <= 0:
            return 0
        due = utcnow() - timedelta(hours=hours)
        rows = self.session.scalars(
            select(SsoDomain)
            .where(
                SsoDomain.verified_at.is_not(None),
                (SsoDomain.last_checked_at.is_(None)) | (SsoDomain.last_checked_at < due),
            )
            .order_by(SsoDomain.last_checked_at.nulls_first(), SsoDomain.id)
            .limit(limit)
        ).all()
        lost = 0
        for row in rows:
            lookup = lookup_txt(self.settings, row.domain, row.token)
            if lookup.found is None:
                continue  # no answer: nothing changes (see the module's docstring)
            if lookup.found:
                with self.uow.events_only(SYSTEM):
                    row.last_checked_at, row.last_check = utcnow(), lookup.detail
            else:
                self._unverify(SYSTEM, row, lookup.detail)
                lost += 1
        return lost

    def _unverify(self, actor: Actor, row: SsoDomain, detail: str) -> None:
        with self.uow.events_only(actor) as changes:
            row.verified_at = None
            row.last_checked_at, row.last_check = utcnow(), detail
            changes.audit(
                "sso.domain.unverified",
                AuditTarget.SSO_DOMAIN,
                row.id,
                row.domain,
                row.workspace_slug,
                {"verified": True},
                {"verified": False, "reason": detail},
            )

    def _holder(self, domain: str) -> str | None:
        """The workspace holding ``domain`` verified, if any."""
        return self.session.scalar(
            select(SsoDomain.workspace_slug).where(
                SsoDomain.domain == domain, SsoDomain.verified_at.is_not(None)
            )
        )

    def _audit_refusal(
        self, actor: Actor, workspace: str, domain: str, row_id: int | None, reason: str
    ) -> None:
        """A refused claim or verification: an event, nothing else."""
        self.session.rollback()
        with self.uow.events_only(actor) as changes:
            changes.audit(
                "sso.domain.verify_refused",
                AuditTarget.SSO_DOMAIN,
                row_id,
                domain,
                workspace,
                after={"domain": domain, "reason": reason},
            )
