"""The audit trail proves itself: `ringfence audit verify` (the real command) finds any
stored event changed, removed or reordered by direct SQL, names the first broken link,
and exits non-zero; on PostgreSQL the app's own connection cannot change events at all;
concurrent appends never fork the chain; retention archives keep it verifiable."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from gateway.audit.chain import GENESIS, read_jsonl
from gateway.config import Settings
from gateway.db.models import AuditChain, AuditEvent, utcnow
from gateway.db.session import alembic_config, make_engine, upgrade
from gateway.engine.engine import DecisionEngine
from gateway.services.base import Actor, AuditTarget, UnitOfWork
from tests.helpers import LiveServer, create_workspaces, run_cli


@contextmanager
def database(settings: Settings) -> Iterator[Engine]:
    db = make_engine(settings.sqlalchemy_url)
    try:
        yield db
    finally:
        db.dispose()


@contextmanager
def superuser(db: Engine) -> Iterator[Connection]:
    """A connection that bypasses the append-only triggers, as an attacker with the
    database's superuser (or a restored backup edited offline) could."""
    with db.begin() as connection:
        if db.dialect.name == "postgresql":
            connection.execute(text("SET LOCAL session_replication_role = replica"))
        yield connection


def verify(settings: Settings, *args: str) -> Any:
    return run_cli(settings, "audit", "verify", *args)


def assert_broken(settings: Settings, event_id: int, *words: str) -> str:
    result = verify(settings)
    assert result.exit_code == 1, result.output
    assert f"event {event_id}:" in result.output, result.output
    for word in words:
        assert word in result.output, result.output
    return str(result.output)


def some_events(server: LiveServer) -> list[int]:
    admin = server.admin()
    create_workspaces(admin, "acme", "globex", "initech")
    admin.patch("/workspaces/acme", json={"name": "Acme Corp"}, headers={"X-Ringfence-Reason": "x"})
    with database(server.settings) as db, Session(db) as session:
        return list(session.scalars(select(AuditEvent.id).order_by(AuditEvent.id)))


def test_any_changed_field_is_found_and_named(server: LiveServer) -> None:
    ids = some_events(server)
    assert len(ids) >= 6
    ok = verify(server.settings)
    assert ok.exit_code == 0 and f"OK: {len(ids)} events verified" in ok.output, ok.output
    victim = ids[len(ids) // 2]
    changes = {
        "at": "'2020-01-01 00:00:00'",
        "actor_id": "4242",
        "actor_name": "'Mallory <m@example.com>'",
        "action": "'workspace.nothing'",
        "target_type": "'nothing'",
        "target_id": "'x'",
        "target_name": "'x'",
        "workspace": "'elsewhere'",
        "after": """'{"name": "forged"}'""",
        "before": """'{"name": "forged"}'""",
        "revision": "999",
        "request_id": "'forged'",
        "source_address": "'10.9.9.9'",
        "reason": "'because'",
        "actor_client_id": "'svc'",
        "hash": "'" + "a" * 64 + "'",
    }
    with database(server.settings) as db:
        for column, value in changes.items():
            with db.connect() as connection:
                select_column = text(f"SELECT {column} FROM audit_events WHERE id = :id")  # noqa: S608
                original = connection.execute(select_column, {"id": victim}).scalar()
            with superuser(db) as connection:
                connection.execute(
                    text(f"UPDATE audit_events SET {column} = {value} WHERE id = :id"),  # noqa: S608
                    {"id": victim},
                )
            output = assert_broken(server.settings, victim, "does not match its hash")
            assert "BROKEN" in output
            with superuser(db) as connection:
                if isinstance(original, dict):
                    original = json.dumps(original)
                connection.execute(
                    text(f"UPDATE audit_events SET {column} = :value WHERE id = :id"),  # noqa: S608
                    {"id": victim, "value": original},
                )
            assert verify(server.settings).exit_code == 0, column


def test_removed_and_reordered_events_are_found(server: LiveServer) -> None:
    ids = some_events(server)
    with database(server.settings) as db:
        # Two events swap places (ids exchanged): the first of them no longer links.
        a, b = ids[2], ids[3]
        with superuser(db) as connection:
            connection.execute(text("UPDATE audit_events SET id = -1 WHERE id = :a"), {"a": a})
            connection.execute(
                text("UPDATE audit_events SET id = :a WHERE id = :b"), {"a": a, "b": b}
            )
            connection.execute(text("UPDATE audit_events SET id = :b WHERE id = -1"), {"b": b})
        assert_broken(server.settings, a, "does not match its hash")
        with superuser(db) as connection:
            connection.execute(text("UPDATE audit_events SET id = -1 WHERE id = :a"), {"a": a})
            connection.execute(
                text("UPDATE audit_events SET id = :a WHERE id = :b"), {"a": a, "b": b}
            )
            connection.execute(text("UPDATE audit_events SET id = :b WHERE id = -1"), {"b": b})
        assert verify(server.settings).exit_code == 0

        # One event removed from the middle: the next one names the gap.
        with superuser(db) as connection:
            connection.execute(text("DELETE FROM audit_events WHERE id = :id"), {"id": ids[4]})
        assert_broken(server.settings, ids[5], f"events {ids[4]}..{ids[4]} are missing")

    # The newest event removed: the chain stops short of its head.
    ids = some_events_after_reset(server)
    with database(server.settings) as db, superuser(db) as connection:
        connection.execute(text("DELETE FROM audit_events WHERE id = :id"), {"id": ids[-1]})
    assert_broken(server.settings, ids[-1], "newest events were removed")


def some_events_after_reset(server: LiveServer) -> list[int]:
    """Start the chain again (everything deleted, head reset), then make events."""
    with database(server.settings) as db, superuser(db) as connection:
        connection.execute(text("DELETE FROM audit_events"))
        connection.execute(
            text(
                "UPDATE audit_chain SET head_id = 0, head_hash = :g, "
                "anchor_id = 0, anchor_hash = :g"
            ),
            {"g": GENESIS},
        )
    admin = server.admin()
    create_workspaces(admin, "umbrella")
    with database(server.settings) as db, Session(db) as session:
        ids = list(session.scalars(select(AuditEvent.id).order_by(AuditEvent.id)))
    assert verify(server.settings).exit_code == 0
    return ids


# The append-only triggers are PostgreSQL's (README: what other databases can do).
@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_the_apps_connection_cannot_change_or_delete_events(server: LiveServer) -> None:
    some_events(server)
    with database(server.settings) as db:
        for statement in (
            "UPDATE audit_events SET actor_name = 'Mallory'",
            "DELETE FROM audit_events",
            "TRUNCATE audit_events",
            # The retention setting alone is not enough: only archived events may go.
            "SELECT set_config('ringfence.audit_retention', 'on', true); DELETE FROM audit_events",
        ):
            with pytest.raises(DBAPIError, match="append-only"), db.begin() as connection:
                for part in statement.split("; "):
                    connection.execute(text(part))
        with Session(db) as session:
            assert session.scalar(select(func.count()).select_from(AuditEvent))
    assert verify(server.settings).exit_code == 0


def test_concurrent_appends_do_not_fork_the_chain(server: LiveServer) -> None:
    """Writers appending at once, some with changes (a revision each), some with events
    alone: no two events chain onto the same one, and nobody waits for ever."""
    settings = server.settings
    writers, each = 6, 8
    errors: list[BaseException] = []
    with database(settings) as db:
        with Session(db) as session:
            before = session.scalar(select(func.count()).select_from(AuditEvent)) or 0
        barrier = threading.Barrier(writers)

        def write(number: int) -> None:
            try:
                with Session(db) as session:
                    uow = UnitOfWork(session, DecisionEngine(settings.model_path))
                    barrier.wait()
                    actor = Actor(None, f"writer {number}")
                    for i in range(each):
                        if number % 2:
                            # A change: on PostgreSQL its revision's statement takes the
                            # chain's lock too (gateway.audit.chain.lock_after).
                            with uow.change(actor) as changes:
                                changes.audit("test.append", AuditTarget.SETTINGS, target_id=i)
                        else:  # events only: the chain's lock alone, at the flush
                            uow.record(actor, "test.append", AuditTarget.SETTINGS, target_id=i)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
        with Session(db) as session:
            count = session.scalar(select(func.count()).select_from(AuditEvent))
            prevs = session.scalars(select(AuditEvent.prev_hash)).all()
    assert count == before + writers * each
    assert len(set(prevs)) == len(prevs), "two events chained onto the same one: a fork"
    result = verify(settings)
    assert result.exit_code == 0, result.output


def test_a_change_writes_its_events_and_moves_the_head_in_as_few_statements(
    server: LiveServer,
) -> None:
    """The chain writes a change's events itself: on PostgreSQL one event and the head's
    move are one statement (under the revision's lock, every round trip counts), several
    events or SQLite take two; the events stay the caller's objects, stored as they were
    hashed, and the chain verifies."""
    settings = server.settings
    written: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # The writes (SQLite's lock, a no-op UPDATE returning the row, is not one).
        moved = "UPDATE audit_chain" in statement and "RETURNING" not in statement
        if moved or "INSERT INTO audit_events" in statement:
            written.append(statement)

    with database(settings) as db:
        event.listen(db, "before_cursor_execute", note)
        with Session(db) as session:
            uow = UnitOfWork(session, DecisionEngine(settings.model_path))
            with uow.change(Actor(None, "tester")) as changes:
                changes.audit("test.one", AuditTarget.SETTINGS, before={"a": 1})
            one = changes.events
            if db.dialect.name == "postgresql":
                assert len(written) == 1, written
                assert "UPDATE audit_chain" in written[0]
                assert "INSERT INTO audit_events" in written[0]
            else:
                assert len(written) == 2, written
            written.clear()
            with uow.change(Actor(None, "tester")) as changes:
                changes.audit_each(["acme", "globex", "initech"], "test.each", AuditTarget.SETTINGS)
            assert len(written) == 2, written  # the head's move, then the rows
            several = changes.events
            assert [e.id for e in several] == [one[0].id + 1, one[0].id + 2, one[0].id + 3]
            assert several[0].prev_hash == one[0].hash
            # Written by the chain, not the ORM's flush: not in the session any more.
            assert not any(e in session for e in [*one, *several])
        with Session(db) as session:
            stored = session.get(AuditEvent, one[0].id)
            assert stored is not None
            assert (stored.action, stored.actor_name) == ("test.one", "tester")
            assert stored.before == {"a": 1} and stored.after is None
            assert stored.hash == one[0].hash and stored.revision == one[0].revision
            head = session.get(AuditChain, 1)
            assert head is not None and head.head_id == several[-1].id
            assert head.head_hash == several[-1].hash
    result = verify(settings)
    assert result.exit_code == 0, result.output


def test_after_a_rollback_the_session_chains_again_from_the_head(server: LiveServer) -> None:
    """Events written and rolled back (a change that failed at COMMIT) leave nothing
    behind in the session: its next event takes the same id, restored with the head."""
    settings = server.settings
    with database(settings) as db, Session(db) as session:
        uow = UnitOfWork(session, DecisionEngine(settings.model_path))
        lost = AuditEvent(actor_name="tester", action="test.lost", target_type="settings")
        session.add(lost)
        session.flush()  # the chain writes it
        session.rollback()
        with uow.change(Actor(None, "tester")) as changes:
            changes.audit("test.kept", AuditTarget.SETTINGS)
        assert changes.events[0].id == lost.id
        assert changes.events[0].prev_hash == lost.prev_hash
    result = verify(settings)
    assert result.exit_code == 0, result.output


def test_the_migration_chains_events_written_before_it(settings: Settings) -> None:
    with database(settings) as db:
        from alembic import command

        upgrade(db, "0003")
        with db.begin() as connection:
            for n in range(3):
                connection.execute(
                    text(
                        "INSERT INTO audit_events (at, actor_name, action, target_type, "
                        "after) VALUES (:at, 'old admin', 'user.created', 'user', :after)"
                    ),
                    {"at": utcnow() - timedelta(days=n), "after": json.dumps({"n": n})},
                )
        upgrade(db)
        with Session(db) as session:
            events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
            chain = session.get(AuditChain, 1)
            assert chain is not None
            assert events[0].prev_hash == GENESIS
            assert chain.head_id == events[-1].id and chain.head_hash == events[-1].hash
        result = verify(settings)
        assert result.exit_code == 0 and "OK: 3 events verified" in result.output, result.output
        # New events continue the same chain.
        with Session(db) as session:
            UnitOfWork(session, DecisionEngine(settings.model_path)).record(
                Actor(None, "system"), "test.after", AuditTarget.SETTINGS
            )
        assert "OK: 4 events verified" in verify(settings).output
        command.downgrade(alembic_config(db), "0003")
        upgrade(db)
        assert "OK: 4 events verified" in verify(settings).output


def test_retention_archives_old_events_and_the_chain_stays_verifiable(
    settings: Settings, tmp_path: Path
) -> None:
    with database(settings) as db:
        upgrade(db)
        with Session(db) as session:
            for n in range(5):
                session.add(
                    AuditEvent(
                        at=utcnow() - timedelta(days=100 - n),
                        actor_name="old admin",
                        action="workspace.created",
                        target_type="workspace",
                        target_id=f"old{n}",
                    )
                )
            session.commit()
    assert run_cli(settings, "init").exit_code == 0
    assert run_cli(settings, "audit", "archive").exit_code == 1  # retention is off
    archive_dir = tmp_path / "archive"
    env_settings = settings.__class__(**{**settings.__dict__, "audit_archive_dir": archive_dir})
    result = run_cli_env(env_settings, "audit", "archive", "--days", "30")
    assert result.exit_code == 0 and "Archived 5 events (1..5)" in result.output, result.output
    [archive] = sorted(archive_dir.glob("audit-*.jsonl"))
    records = list(read_jsonl(archive))
    assert [r["target_id"] for r in records] == [f"old{n}" for n in range(5)]
    assert records[0]["prev_hash"] == GENESIS

    with database(settings) as db, Session(db) as session:
        assert session.scalar(select(func.min(AuditEvent.id))) == 6
        chain = session.get(AuditChain, 1)
        assert chain is not None and chain.anchor_id == 5
        assert chain.anchor_hash == records[-1]["hash"]
    ok = verify(settings)
    assert ok.exit_code == 0 and f"anchor {records[-1]['hash']}" in ok.output, ok.output
    both = verify(settings, str(archive))
    assert both.exit_code == 0 and "5 events (1..5) chain intact" in both.output, both.output
    assert run_cli_env(env_settings, "audit", "archive", "--days", "30").output.startswith("No ")

    # A changed archive line is found in the file, by event.
    records[2]["actor_name"] = "someone else"
    archive.write_text("".join(json.dumps(r) + "\n" for r in records))
    broken = verify(settings, str(archive), "--files-only")
    assert broken.exit_code == 1 and "event 3:" in broken.output, broken.output

    # Moving the anchor without archiving (to hide events) breaks the database's chain.
    with database(settings) as db, superuser(db) as connection:
        connection.execute(text("UPDATE audit_chain SET anchor_hash = :g"), {"g": GENESIS})
    assert_broken(settings, 6, "prev_hash")


def run_cli_env(settings: Settings, *args: str) -> Any:
    from click.testing import CliRunner

    from gateway.cli.main import main
    from tests.helpers import cli_env

    env = cli_env(settings)
    if settings.audit_archive_dir:
        env["RINGFENCE_AUDIT_ARCHIVE_DIR"] = str(settings.audit_archive_dir)
    return CliRunner().invoke(main, list(args), env=env)
