"""Operations: the metrics of sign-in and mail, over real HTTP (the ``server`` fixture),
with a real SMTP server (aiosmtpd) that refuses the recipient, or a broker that is away."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.config import Settings
from gateway.logs import use_format
from mailer.delivery import current_ledger
from tests.helpers import (
    LiveServer,
    close_app,
    create_workspaces,
    post_invitation,
    run_cli,
    serving,
)
from tests.smtp_support import REFUSAL, Mailbox, running_smtp


@pytest.fixture
def mail_mode() -> str:
    """``refuse``: SMTP that refuses every recipient; ``no-broker``: a broker nobody
    listens on (publishing fails, the message stays queued); ``outbox``: the default."""
    return "outbox"


@pytest.fixture
def settings(settings: Settings, mail_mode: str, celery_conf: None) -> Iterator[Settings]:
    if mail_mode == "refuse":
        with running_smtp(Mailbox(rcpt_refusal=REFUSAL)) as port:
            yield replace(
                settings,
                smtp_host="127.0.0.1",
                smtp_port=port,
                smtp_security="none",
                smtp_timeout=5.0,
                mail_from="Ringfence <no-reply@ringfence.test>",
            )
        return
    if mail_mode == "no-broker":
        yield replace(settings, broker_url="redis://127.0.0.1:1/0")
        return
    yield settings


def scrape(server: LiveServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``: (name, sorted labels) -> value."""
    response = httpx.get(f"{server.url}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def invite_one(server: LiveServer, email: str) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    response = post_invitation(admin, email, [("acme", "viewer")], "Some One")
    assert response.status_code == 201, response.text


def test_a_failed_sign_in_is_counted(server: LiveServer) -> None:
    before = scrape(server)
    with server.client() as anonymous:
        response = anonymous.post(
            "/auth/login", json={"email": "nobody@example.com", "password": "wrong-password-1"}
        )
    assert response.status_code == 401, response.text
    after = scrape(server)
    name = "ringfence_login_failures_total"
    assert value(after, name, reason="invalid_credentials") == (
        value(before, name, reason="invalid_credentials") + 1
    )


@pytest.mark.parametrize("mail_mode", ["refuse"])
def test_a_failed_delivery_is_counted(server: LiveServer) -> None:
    name = "ringfence_mail_delivery_failures_total"
    before = value(scrape(server), name, outcome="failed")
    invite_one(server, "nobody@example.com")  # refused by the SMTP server: final
    assert value(scrape(server), name, outcome="failed") == before + 1


@pytest.mark.parametrize("mail_mode", ["no-broker"])
def test_the_queue_gauge_counts_unsent_messages(server: LiveServer) -> None:
    name = "ringfence_mail_queue_depth"
    assert value(scrape(server), name, status="queued") == 0
    invite_one(server, "someone@example.com")  # committed; the broker could not take it
    assert value(scrape(server), name, status="queued") == 1


# -- ringfence doctor --url ---------------------------------------------------------------


def database_revision(settings: Settings) -> int:
    from gateway.db.session import make_engine, make_session_factory
    from gateway.replication.sync import committed_revision

    db = make_engine(settings.sqlalchemy_url)
    try:
        with make_session_factory(db)() as session:
            return committed_revision(session)
    finally:
        db.dispose()


def test_doctor_finds_the_replica_in_sync(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")  # a change: the revision moves past init's
    revision = database_revision(server.settings)

    result = run_cli(server.settings, "doctor", "--url", server.url)

    assert result.exit_code == 0, result.output
    assert f"at revision {revision}, database at {revision}: in sync" in result.output


def test_doctor_reports_a_replica_behind_the_database_and_one_unreachable(
    server: LiveServer, tmp_path: Path
) -> None:
    # The replica reads one database, doctor another one a change ahead of it: what an
    # operator sees of a replica pointed at the wrong database (or a restored backup).
    other = replace(
        server.settings,
        instance_dir=tmp_path / "other",
        database_url=f"sqlite:///{tmp_path / 'other.db'}",
    )
    assert run_cli(other, "init").exit_code == 0
    assert database_revision(other) == database_revision(server.settings)
    added = run_cli(
        other,
        "create-admin",
        "--email",
        "b@example.com",
        "--name",
        "B",
        "--password-stdin",
        input="a very long password\n",
    )
    assert added.exit_code == 0, added.output
    ahead = database_revision(other)
    replica = database_revision(server.settings)
    assert ahead > replica

    behind = run_cli(other, "doctor", "--url", server.url)
    assert behind.exit_code == 1, behind.output
    assert f"behind by {ahead - replica} (more than 0)" in behind.output

    tolerated = run_cli(other, "doctor", "--url", server.url, "--max-lag", str(ahead - replica))
    assert tolerated.exit_code == 0, tolerated.output

    away = run_cli(server.settings, "doctor", "--url", "http://127.0.0.1:1")
    assert away.exit_code == 1
    assert "unreachable" in away.output


# -- JSON logs --------------------------------------------------------------------------


def test_json_logs_carry_the_request_id_into_the_mail_task(
    settings: Settings, admin_password: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # Built here, not by the server fixture: the format is set on the handlers of this
    # test's phase, which caplog.text writes through.
    app = create_app(replace(settings, log_format="json"))
    try:
        with serving(app) as httpd:
            live = LiveServer(
                f"http://127.0.0.1:{httpd.server_port}", app, settings, admin_password
            )
            admin = live.admin()
            create_workspaces(admin, "acme")
            response = admin.post(
                "/invitations",
                json={
                    "email": "john@example.com",
                    "name": "John",
                    "roles": [{"workspace": "acme", "role": "viewer"}],
                },
                headers={"X-Request-ID": "req-ops-42"},
            )
            assert response.status_code == 201, response.text
    finally:
        close_app(app)

    lines = [json.loads(line) for line in caplog.text.splitlines() if line.strip()]
    assert lines and all(
        {"time", "level", "logger", "message", "request_id"} <= set(line) for line in lines
    )
    # The mail task (eager here) logged with the id passed to it as a Celery header.
    mailer = [line for line in lines if line["logger"] == "ringfence.mailer"]
    assert mailer and all(line["request_id"] == "req-ops-42" for line in mailer), mailer
    assert any("accept link" in line["message"] for line in mailer)


def test_a_json_line_holds_the_exception() -> None:
    handler = logging.StreamHandler(io.StringIO())
    logger = logging.getLogger("ringfence.test_operations")
    logger.addHandler(handler)
    try:
        use_format(logger, "json")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.error("it failed", exc_info=True)
    finally:
        logger.removeHandler(handler)
    stream = handler.stream
    assert isinstance(stream, io.StringIO)
    [line] = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["level"] == "ERROR" and line["message"] == "it failed"
    assert line["request_id"] is None  # neither a request nor a task
    assert "RuntimeError: boom" in line["exception"]


def test_an_app_that_closes_gives_the_mail_tasks_back_to_the_app_still_open(
    app: Flask, settings: Settings
) -> None:
    """The mail and stream tasks find their ledger process-wide (they have no app to
    ask). A second app in the process takes it over; once closed, it hands it back:
    before, the tasks and the event streams' poll went on reading the closed app's
    database (in the suite: "database ... does not exist")."""
    first = current_ledger()
    second_app = create_app(settings)
    second = current_ledger()
    assert second is not first
    close_app(second_app)
    assert current_ledger() is first
