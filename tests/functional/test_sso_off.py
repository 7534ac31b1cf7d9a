"""Without an OpenID Connect issuer configured, single sign-on is off: its routes answer
404 problems and the invitation page offers no SSO button. With an issuer that cannot be
reached, sign-on answers 502 and nothing else is affected."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest

from gateway.config import Settings
from tests.helpers import (
    LiveServer,
    accept_token,
    assert_problem,
    create_workspaces,
    invite,
    outbox_messages,
)


@pytest.fixture
def issuer(request: pytest.FixtureRequest) -> str:
    param = str(getattr(request, "param", ""))
    return f"http://127.0.0.1:{closed_port()}" if param == "closed-port" else param


@pytest.fixture
def settings(settings: Settings, issuer: str) -> Settings:
    return replace(settings, oidc_issuer=issuer, oidc_client_id="ringfence", oidc_timeout=2.0)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again when the block ends


def test_sso_routes_answer_not_configured(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    invite(admin, "pat@example.com", [("acme", "viewer")], "Pat")
    token = accept_token(outbox_messages(server.settings)[-1])
    with server.client() as browser:
        for path in (
            "/auth/sso/login",
            "/auth/sso/callback?code=x&state=y",
            f"/invite/{token}/sso",
        ):
            assert_problem(browser.get(path), 404, "sso-not-configured")
        page = browser.get(f"/invite/{token}")
        assert page.status_code == 200 and "single sign-on" not in page.text
        assert_problem(browser.post("/auth/sso/exchange", json={"code": "x"}), 401, "unauthorized")


# The port is found when the test runs, not when it is collected (the id stays the same
# for every pytest-xdist worker).
@pytest.mark.parametrize("issuer", ["closed-port"], indirect=True)
def test_an_unreachable_provider_is_a_502_problem(server: LiveServer) -> None:
    with server.client() as browser:
        response = browser.get("/auth/sso/login")
        assert_problem(response, 502, "identity-provider-unavailable", "try again later")
        ok = browser.post(
            "/auth/login", json={"email": "admin@example.com", "password": server.admin_password}
        )
        assert ok.status_code == 200  # password sign-in does not depend on the provider
