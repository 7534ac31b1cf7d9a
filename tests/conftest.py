"""Shared fixtures: a real database (SQLite, and PostgreSQL when
``RINGFENCE_TEST_DATABASE_URL`` is set), a gateway set up by the real ``ringfence init``,
and a live HTTP server on loopback."""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import create_engine, make_url, text
from werkzeug.serving import BaseWSGIServer, make_server

from gateway import activity
from gateway.app import create_app
from gateway.config import Settings
from tests.helpers import ADMIN_EMAIL, LiveServer, run_cli

PG_URL = os.environ.get("RINGFENCE_TEST_DATABASE_URL", "")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database per test: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ringfence.db'}"
        return
    if not PG_URL:
        pytest.skip("RINGFENCE_TEST_DATABASE_URL is not set")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        # Whatever app the test made: its last-seen recorder writes what it holds now,
        # while the schema exists (at interpreter exit it would be gone), and stops.
        activity.install(None)
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        instance_dir=tmp_path / "instance",
        database_url=database_url,
        secret_key="test-secret-" + uuid.uuid4().hex,
        public_url="http://ringfence.test",
        admin_email=ADMIN_EMAIL,
        admin_name="Ada Admin",
    )


@pytest.fixture
def admin_password(settings: Settings) -> str:
    """Set the database up exactly as a newcomer does (``ringfence init``); the printed
    one-time super admin password."""
    result = run_cli(settings, "init")
    assert result.exit_code == 0, result.output
    match = re.search(r"password: (\S+)", result.output)
    assert match, result.output
    return match.group(1)


@pytest.fixture
def app(settings: Settings, admin_password: str) -> Iterator[Flask]:
    app = create_app(settings)
    yield app
    # The revision poller would outlive the test (and its database) otherwise.
    if poller := app.extensions.get("ringfence_poller"):
        poller.stop()
    # Close its pooled connections now: a long run otherwise holds PostgreSQL connections
    # of finished tests until garbage collection, up to "too many clients".
    app.extensions["ringfence"].db.dispose()


@pytest.fixture
def server(app: Flask, settings: Settings, admin_password: str) -> Iterator[LiveServer]:
    """The gateway on a real HTTP socket on loopback."""
    httpd: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield LiveServer(f"http://127.0.0.1:{httpd.server_port}", app, settings, admin_password)
    finally:
        httpd.shutdown()
        thread.join(timeout=5)


@pytest.fixture
def celery_conf() -> Iterator[None]:
    """Put celery_app's configuration back as it was: it is process-wide state."""
    from mailer.celery_app import celery_app, reset_connections

    keys = (
        "broker_url",
        "task_always_eager",
        "task_eager_propagates",
        "broker_connection_timeout",
        "task_publish_retry_policy",
    )
    saved = {key: celery_app.conf.get(key) for key in keys}
    yield
    celery_app.conf.update(saved)
    reset_connections()


# -- CI guard: PostgreSQL tests must run, not skip ------------------------------------

_skipped_postgres: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "postgres" in report.keywords:
        _skipped_postgres.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("RINGFENCE_REQUIRE_POSTGRES") == "1" and _skipped_postgres:
        print(f"\n{len(_skipped_postgres)} PostgreSQL test(s) were skipped; failing the run.")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# -- CI guard: Redis tests must run, not skip -----------------------------------------


class _RedisGuard:
    """Fails the run when ``RINGFENCE_REQUIRE_REDIS=1`` and a ``redis`` test was skipped
    (e.g. no ``redis-server`` on the machine), so that CI cannot pass without them."""

    def __init__(self) -> None:
        self.skipped: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and "redis" in report.keywords:
            self.skipped.append(report.nodeid)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if os.environ.get("RINGFENCE_REQUIRE_REDIS") == "1" and self.skipped:
            print(f"\n{len(self.skipped)} Redis test(s) were skipped; failing the run.")
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_RedisGuard(), "ringfence-redis-guard")
    config.pluginmanager.register(_BrowserGuard(), "ringfence-browser-guard")


# -- CI guard: browser tests must run, not skip ---------------------------------------


class _BrowserGuard:
    """Fails the run when ``RINGFENCE_REQUIRE_BROWSER=1`` and a ``browser`` test was
    skipped (no system Chromium, or Playwright missing), so CI cannot pass without them."""

    def __init__(self) -> None:
        self.skipped: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and "browser" in report.keywords:
            self.skipped.append(report.nodeid)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if os.environ.get("RINGFENCE_REQUIRE_BROWSER") == "1" and self.skipped:
            print(f"\n{len(self.skipped)} browser test(s) were skipped; failing the run.")
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
