"""Two-step sign-in (issue 19): TOTP enrolment confirmed by a first code, the password
step answering mfa-required with a single-use ticket, codes on the real clock (a window of
one step either side, a code used once, never an older one after a newer one), recovery
codes (shown once, hashed, each once), throttled guessing, and an audit of all of it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta

import httpx
import pyotp
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gateway.app import create_app
from gateway.db.models import (
    AuditEvent,
    MfaFactor,
    MfaRecoveryCode,
    TokenPurpose,
    UserToken,
    utcnow,
)
from gateway.db.session import make_engine
from tests.console_support import csrf_of
from tests.helpers import (
    PASSWORD,
    LiveServer,
    assert_problem,
    close_app,
    create_workspaces,
    onboard,
    serving,
)

JOHN = "john@example.com"


@contextmanager
def database(server: LiveServer) -> Iterator[Session]:
    """The server's database, for inspection and for moving expiries (setup only)."""
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with Session(db) as session:
            yield session
    finally:
        db.dispose()


def password_step(server: LiveServer, email: str = JOHN) -> httpx.Response:
    with server.client() as anonymous:
        return anonymous.post("/auth/login", json={"email": email, "password": PASSWORD})


def ticket(server: LiveServer) -> str:
    problem = assert_problem(password_step(server), 401, "mfa-required")
    assert problem["expires_in"] == 300 and problem["methods"] == ["totp", "recovery_code"]
    assert "access_token" not in problem
    return str(problem["mfa_token"])


def second_step(server: LiveServer, mfa_token: str, code: str) -> httpx.Response:
    with server.client() as anonymous:
        return anonymous.post("/auth/mfa/verify", json={"mfa_token": mfa_token, "code": code})


def code_at(secret: str, offset: float) -> str:
    return pyotp.TOTP(secret).at(time.time() + offset)


def enrol(server: LiveServer, john: httpx.Client) -> tuple[str, list[str]]:
    """Set up John's authenticator app; its secret and the recovery codes."""
    started = john.post("/auth/mfa/totp")
    assert started.status_code == 201, started.text
    secret, uri = started.json()["secret"], started.json()["otpauth_uri"]
    assert uri.startswith("otpauth://totp/Ringfence:john%40example.com?secret=" + secret)
    # Until confirmed nothing changes at sign-in; a wrong first code confirms nothing.
    assert password_step(server).status_code == 200
    wrong = john.post("/auth/mfa/totp/confirm", json={"code": "000000"})
    if wrong.status_code == 200:  # one in a million: 000000 was the code
        return secret, wrong.json()["recovery_codes"]
    assert_problem(wrong, 422, "invalid-input", "not valid")
    confirmed = john.post("/auth/mfa/totp/confirm", json={"code": code_at(secret, 0)})
    assert confirmed.status_code == 200, confirmed.text
    codes = confirmed.json()["recovery_codes"]
    assert len(codes) == len(set(codes)) == 10
    return secret, codes


def test_totp_sign_in_on_the_real_clock_recovery_codes_and_throttling(
    server: LiveServer,
) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    onboard(server, admin, JOHN, "John", [("acme", "viewer")])
    john = server.login(JOHN, PASSWORD)
    assert john.get("/auth/mfa").json() == {
        "totp": False,
        "totp_enrolled_at": None,
        "pending": False,
        "recovery_codes_left": 0,
        "passkeys": 0,
    }
    secret, codes = enrol(server, john)
    status = john.get("/auth/mfa").json()
    assert status["totp"] and status["recovery_codes_left"] == 10 and not status["pending"]
    # The secret is shown once: a second enrolment is refused, nothing returns it, and
    # the database holds it sealed, the recovery codes hashed.
    assert_problem(john.post("/auth/mfa/totp"), 409, "conflict")
    with database(server) as session:
        [factor] = session.scalars(select(MfaFactor))
        stored_codes = list(session.scalars(select(MfaRecoveryCode.code_hash)))
    assert secret not in factor.sealed_secret and factor.confirmed_at is not None
    assert not set(codes) & set(stored_codes) and len(stored_codes) == 10

    # The password alone opens no session: a ticket to the second step.
    first = ticket(server)
    # Two steps away (the window is one), the code used to confirm (replayed), a code of
    # a step before it: refused; the ticket survives wrong codes.
    for code in (code_at(secret, -90), code_at(secret, 90), code_at(secret, 0)):
        assert_problem(second_step(server, first, code), 401, "invalid-mfa-code")
    # The next step's code (clocks drift) opens a session; once.
    next_code = code_at(secret, 30)
    signed_in = second_step(server, first, next_code)
    assert signed_in.status_code == 200, signed_in.text
    with server.client(signed_in.json()["access_token"]) as session_client:
        assert session_client.get("/auth/mfa").json()["totp"] is True
    assert_problem(second_step(server, first, next_code), 401, "unauthorized", "sign in again")
    assert_problem(second_step(server, ticket(server), next_code), 401, "invalid-mfa-code")

    # A recovery code, typed loosely, works once.
    loose = codes[0].upper().replace("-", " ")
    assert second_step(server, ticket(server), loose).status_code == 200
    assert_problem(second_step(server, ticket(server), codes[0]), 401, "invalid-mfa-code")
    assert john.get("/auth/mfa").json()["recovery_codes_left"] == 9

    # An expired ticket is refused even with a right code.
    late = ticket(server)
    with database(server) as session:
        session.execute(
            update(UserToken)
            .where(UserToken.purpose == TokenPurpose.MFA_CHALLENGE, UserToken.used_at.is_(None))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()
    assert_problem(second_step(server, late, codes[1]), 401, "unauthorized", "expired")

    # Guessing: after five wrong codes (the sign-in limit) even a right one is a 429.
    guessing = ticket(server)
    failures = 0
    while (answer := second_step(server, guessing, "123456")).status_code == 401:
        failures += 1
        assert failures <= 5, "guessing is not throttled"
    assert_problem(answer, 429, "too-many-requests")
    assert_problem(second_step(server, guessing, codes[2]), 429, "too-many-requests")

    with database(server) as session:
        events = list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))
    actions = [event.action for event in events]
    for action in (
        "mfa.enrolment_started",
        "mfa.code_refused",
        "mfa.enrolled",
        "auth.mfa_challenged",
        "auth.mfa_failed",
        "auth.mfa_verified",
        "auth.mfa_expired",
        "auth.mfa_throttled",
    ):
        assert action in actions, action
    reasons = {e.after["reason"] for e in events if e.action == "auth.mfa_failed" and e.after}
    assert {"wrong code", "code used already", "wrong or used recovery code"} <= reasons
    trail = repr([(e.before, e.after, e.target_name) for e in events])
    assert secret not in trail and not any(code in trail for code in codes)


def test_recovery_codes_renewed_and_the_app_removed_with_a_code(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    onboard(server, admin, JOHN, "John", [("acme", "viewer")])
    john = server.login(JOHN, PASSWORD)
    secret, old_codes = enrol(server, john)
    # The confirming code's step is used: renewing needs a later one. (A step before now:
    # the confirming one, or the one before it if a 30-s step began since, where "now"
    # would be a step not used yet and pass.)
    assert_problem(
        john.post("/auth/mfa/recovery-codes", json={"code": code_at(secret, -30)}),
        422,
        "invalid-input",
    )
    renewed = john.post("/auth/mfa/recovery-codes", json={"code": code_at(secret, 30)})
    assert renewed.status_code == 200, renewed.text
    new_codes = renewed.json()["recovery_codes"]
    assert not set(new_codes) & set(old_codes)
    assert_problem(second_step(server, ticket(server), old_codes[0]), 401, "invalid-mfa-code")
    # Removing takes a code too (a recovery code will do); then the password is enough.
    assert_problem(john.post("/auth/mfa/totp/remove", json={"code": "nope"}), 422, "invalid-input")
    assert john.post("/auth/mfa/totp/remove", json={"code": new_codes[0]}).status_code == 204
    assert password_step(server).status_code == 200
    assert john.get("/auth/mfa").json()["recovery_codes_left"] == 0
    assert_problem(john.post("/auth/mfa/totp/remove", json={"code": "123456"}), 409, "conflict")


def test_an_admin_resets_the_factors_of_their_workspace_s_people_only(server: LiveServer) -> None:
    """Within acme's walls: acme's admin resets John's app (his sessions end, the password
    is enough again); globex's admin gets the answer of an unknown id; an admin cannot
    reset the owner's; nobody resets their own this way."""
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    john_id = onboard(server, root, JOHN, "John", [("acme", "viewer")])
    alice_id = onboard(server, root, "alice@example.com", "Alice", [("acme", "admin")])
    onboard(server, root, "gina@example.com", "Gina", [("globex", "admin")])
    owner_id = onboard(server, root, "olga@example.com", "Olga", [("acme", "owner")])
    alice = server.login("alice@example.com", PASSWORD)
    gina = server.login("gina@example.com", PASSWORD)
    john = server.login(JOHN, PASSWORD)
    enrol(server, john)
    assert_problem(password_step(server), 401, "mfa-required")

    unknown = assert_problem(gina.post("/users/999999/mfa/reset"), 404, "not-found")
    walled = assert_problem(gina.post(f"/users/{john_id}/mfa/reset"), 404, "not-found")
    assert walled["detail"].replace(str(john_id), "N") == unknown["detail"].replace("999999", "N")
    assert_problem(alice.post(f"/users/{owner_id}/mfa/reset"), 403, "forbidden")
    assert_problem(alice.post(f"/users/{alice_id}/mfa/reset"), 403, "forbidden", "your own")
    assert_problem(john.post(f"/users/{john_id}/mfa/reset"), 404, "not-found")  # no users:read
    assert john.get("/auth/mfa").json()["totp"] is True  # nothing changed yet

    reset = alice.post(f"/users/{john_id}/mfa/reset")
    assert reset.status_code == 200, reset.text
    assert reset.json()["sessions_ended"] >= 1
    assert john.get("/auth/mfa").status_code == 401  # his sessions ended
    assert password_step(server).status_code == 200  # the password alone again
    assert_problem(alice.post(f"/users/{john_id}/mfa/reset"), 409, "conflict")
    with database(server) as session:
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.action == "mfa.reset"))
    assert event.workspace == "acme" and event.actor_name.startswith("Alice")
    assert event.after == {"totp": False, "sessions_ended": reset.json()["sessions_ended"]}


@contextmanager
def strict_gateway(server: LiveServer) -> Iterator[LiveServer]:
    """Another gateway on the same database, with RINGFENCE_MFA_REQUIRED=admins, started
    after the set-up (the usual one sets up the people: its super admin would have to
    enrol here), so its engine holds every grant."""
    settings = replace(server.settings, mfa_required="admins")
    app = create_app(settings)
    try:
        with serving(app) as httpd:
            yield LiveServer(
                f"http://127.0.0.1:{httpd.server_port}", app, settings, server.admin_password
            )
    finally:
        close_app(app)


def test_admins_must_enrol_and_can_do_nothing_else_until_done(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    onboard(server, root, JOHN, "John", [("acme", "viewer")])
    alice_id = onboard(server, root, "alice@example.com", "Alice", [("acme", "admin")])
    onboard(server, root, "bob@example.com", "Bob", [("acme", "admin")])
    with strict_gateway(server) as strict:
        admins_enrol(server, strict, alice_id)


def admins_enrol(server: LiveServer, strict: LiveServer, alice_id: int) -> None:

    # A viewer is not asked for anything.
    with strict.login(JOHN, PASSWORD) as john:
        assert john.get("/workspaces").status_code == 200
    # An admin's session is good only for enrolling.
    with strict.client() as anonymous:
        signed = anonymous.post(
            "/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
        )
    assert signed.status_code == 200, signed.text
    alice = strict.client(signed.json()["access_token"])
    for refused in (alice.get("/workspaces"), alice.get(f"/users/{alice_id}")):
        assert_problem(refused, 403, "mfa-enrolment-required", "two-step")
    assert_problem(
        alice.post("/auth/mfa/totp/remove", json={"code": "1"}), 403, "mfa-enrolment-required"
    )
    assert alice.get("/auth/mfa").json()["totp"] is False
    started = alice.post("/auth/mfa/totp")
    assert started.status_code == 201, started.text
    secret = started.json()["secret"]
    assert (
        alice.post("/auth/mfa/totp/confirm", json={"code": code_at(secret, 0)}).status_code == 200
    )
    assert alice.get("/workspaces").status_code == 200  # the same session, whole now
    # The policy holds: she cannot turn it off, and the password alone is not enough.
    assert_problem(
        alice.post("/auth/mfa/totp/remove", json={"code": code_at(secret, 30)}), 409, "conflict"
    )
    assert_problem(password_step(strict, "alice@example.com"), 401, "mfa-required")

    # The console walks a person who must enrol to the page, from everywhere.
    with httpx.Client(base_url=strict.url, timeout=30) as browser:
        form = browser.get("/console/sign-in")
        browser.post(
            "/console/sign-in",
            data={
                "email": "bob@example.com",
                "password": PASSWORD,
                "csrf_token": csrf_of(form.text),
            },
        )
        users = browser.get("/console/users")
        assert users.status_code == 303 and users.headers["Location"].endswith(
            "/console/account/two-step"
        )
        page = browser.get("/console/account/two-step")
        assert page.status_code == 200 and "requires two-step sign-in" in page.text
    with database(server) as session:
        actions = set(session.scalars(select(AuditEvent.action)))
    assert "mfa.enrolment_required" in actions


def test_a_workspace_requires_two_step_sign_in_of_its_members(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    onboard(server, root, JOHN, "John", [("acme", "viewer")])
    onboard(server, root, "alice@example.com", "Alice", [("acme", "admin")])
    onboard(server, root, "gina@example.com", "Gina", [("globex", "owner")])
    gina = server.login("gina@example.com", PASSWORD)
    alice = server.login("alice@example.com", PASSWORD)
    assert root.get("/workspaces/acme/mfa-policy").json() == {
        "workspace": "acme",
        "required": "off",
        "installation": "off",
    }
    # Another tenant's workspace does not exist for gina; an admin without settings:write
    # is refused; neither changes anything.
    unknown = assert_problem(
        gina.put("/workspaces/nope/mfa-policy", json={"required": "off"}), 404, "not-found"
    )
    walled = assert_problem(
        gina.put("/workspaces/acme/mfa-policy", json={"required": "off"}), 404, "not-found"
    )
    assert walled["detail"].replace("acme", "X") == unknown["detail"].replace("nope", "X")
    assert_problem(
        alice.put("/workspaces/acme/mfa-policy", json={"required": "admins"}), 403, "forbidden"
    )
    assert_problem(
        root.put("/workspaces/acme/mfa-policy", json={"required": "some"}), 422, "invalid-input"
    )

    set_ = root.put("/workspaces/acme/mfa-policy", json={"required": "everyone"})
    assert set_.status_code == 200 and set_.json()["required"] == "everyone"
    # John's next sign-in is good only for enrolling; globex's owner is not asked.
    with server.login(JOHN, PASSWORD) as john:
        assert_problem(john.get("/workspaces"), 403, "mfa-enrolment-required")
    with server.login("gina@example.com", PASSWORD) as again:
        assert again.get("/workspaces").status_code == 200
    with database(server) as session:
        [event] = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "workspace.mfa_policy_changed")
        )
    assert event.workspace == "acme" and event.after == {"mfa_required": "everyone"}


def test_enrolments_started_at_the_same_moment_get_one_factor_and_409s(
    server: LiveServer,
) -> None:
    """Two tabs (or a double click) starting an enrolment at once: one factor row for the
    person, and each request either started it (201) or is told of the other (409, as
    problem+json), never a 500 from the unique index."""
    admin = server.admin()
    create_workspaces(admin, "acme")
    onboard(server, admin, JOHN, "John", [("acme", "viewer")])
    clients = [server.login(JOHN, PASSWORD) for _ in range(6)]
    start = threading.Barrier(len(clients))
    answers: list[httpx.Response] = []

    def begin(client: httpx.Client) -> None:
        start.wait()
        answers.append(client.post("/auth/mfa/totp"))

    threads = [threading.Thread(target=begin, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted({answer.status_code for answer in answers}) in ([201], [201, 409]), [
        (answer.status_code, answer.text) for answer in answers
    ]
    for answer in answers:
        if answer.status_code == 409:
            assert_problem(answer, 409, "conflict", "same moment")
    with database(server) as session:
        assert len(session.scalars(select(MfaFactor)).all()) == 1
    assert clients[0].get("/auth/mfa").json()["pending"] is True
