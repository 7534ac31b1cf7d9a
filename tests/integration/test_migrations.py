"""Migrations own the schema: after `upgrade head` the database matches the models
exactly, and every migration can be undone and redone."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from gateway.db import alembic_config, make_engine, upgrade
from gateway.models import Base


def test_the_migrated_schema_matches_the_models_and_round_trips(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        with engine.connect() as connection:
            drift = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert drift == [], f"models and migrations disagree: {drift}"

        command.downgrade(alembic_config(engine), "base")
        upgrade(engine)
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    finally:
        engine.dispose()


def test_permission_rules_stored_before_the_owner_condition_keep_working(
    database_url: str,
) -> None:
    """A database from before owner-only permissions (four-value ``p`` rules) answers the
    same after ``upgrade`` without a ``policy apply``, and back down again."""
    from sqlalchemy import text
    from sqlalchemy.orm import Session

    from gateway.config import Settings
    from gateway.engine import DecisionEngine, SubjectChanged, WorkspaceAdded
    from gateway.services import reload_engine

    engine = make_engine(database_url)
    try:
        config = alembic_config(engine)
        command.upgrade(config, "0008")
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO casbin_rule (ptype, v0, v1, v2, v3) VALUES "
                    "('p', 'role:viewer', '*', 'documents', 'read'), "
                    "('g', 'user:1', 'role:viewer', 'acme', NULL)"
                )
            )
        upgrade(engine)
        decisions = DecisionEngine(Settings().model_path)
        with Session(engine) as session:
            reload_engine(decisions, engine, session)
        decisions.apply(
            [SubjectChanged(1, "ann@example.com", True), WorkspaceAdded("acme")],
            decisions.revision,
        )
        assert decisions.check(1, "acme", "documents", "read").allowed
        assert not decisions.check(1, "acme", "documents", "write").allowed

        command.downgrade(config, "0008")
        with engine.connect() as connection:
            four = connection.execute(
                text("SELECT v4 FROM casbin_rule WHERE ptype = 'p'")
            ).scalar_one()
        assert four is None
    finally:
        engine.dispose()
