"""Migrations own the schema: after `upgrade head` the database matches the models
exactly, and every migration can be undone and redone."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from gateway.db.models import Base
from gateway.db.session import alembic_config, make_engine, upgrade
from tests.helpers import full_width


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
    from gateway.engine.engine import DecisionEngine, SubjectChanged, WorkspaceAdded
    from gateway.replication.loading import reload_engine

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


def test_upgrading_a_database_with_data_keeps_it_and_stops_reusing_ids(
    database_url: str,
) -> None:
    """A database at 0010 whose newest person (Eve, 5) was removed, and whose SQLite had
    already given Dan's id (4) to Mallory, with Dan's review assignment: after
    ``upgrade`` the rows are all there, Mallory inherits nothing, and neither Eve's id
    nor a removed person's after the upgrade is given to anyone again."""
    from sqlalchemy import func, select, text
    from sqlalchemy.orm import Session

    from gateway.db.models import AppSetting, ReviewItemReviewer, User, utcnow

    before_start, start, after_start = (f"2026-01-0{day} 00:00:00.000000" for day in (1, 2, 3))
    engine = make_engine(database_url)
    try:
        config = alembic_config(engine)
        command.upgrade(config, "0010")
        with engine.begin() as connection:
            for uid, email, created in (
                (1, "admin@example.com", before_start),
                (2, "alice@example.com", before_start),  # a reviewer
                (3, "bob@example.com", before_start),  # under review
                (4, "mallory@example.com", after_start),  # Dan's id, reissued
            ):
                connection.execute(
                    text(
                        "INSERT INTO users (id, email, name, status, session_version, "
                        "created_at, updated_at) VALUES "
                        "(:id, :email, :email, 'active', 1, :created, :created)"
                    ),
                    {"id": uid, "email": email, "created": created},
                )
            connection.execute(
                text(
                    "INSERT INTO review_campaigns (id, name, workspace_slug, created_by_name, "
                    "starts_at, deadline, on_deadline, status, periodic) VALUES "
                    "(1, 'Q1', 'acme', 'Admin', :start, '2099-01-01 00:00:00.000000', "
                    "'flag', 'open', false)"
                ),
                {"start": start},
            )
            connection.execute(
                text(
                    "INSERT INTO review_items (id, campaign_id, user_id, user_email, user_name, "
                    "role, workspace_slug, decision, flagged) VALUES "
                    "(1, 1, 3, 'bob@example.com', 'Bob', 'editor', 'acme', 'undecided', false)"
                )
            )
            # Alice; Dan (4, removed, his id now Mallory's); Eve (5, removed).
            connection.execute(
                text(
                    "INSERT INTO review_item_reviewers (item_id, user_id) "
                    "VALUES (1, 2), (1, 4), (1, 5)"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO app_settings (key, value, updated_at, updated_by_id) "
                    "VALUES ('email', '{}', :start, 5)"
                ),
                {"start": start},
            )
            connection.execute(
                text(
                    "INSERT INTO audit_events (id, at, actor_id, actor_name, action, "
                    "target_type, target_id, target_name, prev_hash, hash) VALUES "
                    "(1, :start, 1, 'Admin', 'user.removed', 'user', '5', 'Eve', 'x', 'y')"
                ),
                {"start": start},
            )
            if engine.dialect.name == "postgresql":
                # The rows above came from the sequence there; say so.
                connection.execute(text("SELECT setval(pg_get_serial_sequence('users', 'id'), 5)"))

        upgrade(engine)

        with engine.connect() as connection:
            drift = compare_metadata(MigrationContext.configure(connection), Base.metadata)
            assert drift == [], f"models and migrations disagree: {drift}"
            if engine.dialect.name == "sqlite":
                assert connection.exec_driver_sql("PRAGMA foreign_key_check").all() == []
                rebuilt = dict(
                    connection.exec_driver_sql(
                        "SELECT name, sql FROM sqlite_master WHERE type = 'table'"
                    ).all()
                )
                for table in (
                    "users",
                    "workspaces",
                    "grants",
                    "invitations",
                    "audit_events",
                    "review_campaigns",
                    "review_items",
                    "oauth_clients",
                ):
                    assert "AUTOINCREMENT" in rebuilt[table], table
        with Session(engine) as session, session.begin():
            assert session.scalars(select(User.email).order_by(User.id)).all() == [
                "admin@example.com",
                "alice@example.com",
                "bob@example.com",
                "mallory@example.com",
            ]
            reviewers = session.scalars(select(ReviewItemReviewer.user_id)).all()
            assert reviewers == [2]  # Dan's and Eve's assignments are gone
            assert session.get(AppSetting, "email").updated_by_id is None  # type: ignore[union-attr]

            # Removed before the upgrade: Eve's 5 is not given out.
            frank = User(email="frank@example.com", name="Frank", updated_at=utcnow())
            session.add(frank)
            session.flush()
            assert frank.id == 6
            # Removed after it: neither is Frank's.
            session.delete(frank)
        with Session(engine) as session, session.begin():
            gus = User(email="gus@example.com", name="Gus", updated_at=utcnow())
            session.add(gus)
            session.flush()
            assert gus.id == 7

        # And back down and up again, the rows still there.
        command.downgrade(config, "0010")
        upgrade(engine)
        with Session(engine) as session:
            assert session.scalar(select(func.count(User.id))) == 5
    finally:
        engine.dispose()


def _add_people(engine: Any, *people: tuple[int, str, str]) -> None:
    """Rows as a database from before 0014 may hold them: (id, email, status) users,
    each with an invitation to the same address."""
    from sqlalchemy import text

    with engine.begin() as connection:
        for uid, email, status in people:
            connection.execute(
                text(
                    "INSERT INTO users (id, email, name, status, session_version, "
                    "created_at, updated_at) VALUES (:id, :email, 'Someone', :status, 1, "
                    "'2026-01-01 00:00:00.000000', '2026-01-01 00:00:00.000000')"
                ),
                {"id": uid, "email": email, "status": status},
            )
            connection.execute(
                text(
                    "INSERT INTO invitations (id, user_id, email, name, status, expires_at, "
                    "created_at, delivery_status, delivery_attempts, resend_count) VALUES "
                    "(:id, :id, :email, 'Someone', 'pending', '2099-01-01 00:00:00.000000', "
                    "'2026-01-01 00:00:00.000000', 'sent', 1, 0)"
                ),
                {"id": uid, "email": email},
            )
        if engine.dialect.name == "postgresql":
            for table in ("users", "invitations"):
                connection.execute(
                    text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), 10)")
                )


def _stored(engine: Any, table: str) -> list[str]:
    from sqlalchemy import text

    with engine.connect() as connection:
        query = text(f"SELECT email FROM {table} ORDER BY id")  # noqa: S608 - fixed names
        return list(connection.execute(query).scalars())


def test_stored_addresses_are_normalised_on_upgrade(database_url: str) -> None:
    """Security finding 7: addresses stored before NFKC (full-width letters, capitals or
    spaces put in by hand) come out of ``upgrade`` in the one form the application
    compares; placeholders may share an account's address, as before."""
    engine = make_engine(database_url)
    try:
        config = alembic_config(engine)
        command.upgrade(config, "0013")
        _add_people(
            engine,
            (1, full_width("john@example.com", keep="@."), "active"),
            (2, full_width("JOHN@EXAMPLE.COM"), "pending"),  # a placeholder of John's
            (3, " Ann@Example.com", "deactivated"),
            (4, "bob@example.com", "active"),
        )
        upgrade(engine)
        expected = ["john@example.com", "john@example.com", "ann@example.com", "bob@example.com"]
        assert _stored(engine, "users") == expected
        assert _stored(engine, "invitations") == expected
        with engine.connect() as connection:
            drift = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert drift == []
        # Down and up again: the addresses stay normalised.
        command.downgrade(config, "0013")
        upgrade(engine)
        assert _stored(engine, "users") == expected
    finally:
        engine.dispose()


def test_the_upgrade_refuses_when_two_accounts_would_share_an_address(
    database_url: str,
) -> None:
    """Two accounts whose addresses normalise to one: the upgrade stops, naming both,
    and changes nothing; once an administrator renames one, it goes through."""
    import pytest
    from sqlalchemy import text

    look_alike = full_width("john") + "@example.com"
    engine = make_engine(database_url)
    try:
        config = alembic_config(engine)
        command.upgrade(config, "0013")
        _add_people(
            engine,
            (1, "john@example.com", "active"),
            (2, look_alike, "deactivated"),
            (3, full_width("ann@example.com"), "pending"),
        )
        with pytest.raises(RuntimeError) as refused:
            upgrade(engine)
        message = str(refused.value)
        assert "would share an address" in message
        assert "john@example.com: user 1 'john@example.com', user 2 " in message
        assert ascii(look_alike) in message
        # Nothing changed: still at 0013, every address as it was.
        with engine.connect() as connection:
            version = connection.execute(text("SELECT version_num FROM alembic_version"))
            assert version.scalar_one() == "0013"
        assert _stored(engine, "users") == [
            "john@example.com",
            look_alike,
            full_width("ann@example.com"),
        ]

        with engine.begin() as connection:
            connection.execute(text("UPDATE users SET email = 'john.old@example.com' WHERE id = 2"))
        upgrade(engine)
        assert _stored(engine, "users") == [
            "john@example.com",
            "john.old@example.com",
            "ann@example.com",
        ]
    finally:
        engine.dispose()


def test_directory_external_ids_become_unique_in_any_case_on_upgrade(
    database_url: str,
) -> None:
    """0022: two directory users of one connection whose externalId differs only in case
    stop the upgrade, which names them and changes nothing; once one is gone it goes
    through, and the key is the lower-cased id."""
    import pytest
    from sqlalchemy import text

    at = {"at": "2026-01-01 00:00:00.000000"}
    engine = make_engine(database_url)
    try:
        command.upgrade(alembic_config(engine), "0021")
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO workspaces (id, slug, name, created_at) "
                    "VALUES (1, 'acme', 'Acme', :at)"
                ),
                at,
            )
            connection.execute(
                text(
                    "INSERT INTO directory_connections (id, workspace_slug, name, token_hash, "
                    "group_roles, created_by_name, created_at) "
                    "VALUES (1, 'acme', 'Okta', :token, '{}', 'Ada', :at)"
                ),
                {**at, "token": "0" * 64},
            )
            for uid, external_id in ((1, "00uA"), (2, "00ua"), (3, None)):
                connection.execute(
                    text(
                        "INSERT INTO directory_users (id, scim_id, connection_id, user_name, "
                        "user_name_key, external_id, active, created_account, resource, "
                        "version, created_at, updated_at) VALUES (:id, :scim, 1, :name, :name, "
                        ":ext, true, false, '{}', 1, :at, :at)"
                    ),
                    {**at, "id": uid, "scim": f"s{uid}", "name": f"u{uid}", "ext": external_id},
                )
        with pytest.raises(RuntimeError) as refused:
            upgrade(engine)
        assert "differs only in case" in str(refused.value)
        assert "connection 1: '00ua'" in str(refused.value)
        with engine.connect() as connection:
            version = connection.execute(text("SELECT version_num FROM alembic_version"))
            assert version.scalar_one() == "0021"

        with engine.begin() as connection:
            connection.execute(text("DELETE FROM directory_users WHERE id = 2"))
        upgrade(engine)
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT external_id, external_id_key FROM directory_users ORDER BY id")
            ).all()
        assert [tuple(row) for row in rows] == [("00uA", "00ua"), (None, None)]
    finally:
        engine.dispose()
