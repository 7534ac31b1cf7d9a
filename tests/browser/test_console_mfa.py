"""Two-step sign-in in a real browser (the system's Chromium): the super admin sets up an
authenticator app from the QR page by keyboard, sees the recovery codes once, signs out and
back in through the code's page, ticking "Remember this browser" (remembered browsers on
here, RINGFENCE_MFA_REMEMBER_DAYS), so the next sign-in asks only the password; then
forgets the browser on the two-step page. axe-core finds no violation in any state, at
desktop and phone widths, and the CSP reports nothing."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyotp
import pytest

from gateway.config import Settings
from tests.browser.a11y import assert_accessible
from tests.browser.test_console_story import shot, super_admin_console
from tests.helpers import ADMIN_EMAIL, LiveServer

pytestmark = pytest.mark.browser


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, mfa_remember_days=30)


def sign_in_again(page: Any, server: LiveServer) -> None:
    page.get_by_role("button", name="Sign out").click()
    page.goto(f"{server.url}/console/users")
    page.get_by_label("Email").fill(ADMIN_EMAIL)
    page.get_by_label("Password").fill(server.admin_password)
    page.get_by_role("button", name="Sign in", exact=True).click()


def test_two_step_sign_in_in_the_browser(
    server: LiveServer, chromium: Any, artifacts: Path, axe: str
) -> None:
    context, page, watch = super_admin_console(chromium, server)

    page.get_by_role("link", name="Two-step sign-in").click()
    page.get_by_text("Two-step sign-in is off").wait_for()
    assert_accessible(page, axe, "two-step sign-in off")
    page.get_by_role("button", name="Set up an authenticator app").click()
    page.get_by_role("img", name="QR code of your authenticator app's secret").wait_for()
    assert_accessible(page, axe, "two-step QR code")
    shot(page, artifacts, "two-step-1-qr")
    totp = pyotp.TOTP(page.locator("#secret").inner_text())

    page.get_by_label("Code from the app").fill("000000" if totp.now() != "000000" else "111111")
    page.keyboard.press("Enter")
    page.get_by_role("alert").filter(has_text="not valid").wait_for()
    assert_accessible(page, axe, "two-step wrong code")
    page.get_by_label("Code from the app").fill(totp.now())
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Your recovery codes").wait_for()
    assert page.locator(".codes li").count() == 10
    assert_accessible(page, axe, "recovery codes")
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert_accessible(page, axe, "recovery codes on a phone")
    shot(page, artifacts, "two-step-2-codes-phone")
    page.set_viewport_size({"width": 1280, "height": 900})

    sign_in_again(page, server)
    page.wait_for_url(re.compile(r"/console/sign-in/code"))
    assert_accessible(page, axe, "the code's page")
    page.get_by_label("Remember this browser for 30 days").check()
    shot(page, artifacts, "two-step-code-remember")
    page.get_by_label("Code from your authenticator app").fill(totp.at(time.time() + 30))
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/console/users"))

    # Remembered: the password alone signs in from this browser.
    sign_in_again(page, server)
    page.wait_for_url(re.compile(r"/console/users"))
    page.get_by_role("link", name="Two-step sign-in").click()
    page.get_by_role("heading", name="Remembered browsers").wait_for()
    assert page.get_by_text("Chrome on Linux (this browser)").is_visible()
    assert_accessible(page, axe, "remembered browsers")
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert_accessible(page, axe, "remembered browsers on a phone")
    shot(page, artifacts, "two-step-3-remembered-phone")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.get_by_role("button", name=re.compile(r"^Forget Chrome on Linux")).click()
    page.get_by_role("status").filter(has_text="Browser forgotten").wait_for()
    assert page.get_by_text("No browser is remembered").is_visible()
    assert_accessible(page, axe, "a browser forgotten")
    sign_in_again(page, server)
    page.wait_for_url(re.compile(r"/console/sign-in/code"))

    # The one refusal the story asks for (the mistyped code, a 422) is all.
    assert [p.split(" ")[0] for p in watch.problems] == ["422"], watch.problems
    context.close()
