"""Forgot your password? in the console: a link on the sign-in page to a form that asks
for a reset email through the same service as ``POST /auth/password-reset``, with the
same answer for every address, the same throttle, and the emailed link that works."""

from __future__ import annotations

import re

import httpx

from tests.console_support import csrf_of
from tests.functional.test_passwords import NEW_PASSWORD, reset_token, wait_for_mail
from tests.helpers import ADMIN_EMAIL, LiveServer, create_workspaces, onboard, outbox_messages


def ask(browser: httpx.Client, email: str) -> httpx.Response:
    form = browser.get("/console/forgot-password")
    assert form.status_code == 200, form.text
    return browser.post(
        "/console/forgot-password", data={"email": email, "csrf_token": csrf_of(form.text)}
    )


def answer_of(page: str) -> str:
    """The page's message, without the form's CSRF token."""
    [message] = re.findall(r'<p class="message[^"]*" role="[a-z]+">([^<]*)</p>', page)
    return message


def test_a_person_who_forgot_their_password_gets_a_link_from_the_sign_in_page(
    server: LiveServer,
) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    gone = onboard(server, root, "gone@example.com", "Gone", [("acme", "viewer")])
    assert root.post(f"/users/{gone}/deactivate").status_code == 200
    sent_before = len(outbox_messages(server.settings))
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        sign_in = browser.get("/console/sign-in")
        assert 'href="/console/forgot-password">Forgot your password?</a>' in sign_in.text
        answers = {}
        for email in (ADMIN_EMAIL, "nobody@example.com", "gone@example.com"):
            page = ask(browser, email)
            assert page.status_code == 200, page.text
            answers[email] = answer_of(page.text)
    # The same words whatever the address (no one learns who has an account) ...
    assert len(set(answers.values())) == 1, answers
    assert "If an active account uses this address" in answers[ADMIN_EMAIL]
    # ... and only the active account got the email, whose link sets the password.
    messages = wait_for_mail(server, sent_before + 1)[sent_before:]
    assert [m["To"].addresses[0].addr_spec for m in messages] == [ADMIN_EMAIL]
    token = reset_token(messages[0])
    with server.client() as browser:
        done = browser.post(f"/reset/{token}", data={"password": NEW_PASSWORD})
    assert done.status_code == 200 and "Sign in with the new password" in done.text
    login = {"email": ADMIN_EMAIL, "password": NEW_PASSWORD}
    assert httpx.post(f"{server.url}/auth/login", json=login, timeout=30).status_code == 200


def test_the_form_checks_the_address_the_throttle_and_its_origin(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        empty = ask(browser, "")
        assert empty.status_code == 422
        assert 'id="email-error" class="field-error">Enter the email address' in empty.text
        for _ in range(3):  # the API's limit per address typed
            assert ask(browser, "someone@example.com").status_code == 200
        throttled = ask(browser, "someone@example.com")
        assert throttled.status_code == 429 and "try again in" in answer_of(throttled.text)
        # A form that did not come from this browser's page is refused.
        forged = browser.post("/console/forgot-password", data={"email": ADMIN_EMAIL})
        assert forged.status_code == 403, forged.text
    assert len(outbox_messages(server.settings)) == 0
