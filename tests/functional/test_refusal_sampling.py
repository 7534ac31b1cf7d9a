"""Refusals of callers who are not signed in (a garbage bearer token, a made-up single
sign-on code or callback) are counted in a metric every time and audited at most once per
source and window, with the count and no text the caller chose; the decision endpoints
only count them. And the Prometheus contract of ``/metrics``: counters end in ``_total``,
one charset in the content type, ``decisions_total{result="error"}`` as its help says,
and an optional token to scrape it. All over real HTTP (the ``server`` fixture)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import Settings, load_settings
from gateway.web.state import gateway_state
from tests.functional.test_sso import CALLBACK
from tests.helpers import LiveServer, assert_problem, decision_headers
from tests.oidc_provider import OidcProvider, running_provider

FLOOD = 50
CALLER_TEXT = "CALLER-CHOSEN-TEXT"  # must appear nowhere in the audit trail


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


# Looks like one of our JWTs and claims to be someone, all of it the caller's words.
GARBAGE_TOKEN = ".".join(
    (
        b64({"alg": "RS256", "typ": "at+jwt", "kid": f"{CALLER_TEXT}-kid"}),
        b64({"sub": f"{CALLER_TEXT}-sub", "client_id": f"{CALLER_TEXT}-client", "jti": "j"}),
        "c2lnbmF0dXJl",
    )
)


def samples(server: LiveServer, **headers: str) -> dict[tuple[str, tuple[Any, ...]], float]:
    response = httpx.get(f"{server.url}/metrics", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def refusals(metrics: dict[tuple[str, tuple[Any, ...]], float], kind: str) -> float:
    """``ringfence_auth_refusals_total`` of ``kind``, every reason summed."""
    return sum(
        value
        for (name, labels), value in metrics.items()
        if name == "ringfence_auth_refusals_total" and ("kind", kind) in labels
    )


def audit(server: LiveServer, action: str) -> list[dict[str, Any]]:
    with server.admin() as admin:
        response = admin.get("/audit", params={"action": action, "page_size": 100})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def audit_total(server: LiveServer) -> int:
    with server.admin() as admin:
        response = admin.get("/audit", params={"page_size": 1, "page": 1})
    assert response.status_code == 200, response.text
    return int(json.loads(response.headers["X-Pagination"])["total"])


def flood(server: LiveServer, method: str, path: str, **kwargs: Any) -> None:
    """``FLOOD`` requests, each with its own caller-chosen request id; every one refused."""
    extra = kwargs.pop("headers", {})
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for n in range(FLOOD):
            headers = {"X-Request-ID": f"{CALLER_TEXT}-{n}", **extra}
            response = client.request(method, path, headers=headers, **kwargs)
            assert response.status_code in (400, 401), response.text


def next_window(server: LiveServer) -> None:
    """Move this gateway's refusal sampler one window ahead (a real minute is too long
    for a test): what the next refusal of a source sees after the window passed."""
    sampler = gateway_state(server.app).refusals
    later = sampler.clock() + sampler.window + 1
    sampler.clock = lambda: later


def assert_no_caller_text(events: list[dict[str, Any]]) -> None:
    assert CALLER_TEXT not in json.dumps(events), events
    for event in events:
        assert event["request_id"] is None  # the caller's X-Request-ID is text they chose
        assert event["source_address"] == "127.0.0.1"


def test_garbage_bearer_tokens_are_counted_and_audited_once_per_window(
    server: LiveServer,
) -> None:
    before = samples(server)
    flood(server, "GET", "/users", headers={"Authorization": f"Bearer {GARBAGE_TOKEN}"})
    flood(server, "GET", "/workspaces", headers={"Authorization": "Bearer x"})

    events = audit(server, "auth.token_rejected")
    assert len(events) == 1, f"{len(events)} events for {2 * FLOOD} refusals"
    after = samples(server)
    assert refusals(after, "access_token") == refusals(before, "access_token") + 2 * FLOOD
    [event] = events
    assert event["after"]["refusals"] == 1  # the first of the window; the rest are counted
    assert event["actor_id"] is None and event["target_id"] is None
    assert_no_caller_text([event])

    # The next refusal after the window carries the count of those held back, by reason.
    next_window(server)
    with server.client("another-garbage-token") as client:
        assert_problem(client.get("/users"), 401, "unauthorized")
    events = audit(server, "auth.token_rejected")
    assert len(events) == 2
    latest = events[0]  # newest first
    assert latest["after"]["refusals"] == 2 * FLOOD
    assert sum(latest["after"]["reasons"].values()) == 2 * FLOOD
    assert set(latest["after"]["reasons"]) <= {"malformed", "unknown-key"}
    assert_no_caller_text(events)


def test_no_token_at_all_is_counted_but_not_audited(server: LiveServer) -> None:
    before = samples(server)
    flood(server, "GET", "/users")
    assert refusals(samples(server), "access_token") == refusals(before, "access_token") + FLOOD
    assert audit(server, "auth.token_rejected") == []


def test_decision_endpoints_only_count_refused_tokens(server: LiveServer) -> None:
    good = decision_headers(server)  # made first: its client's creation is audited
    before, audited = samples(server), audit_total(server)
    check = {"subject": "a@example.com", "workspace": "acme", "resource": "d", "action": "read"}
    evaluation = {
        "subject": {"type": "user", "id": "a@example.com"},
        "resource": {"type": "d", "id": "1", "properties": {"workspace": "acme"}},
        "action": {"name": "read"},
    }
    bearer = {"Authorization": f"Bearer {GARBAGE_TOKEN}"}
    flood(server, "POST", "/v1/check", json=check, headers=bearer)
    flood(server, "POST", "/access/v1/evaluation", json=evaluation, headers=bearer)
    flood(server, "POST", "/v1/check", json=check)  # no token

    # The admin reads of audit_total sign in: those are the only new events.
    assert audit_total(server) - audited <= 2
    assert audit(server, "auth.token_rejected") == []
    after = samples(server)
    assert refusals(after, "decision_token") == refusals(before, "decision_token") + 3 * FLOOD
    # Refused tokens are not decisions: result="error" counts what its help says.
    error = ("ringfence_decisions_total", (("result", "error"),))
    assert after.get(error, 0) == before.get(error, 0)
    with httpx.Client(base_url=server.url, headers=good, timeout=30) as client:
        assert client.post("/v1/check", json={"subject": "a"}).status_code == 422
        assert client.post("/v1/check", json=check).status_code == 200
    final = samples(server)
    assert final[error] == after.get(error, 0) + 1


@pytest.fixture
def provider(request: pytest.FixtureRequest) -> Iterator[OidcProvider | None]:
    if not getattr(request, "param", False):
        yield None
        return
    with running_provider("ringfence", "provider-secret-" + "x" * 20, CALLBACK) as running:
        yield running


@pytest.fixture
def settings(settings: Settings, provider: OidcProvider | None) -> Settings:
    if provider is None:
        return settings
    return replace(
        settings,
        oidc_issuer=provider.issuer,
        oidc_client_id="ringfence",
        oidc_client_secret=provider.client.client_secret,
    )


@pytest.mark.parametrize("provider", [False, True], ids=["sso-off", "sso-on"], indirect=True)
def test_made_up_sso_codes_are_counted_and_audited_once_per_window(server: LiveServer) -> None:
    before = samples(server)
    flood(server, "POST", "/auth/sso/exchange", json={"code": f"{CALLER_TEXT}-code"})

    events = audit(server, "auth.sso_code_refused")
    assert len(events) == 1, f"{len(events)} events for {FLOOD} refusals"
    assert refusals(samples(server), "sso_code") == refusals(before, "sso_code") + FLOOD
    [event] = events
    assert event["after"]["refusals"] == 1
    assert event["after"]["reasons"] == {"unknown-code": 1}
    assert_no_caller_text([event])

    next_window(server)
    with server.client() as client:
        assert client.post("/auth/sso/exchange", json={"code": "x"}).status_code == 401
    latest = audit(server, "auth.sso_code_refused")[0]
    assert latest["after"]["refusals"] == FLOOD
    assert_no_caller_text([latest])


@pytest.mark.parametrize("provider", [True], indirect=True)
def test_forged_sso_callbacks_are_counted_and_audited_once_per_window(
    server: LiveServer,
) -> None:
    before = samples(server)
    # The provider's "error" parameter is the caller's text, as is a forged state.
    flood(server, "GET", f"/auth/sso/callback?error={CALLER_TEXT}&state={CALLER_TEXT}")
    flood(server, "GET", f"/auth/sso/callback?code={CALLER_TEXT}&state={CALLER_TEXT}")

    events = audit(server, "auth.sso_failed")
    assert len(events) == 1, f"{len(events)} events for {2 * FLOOD} refusals"
    assert refusals(samples(server), "sso_callback") == refusals(before, "sso_callback") + (
        2 * FLOOD
    )
    [event] = events
    assert event["after"]["refusals"] == 1
    assert event["after"]["reasons"] == {"provider-error": 1}
    assert_no_caller_text([event])


# -- /metrics --------------------------------------------------------------------------


def test_metrics_speak_the_prometheus_text_format(server: LiveServer) -> None:
    response = httpx.get(f"{server.url}/metrics", timeout=30)
    assert response.status_code == 200
    content_type = response.headers["Content-Type"]
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert content_type.count("charset") == 1
    lines = response.text.splitlines()
    types = {p[2]: p[3] for p in (line.split(" ") for line in lines) if p[:2] == ["#", "TYPE"]}
    helps = {
        p[2]: " ".join(p[3:]) for p in (line.split(" ") for line in lines) if p[:2] == ["#", "HELP"]
    }
    # Counts since start are counters, named with _total.
    for name in (
        "ringfence_decisions_total",
        "ringfence_incremental_applies_total",
        "ringfence_full_reloads_total",
        "ringfence_login_failures_total",
        "ringfence_min_revision_refusals_total",
        "ringfence_mail_delivery_failures_total",
        "ringfence_auth_refusals_total",
    ):
        assert types.get(name) == "counter", name
    ours = {name: kind for name, kind in types.items() if name.startswith("ringfence_")}
    assert all(name.endswith("_total") for name, kind in ours.items() if kind == "counter")
    for name, kind in ours.items():
        assert kind != "gauge" or "since start" not in helps[name], name
    assert "ringfence_full_reloads_total 0.0" in lines
    # result="error" says what it counts: refused tokens are counted elsewhere.
    assert "ringfence_auth_refusals_total" in helps["ringfence_decisions_total"]


METRICS_TOKEN = "metrics-" + "s" * 32


def test_the_metrics_token_setting_is_read() -> None:
    assert load_settings({}).metrics_token == ""
    assert load_settings({"RINGFENCE_METRICS_TOKEN": METRICS_TOKEN}).metrics_token == (
        METRICS_TOKEN
    )


class TestProtectedMetrics:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return replace(settings, metrics_token=METRICS_TOKEN)

    def test_metrics_need_the_token_when_it_is_set(self, server: LiveServer) -> None:
        before = refusals(samples(server, Authorization=f"Bearer {METRICS_TOKEN}"), "metrics_token")
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Bearer {METRICS_TOKEN}x"},
            {"Authorization": f"Basic {METRICS_TOKEN}"},
        ):
            response = httpx.get(f"{server.url}/metrics", headers=headers, timeout=30)
            assert_problem(response, 401, "unauthorized")
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert "ringfence_" not in response.text
        served = samples(server, Authorization=f"Bearer {METRICS_TOKEN}")
        assert refusals(served, "metrics_token") == before + 4  # counted, per process
        assert audit(server, "auth.token_rejected") == []


def test_metrics_stay_public_without_the_setting(server: LiveServer) -> None:
    assert server.settings.metrics_token == ""
    assert httpx.get(f"{server.url}/metrics", timeout=30).status_code == 200
