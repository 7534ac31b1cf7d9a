"""The change log and incremental catch-up, on the real database (SQLite and
PostgreSQL): every revision's changes are recorded in its own transaction, a second
engine (another replica) catches up from the log without reloading, and only a gap the
log cannot fill makes it reload. Plus the HTTP that reports revisions and freshness."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, event, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.app import create_app
from gateway.config import Settings
from gateway.db.models import AuditEvent, PolicyChange
from gateway.db.session import make_engine, make_session_factory
from gateway.engine.engine import (
    DecisionEngine,
    RuleAdded,
    RuleRemoved,
    SubjectChanged,
    SubjectRemoved,
    WorkspaceAdded,
    WorkspaceRemoved,
)
from gateway.engine.expiry import schedule_for
from gateway.engine.rules import GrantKey, grant_rule
from gateway.replication.changelog import READ_WITH_CHANGE, decode, encode
from gateway.replication.loading import load_engine
from gateway.replication.sync import catch_up, committed_revision, state_of
from gateway.services.base import SYSTEM, AuditTarget, UnitOfWork
from tests.helpers import LiveServer, assert_problem, decision_headers, post_check, run_cli


def test_changes_round_trip_through_their_encoding() -> None:
    changes = [
        RuleAdded(grant_rule(GrantKey(7, "viewer", "acme"))),
        RuleRemoved(grant_rule(GrantKey(7, "viewer", "*"))),
        SubjectChanged(7, "a@example.com", True),
        SubjectRemoved(8, "b@example.com"),
        WorkspaceAdded("acme"),
        WorkspaceRemoved("globex"),
    ]
    assert decode(encode(changes)) == changes


@contextmanager
def another_engine(
    settings: Settings,
) -> Iterator[tuple[Engine, sessionmaker[Session], DecisionEngine]]:
    """Another replica's (or worker's) engine on the test's database, loaded now and
    tracking revisions as a served one does: its database engine, sessions and itself."""
    db = make_engine(settings.sqlalchemy_url)
    sessions = make_session_factory(db)
    try:
        with sessions() as session:
            engine = load_engine(db, session, settings)
        state_of(engine).tracked = True
        yield db, sessions, engine
    finally:
        db.dispose()


def test_another_engine_catches_up_from_the_log_and_reloads_only_across_a_gap(
    server: LiveServer,
) -> None:
    settings = server.settings
    with another_engine(settings) as (db, sessions, replica):
        state = state_of(replica)
        admin = server.admin()

        response = admin.post("/workspaces", json={"slug": "acme", "name": "Acme"})
        assert response.status_code == 201
        revision = int(response.headers["X-Ringfence-Revision"])
        with sessions() as session:
            assert committed_revision(session) == revision
            [logged] = session.scalars(
                select(PolicyChange).where(PolicyChange.revision == revision)
            ).all()
        assert decode(logged.changes) == [WorkspaceAdded("acme")]

        assert catch_up(replica, db, sessions, settings) is True
        assert replica.revision == revision and state.full_reloads == 0
        assert state.incremental_applies == 1 and not state.stale
        assert replica.check(1, "acme", "users", "read").allowed

        # A time-limited grant's end reaches the other replica's expiry schedule too.
        ends = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
        created = run_cli(settings, "create-admin", "--email", "ops@example.com", "--name", "Ops")
        assert created.exit_code == 0, created.output
        [ops] = [u for u in admin.get("/users", params={"q": "ops"}).json() if u["id"] != 1]
        response = admin.post(
            f"/users/{ops['id']}/grants",
            json={"workspace": "acme", "role": "viewer", "expires_at": ends.isoformat()},
        )
        assert response.status_code in (200, 201), response.text
        assert catch_up(replica, db, sessions, settings) is True
        assert state.full_reloads == 0 and schedule_for(replica).next_at() == ends.timestamp()

        # A pruned revision cannot be applied one by one: the replica reloads instead.
        response = admin.post("/workspaces", json={"slug": "globex", "name": "Globex"})
        pruned = int(response.headers["X-Ringfence-Revision"])
        with sessions() as session, session.begin():
            session.execute(delete(PolicyChange).where(PolicyChange.revision == pruned))
        assert catch_up(replica, db, sessions, settings) is True
        assert replica.revision == pruned and state.full_reloads == 1
        assert replica.check(1, "globex", "users", "read").allowed


def test_a_change_brings_its_engine_over_the_revisions_others_committed_first(
    server: LiveServer,
) -> None:
    """Two workers: a change committed by one whose engine is behind the other's
    revisions applies them first, in order, without reloading; on PostgreSQL its own
    revision's statement read them, so the log is not read again after COMMIT."""
    log_reads: list[str] = []

    def note_log_read(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FROM policy_changes" in statement and "json_agg" not in statement:
            log_reads.append(statement)

    # "the other worker": its engine, loaded now
    with another_engine(server.settings) as (db, sessions, behind):
        state = state_of(behind)
        admin = server.admin()

        def change_through_behind() -> int:
            with sessions() as session:
                uow = UnitOfWork(session, behind)
                with uow.change(SYSTEM) as changes:
                    changes.audit("test.change", AuditTarget.SETTINGS)
            return uow.revision

        for slug in ("acme", "globex"):  # committed by the server's own engine
            assert admin.post("/workspaces", json={"slug": slug, "name": slug}).status_code == 201
        event.listen(db, "before_cursor_execute", note_log_read)
        committed = change_through_behind()
        assert behind.revision == committed
        assert state.full_reloads == 0 and state.incremental_applies == 2
        assert behind.check(1, "globex", "users", "read").allowed
        if db.dialect.name == "postgresql":
            assert log_reads == []
        else:
            assert len(log_reads) == 1

        # Further behind than a change reads (under the revision's lock): the log is
        # read after COMMIT, and the engine arrives all the same.
        log_reads.clear()
        for number in range(READ_WITH_CHANGE + 1):
            made = admin.post("/workspaces", json={"slug": f"w{number}", "name": "W"})
            assert made.status_code == 201
        committed = change_through_behind()
        assert behind.revision == committed and state.full_reloads == 0
        assert behind.check(1, f"w{READ_WITH_CHANGE}", "users", "read").allowed
        assert len(log_reads) == 1


def test_decisions_report_freshness_and_probes_and_metrics_answer(server: LiveServer) -> None:
    admin = server.admin()
    created = admin.post("/workspaces", json={"slug": "acme", "name": "Acme"})
    revision = int(created.headers["X-Ringfence-Revision"])

    with server.client() as client:
        decision = post_check(client, "admin@example.com", "acme", "users", "read")
        assert decision.json()["revision"] >= revision
        assert decision.headers["X-Ringfence-Stale"] == "false"
        assert float(decision.headers["X-Ringfence-Staleness"]) >= 0
        assert "X-Ringfence-Revision" not in decision.headers  # decisions commit nothing

        fresh = client.post(
            "/v1/check",
            json={
                "subject": "admin@example.com",
                "workspace": "acme",
                "resource": "users",
                "action": "read",
            },
            headers={**decision_headers(server), "X-Min-Revision": str(revision)},
        )
        assert fresh.status_code == 200 and fresh.json()["allowed"] is True
        ahead = client.post(
            "/v1/check",
            json={
                "subject": "admin@example.com",
                "workspace": "acme",
                "resource": "users",
                "action": "read",
            },
            headers={**decision_headers(server), "X-Min-Revision": str(revision + 5)},
        )
        assert_problem(ahead, 409, "revision-not-reached", f"revision {revision + 5}")

        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["revision"] == revision and ready.json()["revision_lag"] == 0
        assert ready.json()["watcher"] == "off"
        metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert f"ringfence_policy_revision {float(revision)}" in metrics.text
    assert 'ringfence_decisions_total{result="allow"}' in metrics.text
    assert "ringfence_decision_seconds_bucket" in metrics.text


def test_behind_trusted_proxies_the_client_address_is_the_forwarded_one(
    settings: Settings, admin_password: str
) -> None:
    """RINGFENCE_TRUSTED_PROXIES=1: the address a load balancer saw (last X-Forwarded-For
    hop) is the one throttling and the audit see; a hop the client wrote itself is not."""
    app = create_app(replace(settings, trusted_proxies=1, revision_poll_seconds=0))
    client = app.test_client()
    response = client.post(
        "/auth/login",
        json={"email": "admin@example.com", "password": "not the password at all"},
        headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9"},
        environ_base={"REMOTE_ADDR": "10.0.0.2"},
    )
    assert response.status_code == 401
    db = make_engine(settings.sqlalchemy_url)
    try:
        with make_session_factory(db)() as session:
            event = session.scalars(
                select(AuditEvent).where(AuditEvent.action == "auth.login_failed")
            ).one()
        assert event.source_address == "203.0.113.9"
    finally:
        db.dispose()
