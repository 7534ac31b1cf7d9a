"""Single sign-on's page in the console (/console/settings/sso): what the installation's
RINGFENCE_OIDC_* settings configure (never the client secret), the redirect URI to
register at the provider, and "Check the provider" against the real OpenID Connect
provider on loopback (tests/oidc_provider.py) and against providers that fail in each
way, saving nothing; with single sign-on off, how to turn it on. Only for whoever may
see Settings (settings:write in every workspace)."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import replace

import pytest

from gateway.config import Settings
from tests.console_support import Console, sign_in
from tests.functional.test_isolation import database_state
from tests.functional.test_sso import CALLBACK
from tests.helpers import ADMIN_EMAIL, PASSWORD, LiveServer, create_workspaces, invite_and_accept
from tests.oidc_provider import OidcProvider, running_provider
from tests.peer_support import refused_port, tcp_peer

SECRET = "provider-secret-" + "x" * 20
NOT_JSON = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 15\r\n"
    b"Connection: close\r\n\r\n<html>hi</html>"
)
TIMEOUT = 1.5


@pytest.fixture
def provider() -> Iterator[OidcProvider]:
    with running_provider("ringfence", SECRET, CALLBACK) as running:
        yield running


@pytest.fixture
def issuer(request: pytest.FixtureRequest, provider: OidcProvider) -> Iterator[str]:
    """RINGFENCE_OIDC_ISSUER for the test (parametrize indirectly): the provider, the
    provider misconfigured in some way, something else, or nothing (off)."""
    kind = str(getattr(request, "param", "provider"))
    if kind == "refused":
        with refused_port() as port:
            yield f"http://127.0.0.1:{port}"
    elif kind in ("silent", "not-json"):
        with tcp_peer(answer=NOT_JSON if kind == "not-json" else b"") as peer:
            yield f"http://127.0.0.1:{peer.port}"
    else:
        yield {
            "provider": provider.issuer,
            "not-found": provider.issuer + "/tenant-1",
            "another-issuer": provider.issuer.replace("127.0.0.1", "localhost"),
            "unresolvable": "http://idp.invalid",
            "off": "",
        }[kind]


@pytest.fixture
def settings(settings: Settings, issuer: str) -> Settings:
    return replace(
        settings,
        oidc_issuer=issuer,
        oidc_client_id="ringfence" if issuer else "",
        oidc_client_secret=SECRET if issuer else "",
        oidc_timeout=TIMEOUT,
    )


def admin_console(server: LiveServer) -> Console:
    return sign_in(server, ADMIN_EMAIL, server.admin_password)


def words(text: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", text)))


def test_the_page_shows_the_configuration_never_the_secret(
    server: LiveServer, provider: OidcProvider
) -> None:
    console = admin_console(server)
    settings_page = console.get("/console/settings")
    assert 'href="/console/settings/sso"' in settings_page.text

    page = console.get("/console/settings/sso")

    assert page.status_code == 200, page.text
    text = words(page.text)
    assert "Single sign-on is on" in text
    assert f'<code id="sso-issuer">{provider.issuer}</code>' in page.text
    assert '<code id="sso-client-id">ringfence</code>' in page.text
    assert f'<code id="sso-redirect-uri">{CALLBACK}</code>' in page.text
    assert "Client secret set (never shown)" in text
    assert f"{provider.issuer}/.well-known/openid-configuration" in text
    assert "1.5 seconds per request to the provider" in text
    assert SECRET not in page.text and "provider-secret" not in page.text
    assert 'aria-current="page"' in page.text and ">Settings</a>" in page.text
    console.close()


def test_checking_the_provider_says_it_answers_and_changes_nothing(
    server: LiveServer, provider: OidcProvider
) -> None:
    console = admin_console(server)
    console.get("/console/settings/sso")
    admin = server.admin()
    events = len(admin.get("/audit", params={"page_size": 100}).json())
    before = database_state(server)

    checked = console.post("/console/settings/sso/check", htmx=True)

    assert checked.status_code == 200, checked.text
    assert 'id="sso-check-result"' in checked.text and "<h1>" not in checked.text
    found = re.search(
        r'<p id="sso-check-text" class="message ok" role="status">([^<]*)<', checked.text
    )
    assert found, checked.text
    assert re.fullmatch(
        rf"The provider answers: it answers in \d+ ms; sign-in goes to {provider.issuer}/authorize",
        html.unescape(found.group(1)),
    ), found.group(1)
    # Without script: the whole page with the outcome.
    whole = console.post("/console/settings/sso/check")
    assert whole.status_code == 200
    assert "<h1>Single sign-on</h1>" in whole.text and "The provider answers: " in whole.text
    assert SECRET not in checked.text + whole.text
    assert database_state(server) == before
    assert len(admin.get("/audit", params={"page_size": 100}).json()) == events
    # The provider's sign-in is not disturbed by the check: its discovery still serves it.
    assert server.client().get("/auth/sso/login").status_code == 302
    console.close()


@pytest.mark.parametrize(
    ("issuer", "said"),
    [
        ("not-found", "it answered HTTP 404 (Not Found) at http://127.0.0.1:"),
        ("another-issuer", "its discovery document names another issuer (http://127.0.0.1:"),
        ("refused", "it refused the connection (nothing listens on that port)"),
        ("unresolvable", "its name does not resolve (check the host name)"),
        ("silent", "it did not answer within 1.5 seconds"),
        ("not-json", "its answer is not a discovery document (not JSON)"),
    ],
    indirect=["issuer"],
)
def test_a_provider_that_does_not_answer_is_said_in_words(
    server: LiveServer, issuer: str, said: str
) -> None:
    console = admin_console(server)
    console.get("/console/settings/sso")

    checked = console.post("/console/settings/sso/check", htmx=True)

    assert checked.status_code == 200, checked.text
    found = re.search(
        r'<p id="sso-check-text" class="message error" role="alert">([^<]*)<', checked.text
    )
    assert found, checked.text
    detail = html.unescape(found.group(1))
    assert detail.startswith("The provider does not answer as sign-in needs: " + said), detail
    assert "Errno" not in detail and "HTTPConnectionPool" not in detail
    console.close()


@pytest.mark.parametrize("issuer", ["off"], indirect=True)
def test_with_sso_off_the_page_says_how_to_turn_it_on(server: LiveServer) -> None:
    console = admin_console(server)

    page = console.get("/console/settings/sso")

    assert page.status_code == 200, page.text
    text = words(page.text)
    assert "Single sign-on is off" in text
    for name in (
        "RINGFENCE_OIDC_ISSUER",
        "RINGFENCE_OIDC_CLIENT_ID",
        "RINGFENCE_OIDC_CLIENT_SECRET",
        "RINGFENCE_OIDC_RETURN_URL",
        "RINGFENCE_OIDC_TIMEOUT",
    ):
        assert f"<code>{name}</code>" in page.text, name
    assert f'<code id="sso-redirect-uri">{CALLBACK}</code>' in page.text
    assert "docs/configuration.md" in text and 'href="/docs"' in page.text
    assert "Check the provider</button>" not in page.text
    # Nothing to check: the same refusal as the sign-in routes give.
    checked = console.post("/console/settings/sso/check")
    assert checked.status_code == 404
    assert "no single sign-on provider configured" in checked.text
    console.close()


def test_a_workspace_admin_gets_what_the_other_settings_pages_give(
    server: LiveServer, provider: OidcProvider
) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    invite_and_accept(server, root, "adam@example.com", "Adam", [("acme", "admin")])
    adam = sign_in(server, "adam@example.com", PASSWORD)
    refused = adam.get("/console/settings").status_code
    assert refused in (403, 404)

    page = adam.get("/console/settings/sso")
    checked = adam.post("/console/settings/sso/check")

    assert page.status_code == refused and checked.status_code == refused
    for response in (page, checked):
        assert provider.issuer not in response.text and SECRET not in response.text
        assert "sso-redirect-uri" not in response.text and "answers" not in response.text
    assert ">Settings</a>" not in adam.get("/console/users").text
    adam.close()
