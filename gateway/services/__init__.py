"""Domain services: everything the HTTP layers and the CLI may ask of Ringfence.

:class:`Services` wires one set of services around a database session; it is cheap to
build, one per request or command.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from gateway.config import Settings
from gateway.engine import DecisionEngine, Snapshot, stored_rows
from gateway.index import Grants
from gateway.models import CasbinRule, PolicyState, User, UserStatus, Workspace
from gateway.notifier import Notifier
from gateway.policy import catalogue_actions
from gateway.resource_directory import load_resource_directory
from gateway.services.audit import AuditService
from gateway.services.auth import AuthService
from gateway.services.authzen import (
    AuthZenService,
    PageTokens,
    load_refinements,
    load_subject_directory,
)
from gateway.services.base import Actor, Authorizer, UnitOfWork
from gateway.services.credentials import CredentialService
from gateway.services.decisions import DecisionService
from gateway.services.grants import GrantService
from gateway.services.invitations import InvitationService
from gateway.services.oauth import ClientService, KeyService, TokenService
from gateway.services.policies import PolicyService
from gateway.services.reports import ReportService
from gateway.services.reviews import ReviewService
from gateway.services.roles import RoleService
from gateway.services.settings import SettingsService
from gateway.services.setup import SetupService
from gateway.services.sso import SsoService
from gateway.services.users import UserService
from gateway.services.workspaces import WorkspaceService
from gateway.throttle import LoginThrottle

__all__ = ["Actor", "Services", "authzen_service", "load_engine", "reload_engine"]


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
        self.decisions = DecisionService(engine)
        self.workspaces = WorkspaceService(session, uow, authorizer)
        self.users = UserService(session, uow, authorizer)
        self.grants = GrantService(session, uow, authorizer, engine, self.users, self.workspaces)
        self.settings = SettingsService(session, uow, authorizer, notifier, settings)
        self.invitations = InvitationService(
            session, uow, authorizer, self.grants, notifier, settings, self.settings
        )
        self.policies = PolicyService(session, uow)
        self.setup = SetupService(session, uow)
        self.roles = RoleService(session, authorizer, engine, settings.policies_dir)
        self.reviews = ReviewService(
            session, uow, authorizer, engine, self.grants, self.users, self.workspaces
        )
        self.reports = ReportService(session, authorizer, engine, self.settings)
        self.clients = ClientService(session, uow, authorizer)
        self.keys = KeyService(session, uow, settings)
        self.tokens = TokenService(session, uow, settings, self.clients)
        self.credentials = CredentialService(
            session, settings, self.auth.throttle, notifier, self.auth
        )
        self.sso = SsoService(session, self.auth, self.invitations)
        self.authzen = authzen_service(
            self.decisions, settings, lambda ids: user_emails(session, ids)
        )


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


def load_engine(db: Engine, session: Session, settings: Settings) -> DecisionEngine:
    """A decision engine holding everything committed so far."""
    engine = DecisionEngine(settings.model_path)
    reload_engine(engine, db, session)
    return engine


def reload_engine(engine: DecisionEngine, db: Engine, session: Session) -> None:
    """Load ``engine`` from the database: the rules from the adapter's table (read in
    bulk, not through the adapter's ORM, which takes minutes for millions of rows),
    statuses and workspaces from our tables."""
    # Read the revision first: a change committed while loading is then either seen or
    # newer than the revision we report, never silently missed.
    revision = session.scalar(select(PolicyState.revision).where(PolicyState.id == 1)) or 0
    if db.dialect.name == "postgresql":
        from gateway.bulk_load import read_snapshot

        snapshot = read_snapshot(session.connection(), revision)
    else:
        snapshot = read_snapshot_by_rows(session, revision)
    engine.load_snapshot(snapshot)
    load_expiries(engine, session)
    session.rollback()


def read_snapshot_by_rows(session: Session, revision: int) -> Snapshot:
    """The engine's state read row by row, on any database (PostgreSQL reads it in bulk:
    ``gateway.bulk_load``)."""
    active: set[int] = set()
    ids_by_email: dict[str, int] = {}
    for user_id, email, status in session.execute(select(User.id, User.email, User.status)):
        if status != UserStatus.PENDING:  # placeholders of invitations: see bulk_load
            ids_by_email[email] = user_id
        if status == UserStatus.ACTIVE:
            active.add(user_id)
    workspaces = session.scalars(select(Workspace.slug)).all()
    columns = (CasbinRule.v0, CasbinRule.v1, CasbinRule.v2, CasbinRule.v3, CasbinRule.v4)
    rules = session.execute(
        select(CasbinRule.ptype, *columns, CasbinRule.v5).execution_options(yield_per=50_000)
    )
    return Snapshot.build(stored_rows(rules), Grants(), active, ids_by_email, workspaces, revision)


def load_expiries(engine: DecisionEngine, session: Session) -> None:
    """The end times of time-limited grants, for decisions to deny from then on."""
    from gateway.expiry import schedule_for
    from gateway.models import Grant
    from gateway.rules import GrantKey, grant_rule

    rows = session.execute(
        select(Grant.user_id, Grant.role, Grant.workspace_slug, Grant.expires_at).where(
            Grant.expires_at.is_not(None)
        )
    )
    schedule_for(engine).load(
        (expires_at, grant_rule(GrantKey(user_id, role, workspace)))
        for user_id, role, workspace, expires_at in rows
        if expires_at is not None
    )
