"""Two-step sign-in in the console (issue 19): setting up the app with a QR code drawn on
the server (no script, no inline style: the CSP holds), the recovery codes page, and the
code's page after a right password, through real HTTP like a browser."""

from __future__ import annotations

import re
import time

import httpx
import pyotp

from tests.console_support import csrf_of, sign_in
from tests.helpers import PASSWORD, LiveServer, create_workspaces, onboard

JOHN = "john@example.com"


def test_setting_up_the_app_and_signing_in_with_a_code(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    onboard(server, admin, JOHN, "John", [("acme", "admin")])
    john = sign_in(server, JOHN, PASSWORD)
    page = john.get("/console/account/two-step")
    assert page.status_code == 200 and "Two-step sign-in is off" in page.text

    started = john.post("/console/account/two-step/start")
    assert started.status_code == 201, started.text
    secret = re.search(r'<code id="secret">([A-Z2-7]+)</code>', started.text)
    assert secret, started.text
    svg = started.text[started.text.index("<svg") : started.text.index("</svg>")]
    assert (
        '<path transform="scale(5)" stroke="#000"' in svg
        and "style=" not in svg
        and "<script" not in svg
    )
    assert "'unsafe-inline'" not in started.headers["Content-Security-Policy"]
    totp = pyotp.TOTP(secret.group(1))

    wrong = john.post("/console/account/two-step/confirm", {"code": "12345x"})
    assert wrong.status_code == 422 and "<svg" in wrong.text  # the QR again, to retry
    confirmed = john.post("/console/account/two-step/confirm", {"code": totp.now()})
    assert confirmed.status_code == 200, confirmed.text
    codes = re.findall(r"<li><code>([a-z2-9]{5}-[a-z2-9]{5})</code></li>", confirmed.text)
    assert len(codes) == 10 and "shown only now" in confirmed.text
    again = john.get("/console/account/two-step")
    assert "Recovery codes left: 10" in again.text and secret.group(1) not in again.text

    # A right password leads to the code's page; the ticket stays in an HttpOnly cookie.
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        form = browser.get("/console/sign-in")
        answer = browser.post(
            "/console/sign-in",
            data={"email": JOHN, "password": PASSWORD, "csrf_token": csrf_of(form.text)},
        )
        assert answer.status_code == 303 and answer.headers["Location"].endswith(
            "/console/sign-in/code"
        )
        assert "httponly" in answer.headers["set-cookie"].lower()
        assert browser.get("/console/users").status_code == 303  # no session yet
        code_page = browser.get("/console/sign-in/code")
        assert code_page.status_code == 200 and 'autocomplete="one-time-code"' in code_page.text
        token = csrf_of(code_page.text)
        refused = browser.post(
            "/console/sign-in/code", data={"code": "000001", "csrf_token": token}
        )
        assert refused.status_code == 401 and "not valid" in refused.text
        later = totp.at(time.time() + 30)  # the confirming code's step is used
        signed_in = browser.post("/console/sign-in/code", data={"code": later, "csrf_token": token})
        assert signed_in.status_code == 303, signed_in.text
        assert browser.get("/console/users").status_code == 200
        # The ticket is gone with its cookie: the code's page sends back to sign in.
        assert browser.get("/console/sign-in/code").status_code == 303

    # A recovery code signs in too, once; then the app is turned off with another.
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        form = browser.get("/console/sign-in")
        browser.post(
            "/console/sign-in",
            data={"email": JOHN, "password": PASSWORD, "csrf_token": csrf_of(form.text)},
        )
        token = csrf_of(browser.get("/console/sign-in/code").text)
        done = browser.post("/console/sign-in/code", data={"code": codes[0], "csrf_token": token})
        assert done.status_code == 303
    off = john.post("/console/account/two-step/remove", {"code": codes[1]})
    assert off.status_code == 200 and "Two-step sign-in is off" in off.text


def test_remembered_browsers_are_off_by_default(server: LiveServer) -> None:
    """RINGFENCE_MFA_REMEMBER_DAYS is 0 unless set: the code's page offers nothing, a
    ticked box sent anyway remembers nothing, and every sign-in asks for the second step
    (test_console_remembered_devices.py has the setting on)."""
    assert server.settings.mfa_remember_days == 0
    admin = server.admin()
    create_workspaces(admin, "acme")
    onboard(server, admin, JOHN, "John", [("acme", "viewer")])
    with server.login(JOHN, PASSWORD) as api:
        secret = api.post("/auth/mfa/totp").json()["secret"]
        confirmed = api.post("/auth/mfa/totp/confirm", json={"code": pyotp.TOTP(secret).now()})
        codes = confirmed.json()["recovery_codes"]
    for code in codes[:2]:
        with httpx.Client(base_url=server.url, timeout=30) as browser:
            form = browser.get("/console/sign-in")
            step = browser.post(
                "/console/sign-in",
                data={"email": JOHN, "password": PASSWORD, "csrf_token": csrf_of(form.text)},
            )
            assert step.headers["Location"].endswith("/console/sign-in/code")
            page = browser.get("/console/sign-in/code")
            assert "Remember this browser" not in page.text and 'name="remember"' not in page.text
            done = browser.post(
                "/console/sign-in/code",
                data={"code": code, "remember": "1", "csrf_token": csrf_of(page.text)},
            )
            assert done.status_code == 303
            assert "ringfence_console_remember" not in str(done.headers.get_list("set-cookie"))
            assert "Remembered browsers" not in browser.get("/console/account/two-step").text
