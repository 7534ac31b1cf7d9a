"""Remembered browsers of two-step sign-in (issue 19; RINGFENCE_MFA_REMEMBER_DAYS, here
30): after the second step with "Remember this browser" ticked, that browser's next
password step skips the code; the password is always asked first, another person's or a
tampered cookie does nothing, and it stops at once when it expires, is forgotten (one,
or all), the password changes or is reset, an admin resets the factors, the factors it
was remembered with are gone, the person is deactivated, or the setting goes to 0. Over
real HTTP, as a browser (cookies, the page's CSRF token)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from gateway.app import create_app
from gateway.config import Settings
from gateway.db.models import AuditEvent, RememberedDevice, utcnow
from tests.console_support import csrf_of
from tests.functional.test_mfa import code_at, database
from tests.functional.test_passkeys import add_passkey, authenticator, send
from tests.helpers import (
    PASSWORD,
    LiveServer,
    close_app,
    create_workspaces,
    onboard,
    serving,
    user_id_of,
)

JOHN = "john@example.com"
MARY = "mary@example.com"
DAYS = 30
COOKIE = "ringfence_console_remember"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
NEW_PASSWORD = "correct horse battery staple 42"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, mfa_remember_days=DAYS)


# -- helpers ------------------------------------------------------------------------------


def browser(server: LiveServer, user_agent: str = FIREFOX) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30, headers={"User-Agent": user_agent})


def password_step(
    client: httpx.Client, email: str = JOHN, password: str = PASSWORD, next_page: str = ""
) -> httpx.Response:
    form = client.get("/console/sign-in")
    data = {"email": email, "password": password, "csrf_token": csrf_of(form.text)}
    return client.post("/console/sign-in", data=data | ({"next": next_page} if next_page else {}))


def asks_for_the_code(answer: httpx.Response) -> bool:
    return answer.status_code == 303 and answer.headers["Location"].startswith(
        "/console/sign-in/code"
    )


def signed_in(answer: httpx.Response, to: str = "/console/") -> bool:
    return answer.status_code == 303 and answer.headers["Location"] == to


def second_step(client: httpx.Client, code: str, remember: bool = True) -> httpx.Response:
    page = client.get("/console/sign-in/code")
    assert page.status_code == 200, page.text
    data = {"code": code, "csrf_token": csrf_of(page.text)} | (
        {"remember": "1"} if remember else {}
    )
    return client.post("/console/sign-in/code", data=data)


def sign_out(client: httpx.Client) -> None:
    page = client.get("/console/account/two-step")
    assert page.status_code == 200, page.text
    out = client.post("/console/sign-out", data={"csrf_token": csrf_of(page.text)})
    assert out.status_code == 303
    assert client.get("/console/account/two-step").status_code == 303  # signed out


def enrol_app(api: httpx.Client) -> tuple[str, list[str]]:
    """Set up the caller's authenticator app (the API): its secret and recovery codes."""
    started = api.post("/auth/mfa/totp")
    assert started.status_code == 201, started.text
    secret = started.json()["secret"]
    confirmed = api.post("/auth/mfa/totp/confirm", json={"code": code_at(secret, 0)})
    assert confirmed.status_code == 200, confirmed.text
    return secret, list(confirmed.json()["recovery_codes"])


def person(server: LiveServer, email: str, name: str) -> tuple[int, httpx.Client, list[str]]:
    """A person of acme with an authenticator app: their id, an API session made before
    the app was set up (it stays valid), and their recovery codes."""
    root = server.admin()
    user_id = onboard(server, root, email, name, [("acme", "viewer")])
    api = server.login(email, PASSWORD)
    _, codes = enrol_app(api)
    return user_id, api, codes


def remembered(server: LiveServer, code: str, email: str = JOHN) -> httpx.Client:
    """A browser that signed in with ``code`` as the second step, remembered, then
    signed out."""
    client = browser(server)
    assert asks_for_the_code(password_step(client, email))
    done = second_step(client, code)
    assert signed_in(done), done.text
    sign_out(client)
    return client


def cookie(answer: httpx.Response) -> str:
    """The remember cookie an answer sets ('' for none)."""
    return next(
        (c for c in answer.headers.get_list("set-cookie") if c.startswith(f"{COOKIE}=")), ""
    )


def rows(server: LiveServer) -> list[RememberedDevice]:
    with database(server) as session:
        return list(session.scalars(select(RememberedDevice).order_by(RememberedDevice.id)))


def audited(server: LiveServer, action: str) -> list[AuditEvent]:
    with database(server) as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )


def refusals(server: LiveServer) -> list[str]:
    return [e.after["reason"] for e in audited(server, "auth.mfa_remember_refused")]


# -- the tests ------------------------------------------------------------------------------


def test_a_remembered_browser_skips_the_code_after_the_password(server: LiveServer) -> None:
    create_workspaces(server.admin(), "acme")
    john_id, _, codes = person(server, JOHN, "John")
    client = browser(server)
    assert asks_for_the_code(password_step(client))
    page = client.get("/console/sign-in/code")
    assert f"Remember this browser for {DAYS} days" in page.text
    assert "Signing out does not forget it" in page.text

    done = second_step(client, codes[0])
    assert signed_in(done), done.text
    set_cookie = cookie(done)
    for flag in ("HttpOnly", "SameSite=Lax", "Path=/", f"Max-Age={DAYS * 86400}"):
        assert flag in set_cookie, set_cookie
    assert "Secure" not in set_cookie  # plain http: a Secure cookie would never come back
    token = client.cookies[COOKIE]
    [row] = rows(server)
    # Only the token's SHA-256 is kept, with the person and a label from the User-Agent.
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest() != token
    assert (row.user_id, row.label) == (john_id, "Firefox on Linux")
    assert timedelta(days=DAYS - 1) < row.expires_at - row.created_at <= timedelta(days=DAYS)
    [event] = audited(server, "mfa.device_remembered")
    assert event.target_id == str(john_id)
    assert event.after["label"] == "Firefox on Linux" and event.after["days"] == DAYS

    # The two-step page lists it (this browser), and says signing out does not forget it.
    two_step = client.get("/console/account/two-step")
    assert "Remembered browsers" in two_step.text and "(this browser)" in two_step.text
    assert "Signing out does not forget it" in two_step.text
    sign_out(client)
    assert client.cookies[COOKIE] == token  # signing out kept it

    # The password is still asked, and a wrong one gets nothing.
    wrong = password_step(client, password="not the password at all")
    assert wrong.status_code == 401 and "/console/users" not in wrong.headers.get("Location", "")
    assert client.get("/console/users").status_code == 303
    # The right one signs in at once: no code.
    skipped = password_step(client, next_page="/console/account")
    assert signed_in(skipped, "/console/account"), skipped.text
    assert client.get("/console/account").status_code == 200
    assert [e.after["device"] for e in audited(server, "auth.mfa_remembered")] == [row.id]
    assert rows(server)[0].last_used_at is not None
    sign_out(client)

    # The cookie alone is no way in, and the API always asks for the second step.
    alone = httpx.Client(base_url=server.url, cookies={COOKIE: token})
    assert alone.get("/console/users").status_code == 303
    with server.client() as api:
        login = api.post(
            "/auth/login",
            json={"email": JOHN, "password": PASSWORD},
            headers={"Cookie": f"{COOKIE}={token}"},
        )
    assert login.status_code == 401 and login.json()["type"].endswith("mfa-required")
    # Another browser asks for the code.
    assert asks_for_the_code(password_step(browser(server)))


def test_forgetting_one_browser_or_all_of_them(server: LiveServer) -> None:
    create_workspaces(server.admin(), "acme")
    _, _, codes = person(server, JOHN, "John")
    first = remembered(server, codes[0])
    second = remembered(server, codes[1])
    assert len(rows(server)) == 2

    # Forget the first from the second: the first asks again, the second does not.
    assert signed_in(password_step(second))
    page = second.get("/console/account/two-step")
    listed = 'data-label="Browser">Firefox on Linux'
    assert page.text.count(listed) == 2 and page.text.count("(this browser)") == 1
    first_id = rows(server)[0].id
    forgot = second.post(
        f"/console/account/two-step/browsers/{first_id}/forget",
        data={"csrf_token": csrf_of(page.text)},
    )
    assert forgot.status_code == 303 and not cookie(forgot)  # not this browser's cookie
    after = second.get(forgot.headers["Location"])
    assert "Browser forgotten" in after.text and after.text.count(listed) == 1
    [event] = audited(server, "mfa.device_forgotten")
    assert event.before == {"device": first_id, "label": "Firefox on Linux"}
    sign_out(second)
    stale = password_step(first)
    assert asks_for_the_code(stale)
    assert "Max-Age=0" in cookie(stale)
    assert refusals(server) == ["unknown or forgotten browser"]
    assert signed_in(second_step(first, codes[2]))  # remembered again
    sign_out(first)
    assert signed_in(password_step(second))

    # Another person's browser id is the 404 of an unknown one, and forgets nothing.
    root = server.admin()
    onboard(server, root, MARY, "Mary", [("acme", "viewer")])
    mary = browser(server)
    assert signed_in(password_step(mary, MARY))  # no factor: the password alone
    mary_page = mary.get("/console/account/two-step")
    assert "Remembered browsers" not in mary_page.text  # nothing to remember without one
    for device_id in (rows(server)[0].id, 2_000_000_000):
        refused = mary.post(
            f"/console/account/two-step/browsers/{device_id}/forget",
            data={"csrf_token": csrf_of(mary_page.text)},
        )
        assert refused.status_code == 404
    assert len(rows(server)) == 2

    # Forget all, from the second: both ask again; this browser's cookie goes.
    page = second.get("/console/account/two-step")
    everything = second.post(
        "/console/account/two-step/browsers/forget-all", data={"csrf_token": csrf_of(page.text)}
    )
    assert everything.status_code == 303 and "Max-Age=0" in cookie(everything)
    listed = second.get(everything.headers["Location"])
    assert "Every browser forgotten" in listed.text and "No browser is remembered" in listed.text
    assert [e.after for e in audited(server, "mfa.devices_forgotten")] == [{"forgotten": 2}]
    assert rows(server) == []
    sign_out(second)
    assert asks_for_the_code(password_step(first))
    assert asks_for_the_code(password_step(second))


def test_another_persons_cookie_and_a_tampered_one_do_nothing(server: LiveServer) -> None:
    create_workspaces(server.admin(), "acme")
    _, _, johns = person(server, JOHN, "John")
    _, _, marys = person(server, MARY, "Mary")
    shared = remembered(server, johns[0])
    token = shared.cookies[COOKIE]

    # Mary on John's remembered browser: her code is asked; his cookie stays his.
    for_mary = password_step(shared, MARY)
    assert asks_for_the_code(for_mary) and not cookie(for_mary)
    assert refusals(server) == ["another person's browser"]
    assert signed_in(second_step(shared, marys[0], remember=False))
    sign_out(shared)
    assert shared.cookies[COOKIE] == token
    assert signed_in(password_step(shared))  # still John's
    sign_out(shared)

    # A tampered cookie is refused, audited and dropped.
    tampered = browser(server)
    tampered.cookies.set(COOKIE, token[:-1] + ("A" if token[-1] != "A" else "B"))
    answer = password_step(tampered)
    assert asks_for_the_code(answer) and "Max-Age=0" in cookie(answer)
    overlong = browser(server)
    overlong.cookies.set(COOKIE, token * 5)
    assert asks_for_the_code(password_step(overlong))
    assert refusals(server) == ["another person's browser", "unknown or forgotten browser"]


def test_it_stops_when_it_expires_or_the_password_changes_or_is_reset(
    server: LiveServer,
) -> None:
    create_workspaces(server.admin(), "acme")
    john_id, api, codes = person(server, JOHN, "John")
    client = remembered(server, codes[0])

    with database(server) as session:
        session.execute(update(RememberedDevice).values(expires_at=utcnow() - timedelta(1)))
        session.commit()
    assert asks_for_the_code(password_step(client))
    assert refusals(server) == ["expired"] and rows(server) == []  # the ended row goes

    # A password change ends it (with every session).
    assert signed_in(second_step(client, codes[1]))
    sign_out(client)
    changed = api.post(
        "/auth/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert changed.status_code == 200, changed.text
    assert asks_for_the_code(password_step(client, password=NEW_PASSWORD))
    assert refusals(server)[-1].startswith("ended with the person's sessions")

    # So does a reset by email.
    assert signed_in(second_step(client, codes[2]))
    sign_out(client)
    with server.client() as anonymous:
        assert anonymous.post("/auth/password-reset", json={"email": JOHN}).status_code == 202
    from tests.functional.test_passwords import confirm, reset_token, wait_for_mail

    message = wait_for_mail(server, 2)[-1]  # after John's invitation
    assert confirm(server, reset_token(message), PASSWORD).status_code == 204
    assert asks_for_the_code(password_step(client))
    assert len(refusals(server)) == 3 and audited(server, "auth.mfa_remembered") == []
    assert [r.user_id for r in rows(server)] == []
    assert len(audited(server, "mfa.device_remembered")) == 3 and john_id


def test_it_stops_when_the_factors_are_reset_or_removed_or_the_person_deactivated(
    server: LiveServer,
) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    john_id, api, codes = person(server, JOHN, "John")

    # An admin's reset of the factors: John sets the app up again; the code is asked.
    client = remembered(server, codes[0])
    assert root.post(f"/users/{john_id}/mfa/reset").status_code == 200
    assert signed_in(password_step(client))  # no factor now: the password alone
    sign_out(client)
    api = server.login(JOHN, PASSWORD)
    _, codes = enrol_app(api)
    assert asks_for_the_code(password_step(client))
    assert refusals(server)[-1].startswith("ended with the person's sessions")

    # The last factor removed (the app, with a code), then set up again: asked.
    assert signed_in(second_step(client, codes[0]))
    sign_out(client)
    removed = api.post("/auth/mfa/totp/remove", json={"code": codes[1]})
    assert removed.status_code in (200, 204), removed.text
    assert signed_in(password_step(client))
    sign_out(client)
    _, codes = enrol_app(api)
    assert asks_for_the_code(password_step(client))
    assert refusals(server)[-1] == "the factors it was remembered with are gone"

    # Deactivated and reactivated: asked.
    assert signed_in(second_step(client, codes[0]))
    sign_out(client)
    assert root.post(f"/users/{john_id}/deactivate").status_code == 200
    assert root.post(f"/users/{john_id}/reactivate").status_code == 200
    assert asks_for_the_code(password_step(client))
    assert len(audited(server, "mfa.device_remembered")) == 3
    assert audited(server, "auth.mfa_remembered") == []

    # Removed: the row goes with the account.
    assert signed_in(second_step(client, codes[1]))
    assert rows(server)
    assert root.delete(f"/users/{john_id}").status_code in (200, 204)
    assert rows(server) == []


def test_the_setting_at_zero_ignores_remembered_browsers_and_the_upkeep_deletes_them(
    server: LiveServer, settings: Settings
) -> None:
    create_workspaces(server.admin(), "acme")
    _, _, codes = person(server, JOHN, "John")
    client = remembered(server, codes[0])

    off = create_app(replace(settings, mfa_remember_days=0))
    on = client.base_url
    try:
        with serving(off) as httpd:
            # The same browser (its cookies go to any port of the host), at a replica with
            # the setting at 0, sharing the database.
            client.base_url = httpx.URL(f"http://127.0.0.1:{httpd.server_port}")
            assert client.cookies[COOKIE]
            assert asks_for_the_code(password_step(client))
            page = client.get("/console/sign-in/code")
            assert "Remember this browser" not in page.text
            done = second_step(client, codes[1])  # ticking it anyway remembers nothing
            assert signed_in(done) and not cookie(done)
            assert "Remembered browsers" not in client.get("/console/account/two-step").text
            sign_out(client)
            assert len(rows(server)) == 1 and refusals(server) == []
            # The upkeep, under the setting at 0, deletes every remembered browser.
            from gateway.services.housekeeping import DatabaseHousekeeping
            from gateway.web.state import gateway_state

            state = gateway_state(off)
            upkeep = DatabaseHousekeeping(
                state.db, state.session_factory, state.engine, state.settings
            )
            assert upkeep.forget_ended_devices() == 1
    finally:
        close_app(off)
        client.base_url = on
    assert rows(server) == []
    assert asks_for_the_code(password_step(client))
    assert refusals(server) == ["unknown or forgotten browser"]


def test_the_upkeep_deletes_only_the_ended(server: LiveServer) -> None:
    """Beat's task, through this app's housekeeping port."""
    from mailer.housekeeping import forget_ended_devices

    create_workspaces(server.admin(), "acme")
    _, _, codes = person(server, JOHN, "John")
    remembered(server, codes[0])
    remembered(server, codes[1])
    assert forget_ended_devices() == 0
    with database(server) as session:
        first = min(r.id for r in session.scalars(select(RememberedDevice)))
        session.execute(
            update(RememberedDevice)
            .where(RememberedDevice.id == first)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()
    assert forget_ended_devices() == 1
    assert [r.id for r in rows(server)] == [first + 1]


def test_a_passkey_second_step_remembers_too_and_passwordless_needs_nothing_of_it(
    server: LiveServer,
) -> None:
    from tests.console_support import sign_in

    create_workspaces(server.admin(), "acme")
    onboard(server, server.admin(), JOHN, "John", [("acme", "viewer")])
    key = authenticator(server)
    assert add_passkey(sign_in(server, JOHN, PASSWORD), key, "Laptop").status_code == 201

    client = browser(server)
    assert asks_for_the_code(password_step(client))
    page = client.get("/console/sign-in/code")
    assert "Remember this browser" in page.text and "Use your passkey" in page.text
    token = csrf_of(page.text)
    options = send(client, token, "/console/sign-in/code/passkey/options", {})
    done = send(
        client,
        token,
        "/console/sign-in/code/passkey",
        {"credential": key.get(options.json()), "remember": True},
    )
    assert done.status_code == 200, done.text
    assert cookie(done) and len(rows(server)) == 1
    sign_out(client)
    assert signed_in(password_step(client))
    sign_out(client)

    # A passwordless sign-in (elsewhere) neither needs nor makes a remembered browser.
    other = browser(server)
    token = csrf_of(other.get("/console/sign-in").text)
    options = send(other, token, "/console/sign-in/passkey/options", {})
    answer = send(
        other,
        token,
        "/console/sign-in/passkey",
        {"credential": key.get(options.json()), "remember": True},
    )
    assert answer.status_code == 200 and not cookie(answer)
    assert len(rows(server)) == 1


def test_over_https_the_cookie_is_secure_and_host_only(
    settings: Settings, admin_password: str
) -> None:
    """Served with an https public URL (over plain http on loopback: the cookies are
    carried by hand, as a browser would over TLS)."""
    app = create_app(replace(settings, public_url="https://console.example"))
    jar: dict[str, str] = {}

    def call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
        header = "; ".join(f"{k}={v}" for k, v in jar.items())
        answer = client.request(method, path, headers={"Cookie": header}, **kwargs)
        for line in answer.headers.get_list("set-cookie"):
            name, _, rest = line.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in line or value in ('""', ""):
                jar.pop(name, None)
            else:
                jar[name] = value
        return answer

    try:
        with (
            serving(app) as httpd,
            httpx.Client(base_url=f"http://127.0.0.1:{httpd.server_port}", timeout=30) as client,
        ):
            url = f"http://127.0.0.1:{httpd.server_port}"
            server = LiveServer(url, app, settings, admin_password)
            root = server.admin()
            create_workspaces(root, "acme")
            _, _, codes = person(server, JOHN, "John")
            form = call(client, "GET", "/console/sign-in")
            step = call(
                client,
                "POST",
                "/console/sign-in",
                data={"email": JOHN, "password": PASSWORD, "csrf_token": csrf_of(form.text)},
            )
            assert asks_for_the_code(step)
            page = call(client, "GET", "/console/sign-in/code")
            done = call(
                client,
                "POST",
                "/console/sign-in/code",
                data={"code": codes[0], "remember": "1", "csrf_token": csrf_of(page.text)},
            )
            assert done.status_code == 303, done.text
            line = next(
                c for c in done.headers.get_list("set-cookie") if c.startswith(f"__Host-{COOKIE}=")
            )
            for flag in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/"):
                assert flag in line, line
            assert "Domain=" not in line
            remembered_token = jar[f"__Host-{COOKIE}"]
            jar.clear()
            jar[f"__Host-{COOKIE}"] = remembered_token
            form = call(client, "GET", "/console/sign-in")
            again = call(
                client,
                "POST",
                "/console/sign-in",
                data={"email": JOHN, "password": PASSWORD, "csrf_token": csrf_of(form.text)},
            )
            assert signed_in(again), again.text
            assert re.search(r"__Host-ringfence_console=", again.headers["set-cookie"])
            assert user_id_of(root, JOHN)
    finally:
        close_app(app)
