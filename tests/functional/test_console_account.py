"""A person's own account, and an admin's reset of someone's two-step sign-in, in the
console (issue 23: every admin task of the API in the console), through real HTTP:

- On a person's page, whoever ``MfaService.factors_for_admin`` lets reset them sees
  whether they have two-step sign-in and **Reset two-step sign-in…**, a confirmation
  (panel with htmx, a page of its own without script) naming them and saying what
  happens, then the API's reset: the same ``mfa.reset`` audit event, their sessions end.
  Whom the admin sees but may not reset: nothing offered, the POST refused with the
  service's words; another workspace's person: the 404 of an unknown id.
- The account page changes one's own password (``POST /auth/password``'s service and
  rules: field errors beside the fields, focus on the first bad one; every other session
  ends, this browser carries on).
- The account page lists the invitations waiting for the signed-in person (``GET
  /invitations/mine``) by workspace name, and **Accept** gives their roles."""

from __future__ import annotations

import html
import re

import httpx
import pyotp
from sqlalchemy import select

from gateway.db.models import AuditEvent, MfaFactor
from tests.console_support import sign_in
from tests.functional.test_mfa import database
from tests.helpers import (
    PASSWORD,
    LiveServer,
    create_workspaces,
    invite,
    invite_and_accept,
    onboard,
)

UNKNOWN_ID = 2_000_000_000
NEW_PASSWORD = "a brand new passphrase, long"


def text(response: httpx.Response) -> str:
    """The page as a person reads it (entities such as &#39; unescaped)."""
    return html.unescape(response.text)


def main_part(response: httpx.Response, some_id: int) -> str:
    """The page's main part (the CSRF token differs), the id asked about as X."""
    main = response.text.split('<main id="main"', 1)[-1]
    return re.sub(rf"\b{some_id}\b", "X", main)


def enrol(server: LiveServer, email: str) -> httpx.Client:
    """Set up an authenticator app for ``email`` through the API; the session that did,
    still signed in."""
    person = server.login(email, PASSWORD)
    started = person.post("/auth/mfa/totp")
    assert started.status_code == 201, started.text
    code = pyotp.TOTP(started.json()["secret"]).now()
    confirmed = person.post("/auth/mfa/totp/confirm", json={"code": code})
    assert confirmed.status_code == 200, confirmed.text
    return person


def has_factor(server: LiveServer, user_id: int) -> bool:
    with database(server) as session:
        return session.scalar(select(MfaFactor.id).where(MfaFactor.user_id == user_id)) is not None


def password_step(server: LiveServer, email: str, password: str = PASSWORD) -> httpx.Response:
    with server.client() as anonymous:
        return anonymous.post("/auth/login", json={"email": email, "password": password})


# -- an admin resets a person's two-step sign-in ---------------------------------------


def test_an_admin_resets_a_persons_two_step_sign_in_from_their_page(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    john = onboard(server, root, "john@example.com", "John", [("acme", "viewer")])
    onboard(server, root, "alice@example.com", "Alice", [("acme", "admin")])
    dora = onboard(server, root, "dora@example.com", "Dora", [("acme", "editor")])
    johns_api = enrol(server, "john@example.com")  # his session stays signed in
    assert password_step(server, "john@example.com").status_code == 401  # a code is asked
    admin = sign_in(server, "alice@example.com", PASSWORD)

    # John's page: his two-step sign-in is on, and Alice may reset it.
    page = admin.get(f"/console/users/{john}")
    assert page.status_code == 200, page.text
    assert re.search(r'<dd id="two-step-state">On: an authenticator app, set up 20', page.text)
    confirm_url = f"/console/users/{john}/two-step/reset"
    assert (
        f'<a class="button danger" href="{confirm_url}" hx-get="{confirm_url}" '
        'hx-target="#panel">Reset two-step sign-in…' in page.text
    )
    assert '<section id="panel" aria-label="Action"></section>' in page.text
    # Dora has none: said so, and nothing to reset.
    doras = admin.get(f"/console/users/{dora}")
    assert "Off: the password alone signs them in" in doras.text
    assert "Reset two-step sign-in…" not in doras.text
    assert admin.get(f"/console/users/{dora}/two-step/reset").status_code == 409

    # The confirmation names him and says what happens; as a panel with htmx...
    panel = admin.client.get(confirm_url, headers={"HX-Request": "true"})
    assert panel.status_code == 200 and "<html" not in panel.text
    said = text(panel)
    assert "Reset John's two-step sign-in?" in said and "(john@example.com)" in said
    assert "password alone signs them in" in said and "Every sign-in session" in said
    assert f'hx-post="{confirm_url}" hx-target="#main" hx-select="#main"' in panel.text
    assert f'href="/console/users/{john}" data-close-panel>Cancel</a>' in panel.text
    # ...and a page of its own without script, whose Cancel leads back to his page.
    whole = admin.get(confirm_url)
    assert whole.status_code == 200 and "<html" in whole.text
    assert "Reset John's two-step sign-in?" in text(whole)
    assert f'<form method="post" action="{confirm_url}" class="row-buttons">' in whole.text
    assert f'<a class="button" href="/console/users/{john}">Cancel</a>' in whole.text
    assert has_factor(server, john)  # asking changed nothing

    # Without the form's CSRF token nothing happens.
    forged = admin.client.post(confirm_url, data={})
    assert forged.status_code == 403 and has_factor(server, john)

    done = admin.post(confirm_url, htmx=True)
    assert done.status_code == 200, done.text
    said = text(done)
    assert "Reset John's two-step sign-in" in said and "sign-in session" in said
    assert '<dd id="two-step-state">Off: the password alone signs them in</dd>' in done.text
    assert "Reset two-step sign-in…" not in done.text
    assert not has_factor(server, john)
    assert password_step(server, "john@example.com").status_code == 200  # the password alone
    assert johns_api.get("/auth/mfa").status_code == 401  # his sessions ended
    with database(server) as session:
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.action == "mfa.reset"))
    assert event.workspace == "acme" and event.actor_name.startswith("Alice")
    assert event.target_id == str(john) and event.after["totp"] is False
    # Done: nothing left to reset, the same 409 as the API's.
    assert admin.get(confirm_url).status_code == 409
    again = admin.post(confirm_url)
    assert again.status_code == 409 and "has no second factor" in again.text


def test_the_reset_is_offered_only_where_the_service_allows_it(server: LiveServer) -> None:
    """Olga (acme's owner) is beyond Alice's rights, Alice is herself, and Gina
    (globex's owner) does not see acme's John: nothing offered, the service's refusals,
    and for Gina the answer of an unknown id."""
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    john = onboard(server, root, "john@example.com", "John", [("acme", "viewer")])
    alice = onboard(server, root, "alice@example.com", "Alice", [("acme", "admin")])
    olga = onboard(server, root, "olga@example.com", "Olga", [("acme", "owner")])
    onboard(server, root, "gina@example.com", "Gina", [("globex", "owner")])
    for email in ("john@example.com", "olga@example.com"):
        enrol(server, email).close()
    admin = sign_in(server, "alice@example.com", PASSWORD)

    for person in (olga, alice):
        page = admin.get(f"/console/users/{person}")
        assert page.status_code == 200, page.text
        assert "Two-step sign-in</dt>" not in page.text  # not theirs to know, or her own
        assert "Reset two-step sign-in…" not in page.text
    refused = admin.post(f"/console/users/{olga}/two-step/reset")
    assert refused.status_code == 403
    assert "You cannot reset the factors of a holder of 'owner' in 'acme'" in text(refused)
    assert admin.get(f"/console/users/{olga}/two-step/reset").status_code == 403
    own = admin.post(f"/console/users/{alice}/two-step/reset")
    assert own.status_code == 403 and "your own" in text(own)
    assert has_factor(server, olga)

    gina = sign_in(server, "gina@example.com", PASSWORD)
    calls = {
        "page": lambda i: gina.get(f"/console/users/{i}"),
        "confirm": lambda i: gina.get(f"/console/users/{i}/two-step/reset"),
        "confirm (htmx)": lambda i: gina.client.get(
            f"/console/users/{i}/two-step/reset", headers={"HX-Request": "true"}
        ),
        "reset": lambda i: gina.post(f"/console/users/{i}/two-step/reset"),
    }
    for name, call in calls.items():
        unknown = call(UNKNOWN_ID)
        answer = call(john)
        assert unknown.status_code == answer.status_code == 404, (name, answer.text[:300])
        assert main_part(answer, john) == main_part(unknown, UNKNOWN_ID), name
        assert "John" not in answer.text and "acme" not in answer.text
    assert has_factor(server, john)
    with database(server) as session:
        assert session.scalar(select(AuditEvent).where(AuditEvent.action == "mfa.reset")) is None


# -- changing one's own password -------------------------------------------------------


def field_error(page: str, field_id: str) -> str | None:
    """The message shown beside a field, if the field is marked invalid and tied to it."""
    marked = re.search(rf'<input id="{field_id}"[^>]*aria-invalid="true"', page)
    message = re.search(rf'<p id="{field_id}-error" class="field-error">([^<]*)</p>', page)
    if not marked and not message:
        return None
    assert marked and message, page
    assert re.search(rf'<input id="{field_id}"[^>]*aria-describedby="[^"]*{field_id}-error', page)
    return html.unescape(message.group(1))


def focused(page: str) -> list[str]:
    """The ids of the fields that take the focus as the page loads."""
    return re.findall(r'<input id="([^"]+)"[^>]*\bautofocus\b', page)


def test_changing_your_own_password_on_the_account_page(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    val, api = invite_and_accept(server, root, "val@example.com", "Val", [("acme", "viewer")])
    console = sign_in(server, "val@example.com", PASSWORD)
    elsewhere = sign_in(server, "val@example.com", PASSWORD)  # another browser

    page = console.get("/console/account")
    assert page.status_code == 200
    assert '<form method="post" action="/console/account/password"' in page.text
    assert 'autocomplete="current-password"' in page.text
    assert 'autocomplete="new-password"' in page.text
    assert "ends every sign-in of yours everywhere else" in page.text
    assert not focused(page.text)

    # Empty: both fields say what is missing; focus on the first.
    empty = console.post("/console/account/password", {})
    assert empty.status_code == 422
    assert field_error(empty.text, "current-password") == "Type your current password"
    assert field_error(empty.text, "new-password") == "Type a new password"
    assert focused(empty.text) == ["current-password"]
    # A wrong current password: said beside it, counted like a failed sign-in.
    wrong = console.post(
        "/console/account/password",
        {"current_password": "not my password", "new_password": NEW_PASSWORD},
    )
    assert wrong.status_code == 422
    assert field_error(wrong.text, "current-password") == "The current password is not correct"
    assert field_error(wrong.text, "new-password") is None
    assert focused(wrong.text) == ["current-password"]
    # The API's password rules, beside the new password, which takes the focus.
    for weak, words in (
        ("short", "at least 12 characters"),
        ("aaaaaaaaaaaaaaaa", "too common or too easy to guess"),
        (PASSWORD, "must differ from the current one"),
    ):
        refused = console.post(
            "/console/account/password", {"current_password": PASSWORD, "new_password": weak}
        )
        assert refused.status_code == 422, weak
        said = field_error(refused.text, "new-password")
        assert said and words in said, (weak, said)
        assert field_error(refused.text, "current-password") is None
        assert focused(refused.text) == ["new-password"]
        # What was typed is never sent back into the page.
        assert not re.search(r'<input id="(current|new)-password"[^>]*value=', refused.text)
        assert PASSWORD not in refused.text
    assert password_step(server, "val@example.com").status_code == 200  # unchanged
    # Without the form's CSRF token nothing happens.
    forged = console.client.post(
        "/console/account/password",
        data={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert forged.status_code == 403
    assert password_step(server, "val@example.com").status_code == 200

    changed = console.post(
        "/console/account/password",
        {"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert changed.status_code == 200, changed.text
    assert "Your password is changed" in changed.text
    assert "Every other sign-in of yours has ended" in changed.text
    assert "ringfence_console=" in changed.headers["set-cookie"]
    # This browser carries on in its new session, with the new session's CSRF token...
    assert console.get("/console/account").status_code == 200
    again = console.post(
        "/console/account/password",
        {"current_password": NEW_PASSWORD, "new_password": "yet another long passphrase"},
    )
    assert again.status_code == 200, again.text
    # ...every other session ended: the other browser and the API token.
    assert elsewhere.get("/console/account").status_code == 303
    assert api.get(f"/users/{val}").status_code == 401
    assert password_step(server, "val@example.com").status_code == 401
    assert password_step(server, "val@example.com", NEW_PASSWORD).status_code == 401
    ok = password_step(server, "val@example.com", "yet another long passphrase")
    assert ok.status_code == 200
    with database(server) as session:
        actions = [
            e.action
            for e in session.scalars(
                select(AuditEvent).where(AuditEvent.action.like("auth.password_%"))
            )
        ]
    assert actions == [
        "auth.password_change_failed",
        "auth.password_changed",
        "auth.password_changed",
    ]


# -- invitations waiting for you -------------------------------------------------------


def test_an_invitation_waiting_for_you_is_accepted_on_the_account_page(
    server: LiveServer,
) -> None:
    """Val has an account in acme; globex's admin invites her to globex. Her account
    page lists the invitation with globex by name and the role, and Accept gives it."""
    root = server.admin()
    create_workspaces(root, "acme")
    made = root.post("/workspaces", json={"slug": "globex", "name": "Globex Corporation"})
    assert made.status_code == 201, made.text
    val = onboard(server, root, "val@example.com", "Val", [("acme", "viewer")])
    _, gina = invite_and_accept(server, root, "gina@example.com", "Gina", [("globex", "admin")])
    waiting = invite(gina, "val@example.com", [("globex", "editor")], "Val")
    others = invite(root, "pat@example.com", [("acme", "viewer")], "Pat")
    console = sign_in(server, "val@example.com", PASSWORD)

    page = console.get("/console/account")
    assert page.status_code == 200
    said = text(page)
    assert "Invitations waiting for you" in said
    assert (
        "Gina invites you as <strong>editor</strong> in <strong>Globex Corporation</strong>."
        in said
    )
    accept_url = f"/console/account/invitations/{waiting['id']}/accept"
    assert f'<form method="post" action="{accept_url}">' in page.text
    assert 'Accept<span class="visually-hidden"> (editor in Globex Corporation)</span>' in said
    roles = re.search(r'aria-labelledby="own-roles-title">(.*?)</table>', page.text, re.S)
    assert roles and "Acme" in roles.group(1) and "Globex" not in roles.group(1)

    # Someone else's invitation is the 404 of one that does not exist.
    unknown = console.post(f"/console/account/invitations/{UNKNOWN_ID}/accept")
    theirs = console.post(f"/console/account/invitations/{others['id']}/accept")
    assert unknown.status_code == theirs.status_code == 404
    assert main_part(theirs, others["id"]) == main_part(unknown, UNKNOWN_ID)
    assert "pat@" not in theirs.text
    # Without the form's CSRF token nothing happens.
    assert console.client.post(accept_url).status_code == 403
    assert root.get(f"/users/{val}").json()["roles"] == {"acme": ["viewer"]}

    accepted = console.post(accept_url)
    assert accepted.status_code == 200, accepted.text
    said = text(accepted)
    assert "Invitation accepted: you are now editor in Globex Corporation." in said
    roles = re.search(r'aria-labelledby="own-roles-title">(.*?)</table>', accepted.text, re.S)
    assert roles
    assert re.search(r"<td[^>]*>Globex Corporation</td><td[^>]*>editor</td>", roles.group(1))
    assert "None: no invitation addressed to val@example.com waits" in accepted.text
    assert root.get(f"/users/{val}").json()["roles"] == {
        "acme": ["viewer"],
        "globex": ["editor"],
    }
    # Gina now sees her account as a member of globex, with globex's roles only.
    member = [u for u in gina.get("/users", params={"q": "val@"}).json()]
    assert [(u["id"], u["roles"]) for u in member] == [(val, {"globex": ["editor"]})]
    with database(server) as session:
        [event] = session.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "invitation.accepted",
                AuditEvent.workspace == "globex",
                AuditEvent.target_id == str(waiting["id"]),
            )
        )
    assert event.actor_name.startswith("Val") and event.after["roles"]["globex"] == ["editor"]
    # Accepted already: the service's conflict, nothing more.
    twice = console.post(accept_url)
    assert twice.status_code == 409 and "accepted" in twice.text
