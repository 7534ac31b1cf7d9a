"""Domain services: everything the HTTP layers and the CLI may ask of Ringfence.

:class:`Services` wires one set of services around a database session; it is cheap to
build, one per request or command.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.config import Settings
from gateway.db.models import User
from gateway.engine.engine import DecisionEngine
from gateway.identity.throttle import LoginThrottle
from gateway.notifier import Notifier
from gateway.policy.validation import catalogue_actions, installation_roles
from gateway.services.account import AccountService
from gateway.services.audit import AuditService
from gateway.services.auth import AuthService
from gateway.services.authzen.directories import load_refinements, load_subject_directory
from gateway.services.authzen.paging import PageTokens
from gateway.services.authzen.resources import load_resource_directory
from gateway.services.authzen.service import AuthZenService
from gateway.services.base import Actor, Authorizer, UnitOfWork
from gateway.services.checkpoints import SETTINGS_KEY, CheckpointService
from gateway.services.credentials import CredentialService
from gateway.services.custom_roles import CustomRoleService
from gateway.services.decisions import DecisionService
from gateway.services.directory import DirectoryService
from gateway.services.grants import GrantService
from gateway.services.invitations import InvitationService
from gateway.services.mfa import MfaService
from gateway.services.oauth import ClientService, KeyService, TokenService
from gateway.services.passkeys import PasskeyService
from gateway.services.people import PersonService
from gateway.services.plan_inputs import PlanInputService
from gateway.services.policies import PolicyService
from gateway.services.remembered_devices import RememberedDeviceService
from gateway.services.reports import ReportService
from gateway.services.reviews import ReviewService
from gateway.services.roles import RoleService
from gateway.services.settings import SettingsService, allowed_domains_in
from gateway.services.setup import SetupService
from gateway.services.sso import SsoService
from gateway.services.sso_connections import SsoConnectionService
from gateway.services.sso_domains import SsoDomainService
from gateway.services.sso_logout import SsoLogoutService
from gateway.services.streams import WAKE, StreamService
from gateway.services.users import UserService
from gateway.services.workspaces import WorkspaceService

__all__ = ["Actor", "Services", "authzen_service"]


class Services:
    def __init__(
        self,
        session: Session,
        engine: DecisionEngine,
        notifier: Notifier,
        settings: Settings,
        throttle: LoginThrottle | None = None,
    ) -> None:
        uow = UnitOfWork(session, engine)
        self.uow = uow  # its ``revision`` is what this request committed
        authorizer = Authorizer(session, engine)
        self.session = session
        self.engine = engine
        self.authorizer = authorizer
        self.auth = AuthService(session, settings, throttle or login_throttle(settings), uow)
        self.audit = AuditService(session, authorizer)
        self.checkpoints = CheckpointService(session, authorizer, settings)
        session.info[SETTINGS_KEY] = settings  # signs a checkpoint every N audit events
        # Records nothing (no decision log, no last seen): the decision endpoints use
        # the app's own DecisionService, handed both (gateway.web.state).
        self.decisions = DecisionService(engine)
        self.workspaces = WorkspaceService(session, uow, authorizer)
        self.users = UserService(session, uow, authorizer)
        self.grants = GrantService(
            session,
            uow,
            authorizer,
            engine,
            self.users,
            self.workspaces,
            lambda: installation_roles(settings.policies_dir),
        )
        self.settings = SettingsService(session, uow, authorizer, notifier, settings)
        self.invitations = InvitationService(
            session, uow, authorizer, self.grants, notifier, settings, self.settings
        )
        self.policies = PolicyService(session, uow)
        self.plan_inputs = PlanInputService(session, authorizer, self.policies)
        self.setup = SetupService(session, uow, settings.password_hash_profile)
        self.roles = RoleService(session, authorizer, engine, settings.policies_dir)
        self.custom_roles = CustomRoleService(
            session, uow, authorizer, engine, settings.policies_dir, settings.custom_roles
        )
        self.reviews = ReviewService(
            session, uow, authorizer, engine, self.grants, self.users, self.workspaces
        )
        self.reports = ReportService(session, authorizer, engine, self.settings)
        self.mfa = MfaService(
            session, settings, self.auth, uow, self.users, authorizer, self.workspaces
        )
        self.auth.must_enrol = self.mfa.must_enrol
        self.passkeys = PasskeyService(session, settings, self.auth, uow, self.mfa)
        self.remembered_devices = RememberedDeviceService(
            session, settings, self.auth, uow, self.mfa
        )
        self.people = PersonService(session, authorizer, self.users, self.invitations, self.audit)
        self.account = AccountService(session, self.invitations)
        self.clients = ClientService(session, uow, authorizer)
        self.keys = KeyService(session, uow, settings)
        self.tokens = TokenService(session, uow, settings, self.clients)
        self.credentials = CredentialService(
            session, settings, self.auth.throttle, notifier, self.auth
        )
        self.sso = SsoService(session, self.auth, self.invitations, uow)
        self.sso_connections = SsoConnectionService(
            session, uow, authorizer, self.grants, self.auth, settings
        )
        self.sso_domains = SsoDomainService(session, uow, authorizer, self.workspaces, settings)
        self.sso_logout = SsoLogoutService(session, uow, self.sso_connections)
        self.auth.sso_route = self.sso_domains.route_for
        self.sso.verified_by = self.sso_domains.verified_by
        self.sso.allowed_domains = lambda: self.settings.email().allowed_domains
        self.directory = DirectoryService(
            session,
            uow,
            authorizer,
            engine,
            self.users,
            self.grants,
            lambda stored: allowed_domains_in(stored, settings),
        )
        self.authzen = authzen_service(
            self.decisions, settings, lambda ids: user_emails(session, ids)
        )
        self.streams = StreamService(session, uow, authorizer, settings)
        wake = getattr(notifier, "events_committed", None)
        if wake is not None:  # audit events committed in this session wake the streams
            session.info[WAKE] = wake


def authzen_service(
    decisions: DecisionService,
    settings: Settings,
    emails_of: Callable[[set[int]], dict[int, str]],
) -> AuthZenService:
    """AuthZEN over ``decisions``; ``emails_of`` is the one thing it asks a database
    (subject search results), so a caller may look the session up only then."""
    return AuthZenService(
        decisions,
        load_subject_directory(settings.authzen_subjects),
        PageTokens(settings.secret_key),
        max_evaluations=settings.authzen_max_evaluations,
        emails_of=emails_of,
        refinements=load_refinements(settings.authzen_refinements),
        resources=load_resource_directory(settings.authzen_resources),
        catalogue=lambda: catalogue_actions(settings.policies_dir),
    )


def user_emails(session: Session, ids: set[int]) -> dict[int, str]:
    """Emails of the users ``ids`` (for AuthZEN subject search results)."""
    if not ids:
        return {}
    rows = session.execute(select(User.id, User.email).where(User.id.in_(ids)))
    return {user_id: email for user_id, email in rows}


def login_throttle(settings: Settings) -> LoginThrottle:
    return LoginThrottle(
        settings.rate_limit_storage_url,
        settings.login_failures_per_account,
        settings.login_failures_per_client,
        settings.password_resets_per_account,
        settings.password_resets_per_client,
    )
