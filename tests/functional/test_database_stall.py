"""A database that stalls (packets stop, nothing is refused) must not stop decisions
(issue 25, item 1). The gateway reaches PostgreSQL through a TCP proxy that the test
pauses: a query then waits for ever, as psycopg has no read timeout. Before, the periodic
re-check of a service token blocked there, and within a second or two every request
thread waited on it; /readyz hung too."""

from __future__ import annotations

import time
from dataclasses import replace

import httpx
import pytest
from sqlalchemy import event, make_url, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from gateway.app import create_app
from gateway.config import Settings
from gateway.db import session as db_session
from gateway.db.models import Grant
from gateway.db.session import POSTGRES_LINK, make_engine
from gateway.web.http import close_services, services
from gateway.web.state import gateway_state
from tests.cluster import through_proxy, wait_until
from tests.functional.test_token_revocation import check, serving
from tests.helpers import (
    ADMIN_EMAIL,
    LiveServer,
    assert_problem,
    client_token,
    close_app,
    create_client,
    create_workspaces,
    run_cli,
)
from tests.tcp_proxy import TcpProxy

BOUND = 0.5  # RINGFENCE_DATABASE_CALL_TIMEOUT_SECONDS here
POLL = 0.3  # RINGFENCE_REVISION_POLL_SECONDS here


def timed_check(url: str, token: str) -> tuple[float, int, str | None]:
    started = time.monotonic()
    response = check(url, token, "/access/v1/evaluation")
    return (
        time.monotonic() - started,
        response.status_code,
        response.headers.get("X-Ringfence-Stale"),
    )


def test_a_stalled_database_holds_no_decision_and_no_probe(
    server: LiveServer, settings: Settings
) -> None:
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("a stalled link needs a database across the network (PostgreSQL)")
    create_workspaces(server.admin(), "acme")
    known = client_token(server, *create_client(settings, "decisions:check", name="known"))
    unknown = client_token(server, *create_client(settings, "decisions:check", name="new"))
    proxy = TcpProxy("127.0.0.1", 5432)
    app = create_app(
        replace(
            settings,
            database_url=through_proxy(settings.database_url, proxy),
            decision_token_cache_seconds=0.2,  # re-checked (off the request) all the time
            decision_token_outage_grace_seconds=60,
            revision_poll_seconds=POLL,
            database_call_timeout_seconds=BOUND,
        )
    )
    try:
        with serving(app) as url:
            assert timed_check(url, known)[1] == 200
            proxy.pause()
            # Every decision with the known token is answered at once, and once the
            # revision check has gone unanswered for a while, labelled stale.
            answers = []
            until = time.monotonic() + 3 * POLL + BOUND + 1.5
            # For that long at least, and on until an answer says stale: on a loaded
            # machine the revision check that notices the silence may come late.
            while time.monotonic() < until or answers[-1][2] != "true":
                assert time.monotonic() < until + 15, ("never labelled stale", answers[-5:])
                answers.append(timed_check(url, known))
                time.sleep(0.05)
            assert all(status == 200 for _, status, _ in answers), answers
            # At most the first re-check waits for the bound; then the silence is known
            # and the rest answer at once. "Waited" is most of the bound, not 100 ms: on
            # two cores shared by the suite's workers a plain answer can take that long
            # (the latency goal, p99 under 50 ms, is measured by make chaos).
            slow = [took for took, _, _ in answers if took > 0.8 * BOUND]
            assert len(slow) <= 1 and max(slow, default=0) < BOUND + 0.3, answers
            assert answers[-1][2] == "true", answers[-5:]
            # A token this process never checked: a clean 503 within the bound.
            took, status, _ = timed_check(url, unknown)
            assert status == 503 and took < BOUND + 0.5, (took, status)
            # The probe answers within its bound and says what is wrong.
            started = time.monotonic()
            ready = httpx.get(f"{url}/readyz", timeout=10)
            assert time.monotonic() - started < BOUND + 0.5
            body = ready.json()
            assert body["stale"] is True and body["database"] == "silent", body
            proxy.resume()
            wait_until(
                lambda: httpx.get(f"{url}/readyz", timeout=10).json()["database"] == "ok",
                "the database to answer again",
                15,
            )
            assert timed_check(url, unknown)[1] == 200
    finally:
        proxy.resume()
        proxy.close()


def test_every_postgresql_session_is_bounded(settings: Settings) -> None:
    """Statement, lock and idle-in-transaction timeouts on every session (with the URL's
    own options kept), so that no wait on a silent database lasts for ever."""
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's session settings")
    own_options = {"options": "-csearch_path=custom_path"}
    url = make_url(settings.database_url).update_query_dict(own_options)
    db = make_engine(url.render_as_string(hide_password=False))
    try:
        with db.connect() as connection:
            shown = {
                name: connection.execute(text(f"SHOW {name}")).scalar()
                for name in (
                    "statement_timeout",
                    "lock_timeout",
                    "idle_in_transaction_session_timeout",
                )
            }
            search_path = connection.execute(text("SHOW search_path")).scalar()
    finally:
        db.dispose()
    assert shown == {
        "statement_timeout": "1min",
        "lock_timeout": "10s",
        "idle_in_transaction_session_timeout": "1min",
    }
    assert search_path == "custom_path"


WAIT = 1.0  # RINGFENCE_DATABASE_REQUEST_WAIT_SECONDS here (15 s unless set)


def write_through_a_stall(
    settings: Settings, admin_password: str, pause_at: str
) -> tuple[float, httpx.Response, httpx.Response, TcpProxy]:
    """A grant posted, with no read timeout, by an admin of an app whose link to
    PostgreSQL stalls (``pause_at``: "start", before the request; "commit", as its COMMIT
    is sent): the seconds it took, its answer, and the user read back after the link
    moved again."""
    created = run_cli(settings, "create-admin", "--email", "ops@example.com", "--name", "Ops")
    assert created.exit_code == 0, created.output
    proxy = TcpProxy("127.0.0.1", 5432)
    app = create_app(
        replace(
            settings,
            database_url=through_proxy(settings.database_url, proxy),
            database_request_wait_seconds=WAIT,
        )
    )
    factory = gateway_state(app).session_factory
    granting = []

    @event.listens_for(factory, "after_flush")
    def flushed(session: Session, _context: object) -> None:
        if pause_at == "commit" and any(isinstance(row, Grant) for row in session.new):
            granting.append(True)

    @event.listens_for(gateway_state(app).db, "commit")
    def committing(_connection: object) -> None:
        if granting:  # the grant's COMMIT is about to be sent: the link stalls
            granting.clear()
            proxy.pause()

    try:
        with serving(app) as url:
            login = httpx.post(
                f"{url}/auth/login",
                json={"email": ADMIN_EMAIL, "password": admin_password},
                timeout=30,
            )
            admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
            created = httpx.post(
                f"{url}/workspaces", json={"slug": "acme", "name": "Acme"}, headers=admin
            )
            assert created.status_code == 201, created.text
            [ops] = httpx.get(f"{url}/users", headers=admin, params={"q": "ops"}).json()
            if pause_at == "start":
                proxy.pause()
            started = time.monotonic()
            answer = httpx.post(
                f"{url}/users/{ops['id']}/grants",
                json={"workspace": "acme", "role": "viewer"},
                headers=admin,
                timeout=None,  # noqa: S113 - a client that would wait for ever
            )
            took = time.monotonic() - started
            proxy.resume()
            user_url = f"{url}/users/{ops['id']}"

            def read_back() -> httpx.Response | None:
                response = httpx.get(user_url, headers=admin, timeout=30)
                return response if response.status_code == 200 else None

            after = wait_until(read_back, "the database to answer again", 15)
    finally:
        proxy.resume()
        proxy.close()
    return took, answer, after, proxy


def test_a_write_through_a_stalled_link_gets_a_clean_503_in_time(
    settings: Settings, admin_password: str
) -> None:
    """Before, a write through a stalled link hung for as long as the stall (40 s, or for
    ever): PostgreSQL's timeouts run on the server, which never hears of the request, and
    neither keepalives nor tcp_user_timeout notice a stall while the other end's kernel
    still acknowledges. Now no wait of a request lasts over its bound: nothing was
    changed, and it says so."""
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("a stalled link needs a database across the network (PostgreSQL)")
    took, answer, after, _ = write_through_a_stall(settings, admin_password, "start")
    assert_problem(answer, 503, "database-unavailable", "nothing was changed")
    # The pooled connection (used a moment ago: not pinged) waits WAIT for its first
    # statement; an idle one's ping would wait WAIT, then a new connection be tried,
    # which gives up after connect_timeout.
    assert took < WAIT + POSTGRES_LINK["connect_timeout"] + 1.0, took
    assert after.json()["roles"] == {"*": ["superadmin"]}  # nothing was changed indeed


def test_a_commit_the_link_stalls_under_is_not_reported_as_failed(
    settings: Settings, admin_password: str
) -> None:
    """The link stalls with the COMMIT on its way: the server commits once the link moves
    again. The answer comes within the bound and says the outcome is unknown (and at
    which revision it would be), never "nothing was changed"; the change is there."""
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("a stalled link needs a database across the network (PostgreSQL)")
    took, answer, after, _ = write_through_a_stall(settings, admin_password, "commit")
    problem = assert_problem(answer, 503, "commit-outcome-unknown", "not known")
    assert problem["revision"] > 0 and answer.headers["Retry-After"]
    assert took < WAIT + 1.0, took
    assert after.json()["roles"] == {"*": ["superadmin"], "acme": ["viewer"]}


def test_a_link_that_drops_as_the_request_ends_leaves_its_answer_alone(
    settings: Settings, admin_password: str
) -> None:
    """The request's work is done (a change may have committed) and the link drops before
    its session closes: the ROLLBACK that ends the session fails. That must not turn the
    answer into a bare 500 ("committed but reported failed" in a fault-injection run);
    the app goes on with a new connection."""
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("a dropped link needs a database across the network (PostgreSQL)")
    app = create_app(settings)
    killer = make_engine(settings.database_url)
    try:
        with app.test_request_context("/"):
            session = services().session
            pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with killer.connect() as admin:
                admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            close_services(None)  # the teardown: logs, does not raise
        with app.test_client() as client:
            assert client.get("/readyz").status_code == 200
    finally:
        killer.dispose()
        close_app(app)


def test_a_pooled_connection_is_pinged_once_it_sat_idle(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pooled connection that sat unused for PING_AFTER_IDLE is pinged before use: one
    the database ended meanwhile (a restart, a proxy's timeout) is replaced unseen. One
    in steady use is not pinged: the statement that meets it fails (a 503 in a request),
    and the pool replaces its connections for the next."""
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("ending a backend needs PostgreSQL")
    engine = make_engine(settings.database_url)
    killer = make_engine(settings.database_url)

    def pooled_backend() -> int:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())

    def end(pid: int) -> None:
        with killer.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

    try:
        monkeypatch.setattr(db_session, "PING_AFTER_IDLE", 0.0)  # every one sat idle
        ended = pooled_backend()
        end(ended)
        assert pooled_backend() != ended  # pinged, found dead, replaced: no error
        monkeypatch.setattr(db_session, "PING_AFTER_IDLE", 3600.0)  # in steady use
        ended = pooled_backend()
        end(ended)
        with pytest.raises(OperationalError) as met:
            pooled_backend()
        assert met.value.connection_invalidated
        assert pooled_backend() != ended
    finally:
        engine.dispose()
        killer.dispose()
