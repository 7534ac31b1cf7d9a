"""Last seen per person and workspace: checks answered over HTTP (``/v1/check`` and
AuthZEN evaluations) are recorded, written by a flush, and shown in user details only
to readers of that workspace; searches, unknown people and unknown workspaces are not
recorded; a failing database never reaches a decision."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from gateway.audit import activity
from gateway.config import Settings
from gateway.db.models import User, UserStatus, Workspace, WorkspaceActivity, utcnow
from gateway.db.session import make_engine
from gateway.web.state import gateway_state
from tests.cluster import Replica, wait_until
from tests.console_support import Console, sign_in
from tests.helpers import (
    ADMIN_EMAIL,
    PASSWORD,
    LiveServer,
    create_workspaces,
    invite_and_accept,
    onboard,
    post_check,
    post_decision,
    run_cli,
)


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The shared settings; a test parametrized indirectly on ``settings`` gets that
    flush interval."""
    flush = getattr(request, "param", None)
    return settings if flush is None else replace(settings, activity_flush_seconds=flush)


def flush(server: LiveServer) -> None:
    """Write what the gateway's last-seen recorder holds, now (none when it is off)."""
    recorder = gateway_state(server.app).activity
    if recorder is not None:
        recorder.flush()


@pytest.fixture
def people(server: LiveServer) -> Iterator[dict[str, int]]:
    """acme and globex; eve works in both, gina administers globex only."""
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    eve = onboard(
        server, root, "eve@example.com", "Eve", [("acme", "editor"), ("globex", "viewer")]
    )
    gina, _ = invite_and_accept(server, root, "gina@example.com", "Gina", [("globex", "admin")])
    yield {"eve": eve, "gina": gina}
    root.close()


def stored(server: LiveServer) -> dict[tuple[int, str], datetime]:
    """Every workspace_activity row, read from the database: (user id, slug) → time."""
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with Session(db) as session:
            rows = session.execute(
                select(
                    WorkspaceActivity.user_id, Workspace.slug, WorkspaceActivity.last_seen_at
                ).join(Workspace, Workspace.id == WorkspaceActivity.workspace_id)
            )
            return {(user_id, slug): at for user_id, slug, at in rows}
    finally:
        db.dispose()


def set_stored(server: LiveServer, user_id: int, slug: str, at: datetime) -> None:
    """Setup only: a row as an earlier flush (or another process) would have left it."""
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with Session(db) as session, session.begin():
            workspace_id = session.scalar(select(Workspace.id).where(Workspace.slug == slug))
            assert workspace_id is not None
            session.merge(
                WorkspaceActivity(user_id=user_id, workspace_id=workspace_id, last_seen_at=at)
            )
    finally:
        db.dispose()


def evaluation(email: str, workspace: str, action: str = "read") -> dict[str, object]:
    return {
        "subject": {"type": "user", "id": email},
        "action": {"name": action},
        "resource": {"type": "documents", "id": "d1", "properties": {"workspace": workspace}},
    }


def last_seen(client: httpx.Client, user_id: int) -> dict[str, str]:
    response = client.get(f"/users/{user_id}")
    assert response.status_code == 200, response.text
    return response.json()["workspaces_last_seen"]  # type: ignore[no-any-return]


def test_checks_then_a_flush_show_in_user_details(
    server: LiveServer, people: dict[str, int]
) -> None:
    eve = people["eve"]
    root = server.admin()
    assert last_seen(root, eve) == {}
    before = utcnow().replace(microsecond=0)
    assert post_check(server.client(), "eve@example.com", "acme", "documents", "write").json()[
        "allowed"
    ]
    answer = post_decision(server, "/access/v1/evaluation", evaluation(f"user:{eve}", "globex"))
    assert answer.status_code == 200 and answer.json()["decision"] is True
    assert stored(server) == {}  # nothing written before the flush
    flush(server)
    after = utcnow()

    seen = last_seen(root, eve)
    assert set(seen) == {"acme", "globex"}
    for at in seen.values():
        assert before <= datetime.fromisoformat(at) <= after
    # The listing says the same.
    [listed] = [u for u in root.get("/users", params={"q": "eve@"}).json() if u["id"] == eve]
    assert listed["workspaces_last_seen"] == seen
    # The OpenAPI document describes the field.
    spec = root.get("/openapi.json").json()
    field = spec["components"]["schemas"]["User"]["properties"]["workspaces_last_seen"]
    assert field["additionalProperties"]["format"] == "date-time"


def test_a_later_time_wins_and_an_earlier_one_does_not_overwrite(
    server: LiveServer, people: dict[str, int]
) -> None:
    eve = people["eve"]
    future = (utcnow() + timedelta(days=1)).replace(microsecond=0)
    past = (utcnow() - timedelta(days=30)).replace(microsecond=0)
    set_stored(server, eve, "acme", future)  # say, written by a replica with a later check
    set_stored(server, eve, "globex", past)
    post_check(server.client(), "eve@example.com", "acme", "documents", "read")
    post_check(server.client(), "eve@example.com", "globex", "documents", "read")
    flush(server)

    rows = stored(server)
    assert rows[(eve, "acme")] == future  # the stored later time stays
    assert past < rows[(eve, "globex")] <= utcnow()  # the new time replaces the older one


def test_denied_checks_count_for_known_people_and_unknown_ones_record_nothing(
    server: LiveServer, people: dict[str, int]
) -> None:
    eve, gina = people["eve"], people["gina"]
    client = server.client()
    assert not post_check(client, "eve@example.com", "acme", "workspaces", "delete").json()[
        "allowed"
    ]
    assert not post_check(client, f"user:{gina}", "acme", "documents", "read").json()["allowed"]
    for subject, workspace in [
        ("nobody@example.com", "acme"),
        ("user:999999", "acme"),
        ("eve@example.com", "nowhere"),
        ("not-a-subject", "globex"),
    ]:
        answer = post_check(client, subject, workspace, "documents", "read").json()
        assert answer["allowed"] is False
    denied = post_decision(server, "/access/v1/evaluation", evaluation("ghost@example.com", "acme"))
    assert denied.status_code == 200 and denied.json()["decision"] is False
    flush(server)

    assert set(stored(server)) == {(eve, "acme"), (gina, "acme")}


def test_batch_evaluations_record_each_item(server: LiveServer, people: dict[str, int]) -> None:
    eve, gina = people["eve"], people["gina"]
    body = {
        **evaluation("eve@example.com", "acme"),
        "evaluations": [{}, {"subject": {"type": "user", "id": "gina@example.com"}}],
    }
    answers = post_decision(server, "/access/v1/evaluations", body)
    assert answers.status_code == 200
    assert [e["decision"] for e in answers.json()["evaluations"]] == [True, False]
    flush(server)
    assert set(stored(server)) == {(eve, "acme"), (gina, "acme")}


def test_searches_do_not_record(server: LiveServer, people: dict[str, int]) -> None:
    eve = {"type": "user", "id": "eve@example.com"}
    searches = {
        "subject": {
            "subject": {"type": "user"},
            "action": {"name": "read"},
            "resource": {"type": "documents", "id": "d1"},
        },
        "resource": {"subject": eve, "action": {"name": "read"}, "resource": {"type": "documents"}},
        "action": {"subject": eve, "resource": {"type": "documents", "id": "d1"}},
    }
    for kind, body in searches.items():
        response = post_decision(server, f"/pdp/acme/access/v1/search/{kind}", body)
        assert response.status_code == 200, response.text
        assert response.json()["results"], kind  # each found something: it did ask
    flush(server)
    assert stored(server) == {}


def test_an_admin_of_another_workspace_does_not_see_activity_there(
    server: LiveServer, people: dict[str, int]
) -> None:
    eve = people["eve"]
    post_check(server.client(), "eve@example.com", "acme", "documents", "read")
    post_check(server.client(), "eve@example.com", "globex", "documents", "read")
    flush(server)

    gina = server.login("gina@example.com", PASSWORD)
    assert set(last_seen(gina, eve)) == {"globex"}
    [listed] = [u for u in gina.get("/users").json() if u["id"] == eve]
    assert set(listed["workspaces_last_seen"]) == {"globex"}
    assert set(last_seen(server.admin(), eve)) == {"acme", "globex"}


@pytest.mark.parametrize("settings", [0], indirect=True)
def test_a_flush_interval_of_zero_records_nothing(
    server: LiveServer, people: dict[str, int]
) -> None:
    assert gateway_state(server.app).activity is None
    assert post_check(server.client(), "eve@example.com", "acme", "documents", "read").json()[
        "allowed"
    ]
    flush(server)
    assert stored(server) == {}
    assert last_seen(server.admin(), people["eve"]) == {}


def test_removing_a_person_or_workspace_removes_their_activity(
    server: LiveServer, people: dict[str, int]
) -> None:
    eve, gina = people["eve"], people["gina"]
    root = server.admin()
    for subject in ("eve@example.com", "gina@example.com"):
        for workspace in ("acme", "globex"):
            post_check(server.client(), subject, workspace, "documents", "read")
    flush(server)
    assert len(stored(server)) == 4

    assert root.delete(f"/users/{gina}").status_code == 200
    assert set(stored(server)) == {(eve, "acme"), (eve, "globex")}
    assert root.delete("/workspaces/acme").status_code == 200
    assert set(stored(server)) == {(eve, "globex")}


def test_pairs_of_people_removed_before_the_flush_are_skipped_not_fatal(
    server: LiveServer, people: dict[str, int]
) -> None:
    eve, gina = people["eve"], people["gina"]
    root = server.admin()
    post_check(server.client(), "gina@example.com", "globex", "documents", "read")
    post_check(server.client(), "eve@example.com", "globex", "documents", "read")
    post_check(server.client(), "eve@example.com", "acme", "documents", "read")
    assert root.delete(f"/users/{gina}").status_code == 200
    assert root.delete("/workspaces/acme").status_code == 200
    flush(server)  # gina's and acme's pairs: gone from the database, skipped
    assert set(stored(server)) == {(eve, "globex")}
    recorder = gateway_state(server.app).activity
    assert recorder is not None and recorder.failures == 0
    assert recorder.written == 1  # eve in globex; the other two pairs were skipped


def test_a_row_whose_person_went_away_since_the_lookup_is_skipped_alone(
    server: LiveServer, people: dict[str, int]
) -> None:
    """The race the row-by-row retry is for: removed between the existence check and
    the insert, the database's foreign key refuses the batch; only that row is lost."""
    eve = people["eve"]
    now = utcnow().replace(microsecond=0)
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with Session(db) as session:
            acme = session.scalar(select(Workspace.id).where(Workspace.slug == "acme"))
            globex = session.scalar(select(Workspace.id).where(Workspace.slug == "globex"))
            rows = [
                {"user_id": eve, "workspace_id": acme, "last_seen_at": now},
                {"user_id": 999_999, "workspace_id": acme, "last_seen_at": now},
                {"user_id": eve, "workspace_id": globex, "last_seen_at": now},
            ]
            assert activity.write_rows(session, rows) == 2
    finally:
        db.dispose()
    assert stored(server) == {(eve, "acme"): now, (eve, "globex"): now}


def test_a_failing_database_never_reaches_a_decision(
    server: LiveServer, people: dict[str, int]
) -> None:
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with db.begin() as connection:  # the recording side breaks: its table is gone
            connection.execute(text("ALTER TABLE workspace_activity RENAME TO activity_away"))
        assert post_check(server.client(), "eve@example.com", "acme", "documents", "read").json()[
            "allowed"
        ]
        recorder = gateway_state(server.app).activity
        assert recorder is not None
        flush(server)  # logged, not raised
        assert recorder.failures == 1
        assert post_check(server.client(), "eve@example.com", "acme", "documents", "read").json()[
            "allowed"
        ]
        with db.begin() as connection:  # back: the kept pairs are written at the next flush
            connection.execute(text("ALTER TABLE activity_away RENAME TO workspace_activity"))
        flush(server)
        assert set(stored(server)) == {(people["eve"], "acme")}
    finally:
        db.dispose()


def test_the_window_is_capped_and_drops_are_counted(
    server: LiveServer, people: dict[str, int]
) -> None:
    recorder = gateway_state(server.app).activity
    assert recorder is not None
    recorder.max_pairs = 2
    for subject, workspace in [
        ("eve@example.com", "acme"),
        ("eve@example.com", "acme"),  # a repeat costs nothing and is no drop
        ("eve@example.com", "globex"),
        ("gina@example.com", "globex"),  # the third distinct pair: dropped
    ]:
        post_check(server.client(), subject, workspace, "documents", "read")
    assert recorder.dropped == 1
    flush(server)
    assert set(stored(server)) == {(people["eve"], "acme"), (people["eve"], "globex")}


def test_a_forked_worker_records_with_a_thread_of_its_own(
    server: LiveServer, people: dict[str, int]
) -> None:
    """`ringfence serve` builds the app, then forks: the worker's writer thread must run."""
    recorder = gateway_state(server.app).activity
    assert recorder is not None
    parent_thread = recorder._thread
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        ok = recorder._thread is not parent_thread and recorder._thread.is_alive()
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert recorder._thread is parent_thread and parent_thread.is_alive()


def test_users_without_activity_show_an_empty_map(
    server: LiveServer, people: dict[str, int]
) -> None:
    root = server.admin()
    users = root.get("/users").json()
    assert users and all(u["workspaces_last_seen"] == {} for u in users)


def test_the_console_shows_last_activity_to_readers_of_the_workspace(
    server: LiveServer, people: dict[str, int]
) -> None:
    eve = people["eve"]
    post_check(server.client(), "eve@example.com", "acme", "documents", "read")
    post_check(server.client(), "eve@example.com", "globex", "documents", "read")
    flush(server)
    seen = last_seen(server.admin(), eve)
    shown = {
        ws: datetime.fromisoformat(at).strftime("%Y-%m-%d %H:%M UTC") for ws, at in seen.items()
    }

    def activity_cell(console: Console) -> str:
        page = console.get("/console/users")
        assert page.status_code == 200
        assert '<th scope="col">Last activity</th>' in page.text
        row = re.search(rf'<tr id="user-{eve}">.*?</tr>', page.text, re.S)
        assert row, page.text
        cell = re.search(r'<td data-label="Last activity">(.*?)</td>', row.group(0), re.S)
        assert cell
        return cell.group(1)

    root = sign_in(server, ADMIN_EMAIL, server.admin_password)
    gina = sign_in(server, "gina@example.com", PASSWORD)
    try:
        cell = activity_cell(root)
        assert f'<span class="ws">acme</span>: {shown["acme"]}' in cell
        assert f'<span class="ws">globex</span>: {shown["globex"]}' in cell
        cell = activity_cell(gina)  # an admin of globex only: nothing of acme
        assert f'<span class="ws">globex</span>: {shown["globex"]}' in cell
        assert "acme" not in cell
        members = root.get("/console/workspaces/acme")
        assert members.status_code == 200
        assert f'<td data-label="Last activity here">{shown["acme"]}</td>' in members.text
    finally:
        root.close()
        gina.close()


@pytest.mark.parametrize("flush_seconds", [0.5, 3600])
def test_a_served_worker_records_and_writes_what_it_holds_when_it_stops(
    settings: Settings, admin_password: str, tmp_path: Path, flush_seconds: float
) -> None:
    """The deployment's way: `ringfence serve` builds the app, then forks the worker. With a short
    interval the worker's own writer thread writes while it runs; with an hour, what it
    holds when stopped is written at exit (only the exit can have written it)."""
    created = run_cli(settings, "create-admin", "--email", "ops@example.com", "--name", "Ops")
    assert created.exit_code == 0, created.output
    replica = Replica(
        "a",
        replace(settings, activity_flush_seconds=flush_seconds, decisions_allow_loopback=True),
        tmp_path / "logs",
    )
    try:
        replica.start()
        with replica.client() as anonymous:
            login = anonymous.post(
                "/auth/login", json={"email": ADMIN_EMAIL, "password": admin_password}
            )
            assert login.status_code == 200, login.text
        with replica.client(login.json()["access_token"]) as admin:
            assert (
                admin.post("/workspaces", json={"slug": "acme", "name": "Acme"}).status_code == 201
            )
            [ops] = [u["id"] for u in admin.get("/users").json() if u["email"] == "ops@example.com"]
        with replica.client() as service:  # loopback, without a token (allowed here)
            check = service.post(
                "/v1/check",
                json={
                    "subject": "ops@example.com",
                    "workspace": "acme",
                    "resource": "documents",
                    "action": "read",
                },
            )
            assert check.status_code == 200 and check.json()["allowed"], check.text
        with replica.client(login.json()["access_token"]) as admin:

            def seen() -> dict[str, str]:
                return admin.get(f"/users/{ops}").json()["workspaces_last_seen"]  # type: ignore[no-any-return]

            if flush_seconds < 60:
                assert set(wait_until(seen, "a write by the worker's thread", 15)) == {"acme"}
            else:
                assert seen() == {}
    finally:
        replica.stop()
    db = make_engine(settings.sqlalchemy_url)
    try:
        with Session(db) as session:
            rows = session.execute(
                select(WorkspaceActivity.user_id, Workspace.slug).join(
                    Workspace, Workspace.id == WorkspaceActivity.workspace_id
                )
            ).all()
    finally:
        db.dispose()
    assert [tuple(row) for row in rows] == [(ops, "acme")], replica.log()


def test_replicas_writing_the_same_pairs_at_once_do_not_deadlock(server: LiveServer) -> None:
    """Two replicas flush overlapping windows at the same moment, their pairs in opposite
    orders: rows are written in one stable order, so neither waits on the other's locks
    (PostgreSQL reported deadlocks when each wrote in its own order)."""
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with Session(db) as session, session.begin():
            session.add_all(Workspace(slug=f"w{i}", name=f"W{i}") for i in range(20))
            session.add_all(
                User(email=f"u{i}@example.com", name=f"U{i}", status=UserStatus.ACTIVE)
                for i in range(20)
            )
        with Session(db) as session:
            user_ids = session.scalars(select(User.id).where(User.email.like("u%"))).all()
        pairs = [(user_id, f"w{i}") for user_id in user_ids for i in range(20)]
        failures: list[BaseException] = []

        def flush(order: list[tuple[int, str]], rounds: int) -> None:
            for _ in range(rounds):
                try:
                    with Session(db) as session:
                        activity.upsert(session, [(pair, utcnow()) for pair in order])
                except BaseException as exc:  # the test reports any of them
                    failures.append(exc)

        threads = [
            threading.Thread(target=flush, args=(order, 8))
            for order in (pairs, pairs[::-1], pairs, pairs[::-1])
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert failures == []
        assert len(stored(server)) >= len(pairs)
    finally:
        db.dispose()
