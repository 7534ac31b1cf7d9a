"""Passkeys end to end in a real browser (the system's Chromium) with Chromium's virtual
authenticator, through the DevTools WebAuthn domain: the super admin adds a passkey on
the Passkeys page (its recovery codes shown once), signs out, signs in with the passkey
alone, then with the password and the passkey as the second step, renews its recovery
codes and removes it, each confirmed with the passkey. The gateway's verifier is the real
one, on the public URL's origin (``localhost``: an IP address cannot be a WebAuthn
relying party). axe-core finds no violation in any new state,
at desktop and phone widths, and the CSP reports nothing."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Settings
from tests.browser.a11y import assert_accessible
from tests.browser.test_console_story import Watch, shot, sign_in
from tests.helpers import ADMIN_EMAIL, LiveServer

pytestmark = pytest.mark.browser


@pytest.fixture
def settings(settings: Settings, port: int) -> Settings:
    return replace(settings, public_url=f"http://localhost:{port}")


def virtual_authenticator(context: Any, page: Any) -> tuple[Any, str]:
    """A platform authenticator that keeps passkeys and verifies the person (as a
    laptop's fingerprint reader would), for this page: the DevTools session and its id."""
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
            }
        },
    )
    return cdp, added["authenticatorId"]


def test_passkeys_in_the_browser(
    server: LiveServer, chromium: Any, artifacts: Path, axe: str
) -> None:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    watch = Watch(page)
    cdp, authenticator = virtual_authenticator(context, page)
    sign_in(page, server.url, ADMIN_EMAIL, server.admin_password)

    page.get_by_role("link", name=re.compile("your account")).click()
    page.get_by_role("link", name="Passkeys and security keys").click()
    page.get_by_text("None yet.").wait_for()
    assert_accessible(page, axe, "passkeys, none yet")
    page.get_by_label("Name").fill("This laptop")
    page.get_by_role("button", name="Add a passkey").click()
    page.get_by_role("heading", name="Your recovery codes").wait_for()
    assert page.locator(".codes li").count() == 10
    assert page.get_by_role("cell", name="This laptop", exact=True).is_visible()
    [kept] = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]
    assert kept["isResidentCredential"] and kept["rpId"] == "localhost"
    assert_accessible(page, axe, "passkey added, recovery codes")
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert_accessible(page, axe, "passkey added on a phone")
    shot(page, artifacts, "passkeys-1-added-phone")
    page.set_viewport_size({"width": 1280, "height": 900})

    # Signed out: the passkey alone signs in (the authenticator offers the one it keeps).
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("button", name="Sign in with a passkey").wait_for()
    assert_accessible(page, axe, "sign-in with the passkey button")
    page.set_viewport_size({"width": 390, "height": 844})
    assert_accessible(page, axe, "sign-in with the passkey button on a phone")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.get_by_role("button", name="Sign in with a passkey").click()
    page.wait_for_url(re.compile(r"/console/users"))

    # With the password, the passkey is the second step.
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("Email").fill(ADMIN_EMAIL)
    page.get_by_label("Password").fill(server.admin_password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(re.compile(r"/console/sign-in/code"))
    page.get_by_role("button", name="Use your passkey").wait_for()
    assert_accessible(page, axe, "the second step with a passkey")
    page.set_viewport_size({"width": 390, "height": 844})
    assert_accessible(page, axe, "the second step with a passkey on a phone")
    shot(page, artifacts, "passkeys-2-second-step-phone")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.get_by_role("button", name="Use your passkey").click()
    page.wait_for_url(re.compile(r"/console/users"))
    [used] = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]
    assert used["signCount"] >= 2

    # New recovery codes for a person whose factor is a passkey alone: it confirms.
    page.goto(f"{server.url}/console/account/two-step")
    assert_accessible(page, axe, "two-step sign-in with passkeys only")
    page.get_by_role("button", name="Confirm with a passkey and make new codes").click()
    page.get_by_role("heading", name="Your recovery codes").wait_for()
    assert page.locator(".codes li").count() == 10

    # Removing it asks for it (or a code) first.
    page.goto(f"{server.url}/console/account/passkeys")
    assert "never" not in page.get_by_role("row", name=re.compile("This laptop")).inner_text()
    page.get_by_role("link", name="Remove This laptop").click()
    page.get_by_role("button", name="Confirm with a passkey and remove").wait_for()
    assert_accessible(page, axe, "removing a passkey: confirm it is you")
    page.get_by_role("button", name="Confirm with a passkey and remove").click()
    page.get_by_text("None yet.").wait_for()
    assert_accessible(page, axe, "passkey removed")

    assert watch.problems == [], watch.problems
    context.close()
