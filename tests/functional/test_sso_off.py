"""Without an OpenID Connect issuer configured, single sign-on is off: its routes answer
404 problems and the invitation page offers no SSO button."""

from __future__ import annotations

from tests.helpers import (
    LiveServer,
    accept_token,
    assert_problem,
    create_workspaces,
    invite,
    outbox_messages,
)


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
