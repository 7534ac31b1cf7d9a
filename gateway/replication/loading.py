"""Loading an engine from the database: everything committed up to the current revision.

Used at start-up (the app, the CLI, the mail worker's housekeeping) and by
:mod:`gateway.replication.sync` when the change log cannot fill a gap. On PostgreSQL the
rules are read in bulk (:mod:`gateway.engine.bulk_load`), elsewhere row by row.
"""

from __future__ import annotations

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from gateway.config import Settings
from gateway.db.models import CasbinRule, Grant, PolicyState, User, UserStatus, Workspace
from gateway.engine.bulk_load import read_snapshot
from gateway.engine.engine import DecisionEngine, Snapshot, stored_rows
from gateway.engine.expiry import schedule_for
from gateway.engine.index import Grants
from gateway.engine.rules import GrantKey, grant_rule


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
        snapshot = read_snapshot(session.connection(), revision)
    else:
        snapshot = read_snapshot_by_rows(session, revision)
    engine.load_snapshot(snapshot)
    load_expiries(engine, session)
    session.rollback()


def read_snapshot_by_rows(session: Session, revision: int) -> Snapshot:
    """The engine's state read row by row, on any database (PostgreSQL reads it in bulk:
    ``gateway.engine.bulk_load``)."""
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
