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
from sqlalchemy import text

from gateway.app import create_app
from gateway.config import Settings
from gateway.db import make_engine
from tests.cluster import through_proxy, wait_until
from tests.functional.test_token_revocation import check, serving
from tests.helpers import (
    LiveServer,
    client_token,
    create_client,
    create_workspaces,
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
            while time.monotonic() < until:
                answers.append(timed_check(url, known))
                time.sleep(0.05)
            assert all(status == 200 for _, status, _ in answers), answers
            # At most the first re-check waits for the bound; then the silence is known
            # and the rest answer at once (p99 of the goal: under 50 ms).
            slow = [took for took, _, _ in answers if took > 0.1]
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
    db = make_engine(settings.database_url)
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
    assert search_path is not None and search_path.startswith("test_")  # the test's schema
