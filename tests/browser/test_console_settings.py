"""Settings in a real browser (the system's Chromium): email settings tried as typed,
before they are saved, against a second real SMTP server on loopback (the saved settings
keep pointing at the first); and the single sign-on page with "Check the provider"
against the real OpenID Connect provider on loopback, and with single sign-on off. At
desktop and phone widths, axe-core finding no violation in any state."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Settings
from tests.browser.a11y import assert_accessible
from tests.browser.test_console_story import shot, super_admin_console
from tests.dns_server import Zone, running_dns
from tests.helpers import LiveServer
from tests.oidc_provider import OidcProvider, running_provider
from tests.peer_support import refused_port
from tests.smtp_support import Mailbox, running_smtp

pytestmark = pytest.mark.browser

NO_SMTP_SERVER = "could not connect, or the server did not answer as an SMTP server"


@pytest.fixture
def provider(port: int) -> Iterator[OidcProvider]:
    callback = f"http://127.0.0.1:{port}/auth/sso/callback"
    with running_provider("ringfence", "provider-secret-" + "x" * 20, callback) as running:
        yield running


@pytest.fixture
def sso_on(request: pytest.FixtureRequest) -> bool:
    return bool(getattr(request, "param", True))


@pytest.fixture
def dns() -> Iterator[Zone]:
    """The DNS server workspaces' domains are verified against (tests/dns_server.py)."""
    with running_dns() as zone:
        yield zone


@pytest.fixture
def settings(settings: Settings, provider: OidcProvider, sso_on: bool, dns: Zone) -> Settings:
    # Workspaces' own connections: the loopback provider, and the loopback DNS server.
    settings = replace(settings, sso_allow_private_issuers=True, dns_nameservers=dns.address)
    if not sso_on:
        return replace(settings, smtp_test_connect_seconds=0.5)
    return replace(
        settings,
        oidc_issuer=provider.issuer,
        oidc_client_id="ringfence",
        oidc_client_secret=provider.client.client_secret,
        smtp_test_connect_seconds=0.5,
    )


def test_email_settings_tried_before_saving_and_the_sso_page(
    server: LiveServer,
    chromium: Any,
    artifacts: Path,
    axe: str,
    mailbox: tuple[Mailbox, int],
    provider: OidcProvider,
) -> None:
    saved_box, saved_port = mailbox
    context, page, watch = super_admin_console(chromium, server)
    page.get_by_role("link", name="Settings", exact=True).click()
    page.get_by_role("heading", name="Settings", exact=True).wait_for()
    assert_accessible(page, axe, "settings")

    # -- another SMTP server, typed into the form and tried, not saved ---------------------
    other = Mailbox(data_reply="250 2.0.0 Queued as TRIED1")
    with running_smtp(other) as other_port:
        page.get_by_label("SMTP port").fill(str(other_port))
        page.get_by_label("Sender (From)").fill("Tried <tried@example.com>")
        page.get_by_label("Send the test to").fill("ops@example.com")
        page.get_by_role("button", name="Send a test email with these settings").click()
        result = page.locator("#try-result-text")
        result.wait_for()
        assert result.inner_text() == (
            "Sent with the settings in the form (not saved): 250 2.0.0 Queued as TRIED1"
        )
        [(recipients, message)] = other.deliveries()
        assert recipients == ["ops@example.com"] and "tried@example.com" in message["From"]
        # The form is as typed; the page says nothing was saved, and nothing was.
        assert page.get_by_label("SMTP port").input_value() == str(other_port)
        assert_accessible(page, axe, "settings, a tried setup sent")
        shot(page, artifacts, "settings-1-tried")

    with refused_port() as closed_port:
        page.get_by_label("SMTP port").fill(str(closed_port))
        page.get_by_role("button", name="Send a test email with these settings").click()
        page.locator("#try-result-text").filter(has_text="Not sent").wait_for()
    assert page.locator("#try-result-text").inner_text() == (
        f"Not sent with the settings in the form (not saved): {NO_SMTP_SERVER}"
    )
    assert_accessible(page, axe, "settings, a tried setup failed")
    page.get_by_label("SMTP port").fill("0")
    page.get_by_role("button", name="Send a test email with these settings").click()
    page.locator("#try-result [role=alert]").filter(has_text="nothing saved").wait_for()
    assert "SMTP port: " in page.locator("#try-result").inner_text()
    assert_accessible(page, axe, "settings, a tried setup with a mistake")
    with server.admin() as admin:
        email = admin.get("/settings/email").json()
    assert (email["smtp_port"], email["mail_from"]) == (
        saved_port,
        "Ringfence <ringfence@example.com>",
    )
    assert saved_box.deliveries() == []

    # -- single sign-on --------------------------------------------------------------------
    page.get_by_role("link", name="Single sign-on").click()
    page.get_by_role("heading", name="Single sign-on", exact=True).wait_for()
    assert page.locator("#sso-issuer").inner_text() == provider.issuer
    assert page.locator("#sso-redirect-uri").inner_text() == f"{server.url}/auth/sso/callback"
    assert provider.client.client_secret not in page.content()
    assert_accessible(page, axe, "single sign-on, on")
    page.get_by_role("button", name="Check the provider").click()
    checked = page.locator("#sso-check-text")
    checked.wait_for()
    assert checked.inner_text().startswith("The provider answers: it answers in ")
    assert_accessible(page, axe, "single sign-on, the provider checked")
    shot(page, artifacts, "settings-2-sso")
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert_accessible(page, axe, "single sign-on on a phone")

    # The one refusal: the port no save would take.
    assert watch.problems == [f"422 {server.url}/console/settings/email/try"], watch.problems
    context.close()


@pytest.mark.parametrize("sso_on", [False], indirect=True)
def test_the_sso_page_with_single_sign_on_off(
    server: LiveServer, chromium: Any, artifacts: Path, axe: str
) -> None:
    context, page, watch = super_admin_console(chromium, server)
    page.goto(f"{server.url}/console/settings/sso")
    page.get_by_role("heading", name="How to turn it on").wait_for()
    assert "Single sign-on is off" in page.locator("#sso-state").inner_text()
    assert page.get_by_role("button", name="Check the provider").count() == 0
    assert_accessible(page, axe, "single sign-on, off")
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert_accessible(page, axe, "single sign-on off, on a phone")
    shot(page, artifacts, "settings-3-sso-off-phone")
    assert watch.problems == [], watch.problems
    context.close()


@pytest.mark.parametrize("sso_on", [False], indirect=True)
def test_a_workspaces_own_single_sign_on_and_its_domains(
    server: LiveServer, chromium: Any, artifacts: Path, axe: str, dns: Zone, port: int
) -> None:
    with server.admin() as root:
        assert root.post("/workspaces", json={"slug": "acme", "name": "Acme"}).status_code == 201
    secret = "provider-secret-" + "z" * 20
    callback = f"http://127.0.0.1:{port}/auth/sso/connections/1/callback"
    with running_provider("ringfence-acme", secret, callback) as idp:
        context, page, watch = super_admin_console(chromium, server)
        page.get_by_role("link", name="SSO", exact=True).click()
        page.get_by_role("heading", name="Connection of acme").wait_for()
        assert_accessible(page, axe, "workspace single sign-on, none yet")
        page.get_by_label("Name").fill("Acme IdP")
        page.get_by_label("Issuer URL").fill(idp.issuer)
        page.get_by_label("Client ID").fill("ringfence-acme")
        page.get_by_label("Client secret").fill(secret)
        page.get_by_role("button", name="Set up").click()
        page.locator("#sso-redirect-uri").wait_for()
        assert page.locator("#sso-redirect-uri").inner_text() == callback
        assert secret not in page.content()
        page.get_by_role("button", name="Check the provider").click()
        page.locator("#sso-check-result").wait_for()
        assert page.locator("#sso-check-result").inner_text().startswith("The provider answers")
        assert_accessible(page, axe, "workspace single sign-on, set up and checked")

        page.get_by_label("Email domain").fill("acme.test")
        page.get_by_role("button", name="Claim").click()
        page.get_by_role("button", name="Verify acme.test").wait_for()
        with server.admin() as root:
            [claim] = root.get("/sso-domains").json()
        dns.publish(claim["txt_name"], claim["txt_value"])
        page.get_by_role("button", name="Verify acme.test").click()
        page.get_by_role("button", name="Check again acme.test").wait_for()
        assert "acme.test is verified." in page.locator("[role=status]").first.inner_text()
        assert_accessible(page, axe, "workspace single sign-on, a domain verified")
        shot(page, artifacts, "workspace-sso")
        page.get_by_label("Required for the verified domains").check()
        page.get_by_role("button", name="Save").click()
        page.locator("#sso-status").filter(has_text="required").wait_for()
        page.set_viewport_size({"width": 390, "height": 844})
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        assert_accessible(page, axe, "workspace single sign-on on a phone")
        assert watch.problems == [], watch.problems
        context.close()

        # The sign-in page, for an address of the domain: refused, with the way to go.
        visitor = chromium.new_context(viewport={"width": 1280, "height": 900})
        sign_in = visitor.new_page()
        sign_in.goto(f"{server.url}/console/sign-in")
        sign_in.get_by_label("Email").fill("someone@acme.test")
        sign_in.get_by_label("Password").fill("any password at all")
        sign_in.get_by_role("button", name="Sign in", exact=True).click()
        sign_in.get_by_role("link", name="Continue with single sign-on").wait_for()
        assert "sign in with their organisation's single sign-on" in sign_in.content()
        assert_accessible(sign_in, axe, "sign-in, single sign-on required")
        shot(sign_in, artifacts, "sign-in-sso-required")
        visitor.close()
