"""Passkeys and security keys (issue 19): registered in the console (named, listed,
removed; the last factor kept while a policy asks for one), a passwordless sign-in with a
discoverable credential, and the second step after a right password, through real HTTP.
The answers are made by a software authenticator with real P-256 keys
(tests/passkey_support.py) and verified by the gateway's real verifier: wrong origins,
other browsers' and other ceremonies' challenges, expired and replayed ones, unknown
credentials, other user handles, cloned counters and unverified people are refused, and
a passwordless refusal says the same whatever went wrong."""

from __future__ import annotations

import re
import threading
from typing import Any

import httpx
from sqlalchemy import select, update

from gateway.db.models import AuditEvent, PasskeyChallenge, PasskeyCredential, utcnow
from gateway.identity.passkeys import relying_party
from tests.console_support import Console, csrf_of, sign_in
from tests.functional.test_mfa import JOHN, database, password_step, second_step
from tests.helpers import PASSWORD, LiveServer, assert_problem, create_workspaces, onboard
from tests.passkey_support import SoftAuthenticator, b64url

REFUSED = "That passkey could not sign you in"


def authenticator(server: LiveServer) -> SoftAuthenticator:
    return SoftAuthenticator(relying_party(server.settings.public_url).origin)


def send(client: httpx.Client, token: str, path: str, body: dict[str, Any]) -> httpx.Response:
    """A ceremony's request, as passkeys.js sends it: JSON, the CSRF token in a header."""
    return client.post(path, json=body, headers={"X-CSRF-Token": token})


def add_passkey(
    console: Console, key: SoftAuthenticator, name: str, **answer: Any
) -> httpx.Response:
    options = send(
        console.client, console.token, "/console/account/passkeys/options", {"name": name}
    )
    assert options.status_code == 200, options.text
    credential = key.create(options.json(), **answer)
    return send(
        console.client,
        console.token,
        "/console/account/passkeys",
        {"name": name, "credential": credential},
    )


def confirm_with_passkey(
    console: Console, key: SoftAuthenticator, path: str, **answer: Any
) -> httpx.Response:
    """Confirm a change to one's own factors with a passkey, as passkeys.js does: the
    options for this console session, the authenticator's answer sent to ``path``."""
    options = send(console.client, console.token, "/console/account/confirm/passkey-options", {})
    assert options.status_code == 200, options.text
    return send(
        console.client, console.token, path, {"credential": key.get(options.json(), **answer)}
    )


def recovery_codes(page: str) -> list[str]:
    """The recovery codes a console page shows (once)."""
    return re.findall(r"<li><code>([a-z2-9]{5}-[a-z2-9]{5})</code></li>", page)


def signed_out(server: LiveServer) -> tuple[httpx.Client, str]:
    """A browser on the sign-in page: its cookie, and the page's CSRF token."""
    browser = httpx.Client(base_url=server.url, timeout=30)
    return browser, csrf_of(browser.get("/console/sign-in").text)


def sign_in_options(browser: httpx.Client, token: str) -> dict[str, Any]:
    options = send(browser, token, "/console/sign-in/passkey/options", {})
    assert options.status_code == 200, options.text
    return dict(options.json())


def passwordless(
    browser: httpx.Client, token: str, credential: dict[str, Any], next_page: str = ""
) -> httpx.Response:
    return send(
        browser, token, "/console/sign-in/passkey", {"credential": credential, "next": next_page}
    )


def audited(server: LiveServer, action: str) -> list[AuditEvent]:
    with database(server) as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )


def test_passkeys_added_named_listed_and_removed_in_the_console(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    onboard(server, root, JOHN, "John", [("acme", "viewer")])
    onboard(server, root, "mary@example.com", "Mary", [("acme", "viewer")])
    john = sign_in(server, JOHN, PASSWORD)
    key = authenticator(server)
    assert "None yet." in john.get("/console/account/passkeys").text

    # A name is checked before the ceremony; a form posted without the script is told.
    unnamed = send(john.client, john.token, "/console/account/passkeys/options", {"name": " "})
    assert_problem(unnamed, 422, "invalid-input", "Name the passkey")
    assert john.post("/console/account/passkeys", {"name": "x"}).status_code == 400

    options = send(
        john.client, john.token, "/console/account/passkeys/options", {"name": "Work laptop"}
    )
    made = key.create(options.json())
    body = {"name": "Work laptop", "credential": made}
    added = send(john.client, john.token, "/console/account/passkeys", body)
    assert added.status_code == 201, added.text
    assert "Work laptop" in added.text and "shown only now" in added.text
    codes = recovery_codes(added.text)
    assert len(codes) == 10  # the first factor brings recovery codes
    options = send(john.client, john.token, "/console/account/passkeys/options", {"name": "Key"})
    excluded = [c["id"] for c in options.json()["excludeCredentials"]]
    assert excluded == [b64url(key.credentials[0].credential_id)]  # one per authenticator
    # One user handle for all of a person's passkeys, random (no id, no address).
    assert options.json()["user"]["id"] == b64url(key.credentials[0].user_handle)
    assert options.json()["rp"]["id"] == "ringfence.test"

    # Refused registrations: the answer replayed, another origin, another person's
    # challenge (Mary's session), a challenge of another kind.
    with database(server) as session:
        first_challenge = session.scalars(select(PasskeyChallenge)).first()
    assert first_challenge is not None and first_challenge.used_at is not None
    replayed = send(john.client, john.token, "/console/account/passkeys", body)
    assert_problem(replayed, 422, "invalid-input", "did not verify")
    evil = add_passkey(john, authenticator(server), "Evil", origin="https://evil.example")
    assert_problem(evil, 422, "invalid-input", "did not verify")
    mary = sign_in(server, "mary@example.com", PASSWORD)
    marys = send(mary.client, mary.token, "/console/account/passkeys/options", {"name": "M"})
    stolen = authenticator(server).create(marys.json())
    refused = send(
        john.client,
        john.token,
        "/console/account/passkeys",
        {"name": "Stolen", "credential": stolen},
    )
    assert_problem(refused, 422, "invalid-input")
    second = add_passkey(john, key, "Blue key")
    assert second.status_code == 201 and "shown only now" not in second.text  # codes stay
    page = john.get("/console/account/passkeys").text
    assert "Work laptop" in page and "Blue key" in page
    reasons = {
        e.after["reason"].split(":")[0] for e in audited(server, "passkey.registration_refused")
    }
    assert {
        "registration not verified",
        "challenge of another ceremony",
        "challenge used already",
    } <= reasons

    # Sign-in asks for the second step now; the API names the methods.
    problem = assert_problem(password_step(server), 401, "mfa-required")
    assert problem["methods"] == ["webauthn", "recovery_code"]
    with _api(server, problem["mfa_token"], codes[0]) as api:
        assert api.get("/auth/mfa").json()["passkeys"] == 2

    # Removing: Mary cannot remove John's (an unknown id to her); John removes one.
    with database(server) as session:
        ids = list(session.scalars(select(PasskeyCredential.id).order_by(PasskeyCredential.id)))
    assert mary.get(f"/console/account/passkeys/{ids[0]}/remove").status_code == 404
    foreign = mary.post(f"/console/account/passkeys/{ids[0]}/remove", {"code": codes[1]})
    assert foreign.status_code == 404
    removed = john.post(f"/console/account/passkeys/{ids[1]}/remove", {"code": codes[1]})
    assert removed.status_code == 200 and "Blue key" in removed.text and "removed" in removed.text

    # The workspace requires two-step sign-in of everyone: the last factor stays (told
    # before a code is spent on it).
    assert root.put("/workspaces/acme/mfa-policy", json={"required": "everyone"}).status_code == 200
    last = john.post(f"/console/account/passkeys/{ids[0]}/remove", {"code": codes[2]})
    assert last.status_code == 409 and "keep at least one" in last.text
    assert root.put("/workspaces/acme/mfa-policy", json={"required": "off"}).status_code == 200
    gone = confirm_with_passkey(john, key, f"/console/account/passkeys/{ids[0]}/remove")
    assert gone.status_code == 200 and "None yet." in gone.text
    assert password_step(server).status_code == 200  # the password alone again
    with database(server) as session:
        assert session.scalars(select(PasskeyCredential)).all() == []
    removals = audited(server, "passkey.removed")
    assert [(e.before["name"], e.after) for e in removals] == [
        ("Blue key", {"confirmed_with": "recovery_code"}),
        ("Work laptop", {"confirmed_with": "passkey"}),
    ]
    registered = audited(server, "passkey.registered")
    assert [e.after["name"] for e in registered] == ["Work laptop", "Blue key"]
    assert registered[0].after["recovery_codes"] == 10
    trail = repr([(e.before, e.after) for e in audited(server, "passkey.registered")])
    assert not any(code in trail for code in codes)


def _api(server: LiveServer, mfa_token: str, code: str) -> httpx.Client:
    """The API's second step with a recovery code (a passkey-only person has them too)."""
    answer = second_step(server, mfa_token, code)
    assert answer.status_code == 200, answer.text
    return server.client(answer.json()["access_token"])


def test_passwordless_sign_in_and_the_answers_it_refuses(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    onboard(server, root, JOHN, "John", [("acme", "admin")])
    onboard(server, root, "mary@example.com", "Mary", [("acme", "viewer")])
    key = authenticator(server)
    john = sign_in(server, JOHN, PASSWORD)
    assert add_passkey(john, key, "Laptop").status_code == 201
    marys_key = authenticator(server)
    mary = sign_in(server, "mary@example.com", PASSWORD)
    assert add_passkey(mary, marys_key, "Phone").status_code == 201

    browser, token = signed_out(server)
    options = sign_in_options(browser, token)
    assert options["allowCredentials"] == [] and options["userVerification"] == "required"
    answer = key.get(options)
    done = passwordless(browser, token, answer, "/console/audit")
    assert done.status_code == 200, done.text
    assert done.json() == {"redirect": "/console/audit"}
    assert browser.get("/console/account").status_code == 200  # signed in as John
    assert "John" in browser.get("/console/account").text
    # Replayed from another browser: its challenge is not this browser's. Replayed in
    # the browser whose challenge it was: a challenge is used once, refused or not.
    again, again_token = signed_out(server)
    refusals = [passwordless(again, again_token, answer)]
    once = sign_in_options(again, again_token)
    refusals.append(passwordless(again, again_token, key.get(once, user_verified=False)))
    refusals.append(passwordless(again, again_token, key.get(once)))

    def fresh(**knobs: Any) -> httpx.Response:
        return passwordless(
            again, again_token, key.get(sign_in_options(again, again_token), **knobs)
        )

    refusals += [
        fresh(origin="https://evil.example"),  # another origin
        fresh(rp_id="evil.example"),  # another relying party
        fresh(user_verified=False),  # the person not verified: not a sign-in by itself
        fresh(sign_count=1),  # the counter went back: a cloned key
        fresh(user_handle=marys_key.credentials[0].user_handle),  # another's handle
    ]
    # Unknown credential: a key nobody registered, on a real challenge.
    stranger = authenticator(server)
    stranger.create({"rp": {"id": "ringfence.test"}, "user": {"id": b64url(b"x")}, "challenge": ""})
    refusals.append(
        passwordless(again, again_token, stranger.get(sign_in_options(again, again_token)))
    )
    # A challenge of another browser: made for `browser`, answered in `again`.
    refusals.append(
        passwordless(
            again,
            again_token,
            key.get(sign_in_options(*signed_out(server))),
        )
    )
    # An expired one.
    late = sign_in_options(again, again_token)
    with database(server) as session:
        session.execute(update(PasskeyChallenge).values(expires_at=utcnow()))
        session.commit()
    refusals.append(passwordless(again, again_token, key.get(late)))
    # Not an answer at all.
    refusals.append(passwordless(again, again_token, {"response": {}}))
    details = {assert_problem(r, 401, "invalid-passkey")["detail"] for r in refusals}
    assert details == {REFUSED}  # the same, whatever went wrong: nothing to enumerate
    assert again.get("/console/account").status_code == 303  # never signed in

    # Marys's key still signs her in (a counter that grows).
    fine = passwordless(again, again_token, marys_key.get(sign_in_options(again, again_token)))
    assert fine.status_code == 200 and fine.json() == {"redirect": "/console/"}

    reasons = [e.after["reason"] for e in audited(server, "auth.passkey_failed")]
    for expected in (
        "challenge used already",
        "Unexpected client data origin",
        "Unexpected RP ID hash",
        "User verification is required",
        "sign count did not grow",
        "user handle is not the credential's",
        "unknown credential",
        "challenge of another browser",
        "challenge expired",
        "not a WebAuthn answer",
    ):
        assert any(expected in reason for reason in reasons), (expected, reasons)
    logins = audited(server, "auth.passkey_login")
    assert len(logins) == 2 and logins[0].target_name == "John"
    with database(server) as session:
        stored = session.scalars(select(PasskeyCredential).order_by(PasskeyCredential.id)).first()
    assert stored is not None and stored.last_used_at is not None and stored.sign_count >= 1


def test_a_passkey_as_the_second_step_and_the_admin_reset(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    john_id = onboard(server, root, JOHN, "John", [("acme", "viewer")])
    onboard(server, root, "alice@example.com", "Alice", [("acme", "admin")])
    key = authenticator(server)
    john = sign_in(server, JOHN, PASSWORD)
    assert add_passkey(john, key, "Laptop").status_code == 201

    browser, token = signed_out(server)
    step = browser.post(
        "/console/sign-in", data={"email": JOHN, "password": PASSWORD, "csrf_token": token}
    )
    assert step.status_code == 303 and step.headers["Location"].endswith("/console/sign-in/code")
    page = browser.get("/console/sign-in/code")
    assert (
        "Use your passkey" in page.text and '<label for="code">Recovery code</label>' in page.text
    )
    token = csrf_of(page.text)
    options = send(browser, token, "/console/sign-in/code/passkey/options", {})
    assert options.status_code == 200, options.text
    assert [c["id"] for c in options.json()["allowCredentials"]] == [
        b64url(key.credentials[0].credential_id)
    ]
    # A passwordless challenge does not do for the second step, nor a wrong origin; the
    # ticket survives both.
    other = send(browser, token, "/console/sign-in/passkey/options", {}).json()
    for answer in (key.get(other), key.get(options.json(), origin="http://evil.example")):
        refused = send(browser, token, "/console/sign-in/code/passkey", {"credential": answer})
        assert_problem(refused, 401, "invalid-passkey")
    options = send(browser, token, "/console/sign-in/code/passkey/options", {})
    done = send(
        browser,
        token,
        "/console/sign-in/code/passkey",
        {"credential": key.get(options.json()), "next": "/console/account"},
    )
    assert done.status_code == 200, done.text
    assert done.json() == {"redirect": "/console/account"}
    assert browser.get("/console/account").status_code == 200
    assert browser.get("/console/sign-in/code").status_code == 303  # the ticket is gone
    verified = audited(server, "auth.mfa_verified")
    assert verified[-1].after["method"] == "passkey"
    failed = [e.after["reason"] for e in audited(server, "auth.mfa_failed")]
    assert "challenge of another ceremony" in failed

    # The admin's reset takes the passkeys away and ends John's sessions.
    alice = server.login("alice@example.com", PASSWORD)
    reset = alice.post(f"/users/{john_id}/mfa/reset")
    assert reset.status_code == 200, reset.text
    assert browser.get("/console/account").status_code == 303  # signed out
    assert password_step(server).status_code == 200
    with database(server) as session:
        assert session.scalars(select(PasskeyCredential)).all() == []
    [event] = audited(server, "mfa.reset")
    assert event.before == {"totp": False, "passkeys": 1}
    assert event.after == {
        "totp": False,
        "passkeys": 0,
        "sessions_ended": reset.json()["sessions_ended"],
    }
    # The passkey no longer signs in by itself either.
    again, again_token = signed_out(server)
    gone = passwordless(again, again_token, key.get(sign_in_options(again, again_token)))
    assert_problem(gone, 401, "invalid-passkey")


def test_two_removals_at_once_keep_the_last_factor_a_policy_requires(server: LiveServer) -> None:
    """Two tabs removing John's two passkeys at the same moment while his workspace
    requires two-step sign-in: one removal goes through, the other is told it would take
    the last factor (409); never both, whatever the interleaving (the person's row lock)."""
    root = server.admin()
    create_workspaces(root, "acme")
    onboard(server, root, JOHN, "John", [("acme", "viewer")])
    tabs = [sign_in(server, JOHN, PASSWORD) for _ in range(2)]
    key = authenticator(server)
    first = add_passkey(tabs[0], key, "One")
    assert first.status_code == 201
    codes = recovery_codes(first.text)
    assert add_passkey(tabs[0], key, "Two").status_code == 201
    assert root.put("/workspaces/acme/mfa-policy", json={"required": "everyone"}).status_code == 200
    with database(server) as session:
        ids = list(session.scalars(select(PasskeyCredential.id).order_by(PasskeyCredential.id)))
    start = threading.Barrier(2)
    answers: dict[int, int] = {}

    def remove(tab: Console, passkey_id: int, code: str) -> None:
        start.wait()
        path = f"/console/account/passkeys/{passkey_id}/remove"
        answers[passkey_id] = tab.post(path, {"code": code}).status_code

    threads = [
        threading.Thread(target=remove, args=triple)
        for triple in zip(tabs, ids, codes, strict=False)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers.values()) == [200, 409], answers
    with database(server) as session:
        assert len(session.scalars(select(PasskeyCredential)).all()) == 1


def test_changing_ones_own_factors_asks_for_a_fresh_one(server: LiveServer) -> None:
    """A signed-in session alone (a stolen cookie) cannot remove a passkey or renew the
    recovery codes: it takes a code from the app, a recovery code, or one of the person's
    passkeys answering a challenge made for this session, used once. A person whose
    factors are passkeys alone renews their codes with a passkey."""
    root = server.admin()
    create_workspaces(root, "acme")
    onboard(server, root, JOHN, "John", [("acme", "viewer")])
    onboard(server, root, "mary@example.com", "Mary", [("acme", "viewer")])
    john, key = sign_in(server, JOHN, PASSWORD), authenticator(server)
    other_tab = sign_in(server, JOHN, PASSWORD)  # before the password is not enough
    first = add_passkey(john, key, "Laptop")
    codes = recovery_codes(first.text)
    assert add_passkey(john, key, "Phone").status_code == 201
    mary, marys_key = sign_in(server, "mary@example.com", PASSWORD), authenticator(server)
    assert add_passkey(mary, marys_key, "Mary's").status_code == 201
    with database(server) as session:
        phone = session.scalar(
            select(PasskeyCredential.id).where(PasskeyCredential.name == "Phone")
        )
    remove = f"/console/account/passkeys/{phone}/remove"

    # The page asks; the session alone or a TOTP-shaped guess (John has no app) do not
    # do. (Each wrong one counts towards the limit of five: the next test.)
    asking = john.get(remove)
    assert asking.status_code == 200 and "Confirm with a passkey and remove" in asking.text
    assert '<label for="remove-code">A recovery code</label>' in asking.text
    for code in ("", "123456"):
        refused = john.post(remove, {"code": code})
        assert refused.status_code == 422 and "Phone" in refused.text, code

    # A passkey answer counts only for a confirmation challenge of this session, by one
    # of John's passkeys, once.
    foreign_options = send(
        other_tab.client, other_tab.token, "/console/account/confirm/passkey-options", {}
    ).json()
    sign_in_challenge = sign_in_options(*signed_out(server))
    for_john = send(john.client, john.token, "/console/account/confirm/passkey-options", {})
    own_options = send(john.client, john.token, "/console/account/confirm/passkey-options", {})
    assert [c["id"] for c in own_options.json()["allowCredentials"]] == [
        b64url(c.credential_id) for c in key.credentials
    ]
    answer = key.get(own_options.json())
    for credential in (
        key.get(foreign_options),  # another session's challenge
        key.get(sign_in_challenge),  # a sign-in's challenge
        marys_key.get(for_john.json(), credential=marys_key.credentials[0]),  # Mary's passkey
    ):
        refused = send(john.client, john.token, remove, {"credential": credential})
        assert_problem(refused, 422, "invalid-input", "confirm with a code")
    done = send(john.client, john.token, remove, {"credential": answer})
    assert done.status_code == 200 and "Phone" in done.text and "removed" in done.text
    replayed = send(john.client, john.token, remove, {"credential": answer})
    assert replayed.status_code == 404  # the passkey is gone; the answer is spent anyway
    with database(server) as session:
        names = session.scalars(select(PasskeyCredential.name).order_by(PasskeyCredential.id))
        assert list(names) == ["Laptop", "Mary's"]

    # New recovery codes: by a passkey (John has no app), then by a recovery code; the
    # old ones stop working, and the page shows the new ones once.
    page = john.get("/console/account/two-step").text
    assert "Confirm with a passkey and make new codes" in page
    renew = "/console/account/two-step/recovery-codes"
    assert john.post(renew, {"code": ""}).status_code == 422
    renewed = confirm_with_passkey(john, key, renew)
    assert renewed.status_code == 200, renewed.text
    fresh = recovery_codes(renewed.text)
    assert len(fresh) == 10 and not set(fresh) & set(codes)
    assert john.post(renew, {"code": codes[3]}).status_code == 422  # an old code
    again = john.post(renew, {"code": fresh[0]})
    assert again.status_code == 200 and len(recovery_codes(again.text)) == 10
    # Over the API a recovery code does too (passkey ceremonies are the console's).
    api_codes = recovery_codes(again.text)
    problem = assert_problem(password_step(server), 401, "mfa-required")
    with _api(server, problem["mfa_token"], api_codes[0]) as api:
        answered = api.post("/auth/mfa/recovery-codes", json={"code": api_codes[1]})
        assert answered.status_code == 200 and len(answered.json()["recovery_codes"]) == 10

    renewals = [e.after["confirmed_with"] for e in audited(server, "mfa.recovery_codes_renewed")]
    assert renewals == ["passkey", "recovery_code", "recovery_code"]
    [removal] = audited(server, "passkey.removed")
    assert removal.after == {"confirmed_with": "passkey"} and removal.before["name"] == "Phone"
    refusals = [e.after for e in audited(server, "mfa.code_refused")]
    assert sum(1 for r in refusals if r["method"] == "code") == 2  # 123456, an old code
    assert {r.get("reason") for r in refusals if r["method"] == "passkey"} >= {
        "challenge of another browser",
        "challenge of another ceremony",
        "not a passkey of this person",
    }


def test_guessed_confirmations_are_throttled(server: LiveServer) -> None:
    """Confirmation codes count against the same limit as the second step's: after five
    wrong ones even a right one is a 429 until the window passes."""
    root = server.admin()
    create_workspaces(root, "acme")
    onboard(server, root, JOHN, "John", [("acme", "viewer")])
    john, key = sign_in(server, JOHN, PASSWORD), authenticator(server)
    codes = recovery_codes(add_passkey(john, key, "Laptop").text)
    renew = "/console/account/two-step/recovery-codes"
    answers = [john.post(renew, {"code": f"guess-{n}"}).status_code for n in range(6)]
    assert answers == [422] * 5 + [429], answers
    assert john.post(renew, {"code": codes[0]}).status_code == 429
    throttled = confirm_with_passkey(john, key, renew)
    assert_problem(throttled, 429, "too-many-requests")
