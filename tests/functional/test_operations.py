"""Operations: the metrics of sign-in and mail, over real HTTP (the ``server`` fixture),
with a real SMTP server (aiosmtpd) that refuses the recipient, or a broker that is away."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import Settings
from tests.helpers import LiveServer, create_workspaces, post_invitation
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
