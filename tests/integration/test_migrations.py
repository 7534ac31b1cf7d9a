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
