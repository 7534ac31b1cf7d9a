"""Passkeys and a workspace that holds its people to its single sign-on (issue 19): a
passkey does not sign in, by itself, a person whose address's domain is verified by a
workspace requiring its connection (it would outlive their access at the provider); the
answer, after the passkey verified, points to the connection as a password's does.
Fixtures (a DNS server and an OpenID Connect provider on loopback, acme's connection and
verified domain) are test_workspace_sso_sign_in.py's."""

from __future__ import annotations

from sqlalchemy import select

from gateway.db.models import AuditEvent
from tests.console_support import sign_in
from tests.functional.test_mfa import database
from tests.functional.test_passkeys import (
    add_passkey,
    authenticator,
    passwordless,
    sign_in_options,
    signed_out,
)
from tests.functional.test_workspace_sso_sign_in import (  # noqa: F401 - fixtures
    Sso,
    acme,
    acme_idp,
    dns,
    settings,
)
from tests.helpers import PASSWORD, LiveServer, assert_problem


def test_a_passkey_does_not_sign_in_whom_a_workspace_holds_to_its_sso(
    server: LiveServer,
    acme: Sso,  # noqa: F811
) -> None:
    key = authenticator(server)
    eve = sign_in(server, "eve@acme.test", PASSWORD)
    assert add_passkey(eve, key, "Laptop").status_code == 201
    acme.set(require_sso=True)
    browser, token = signed_out(server)
    refused = passwordless(browser, token, key.get(sign_in_options(browser, token)))
    problem = assert_problem(refused, 403, "sso-required", "single sign-on")
    assert problem["sso_login"] == f"/auth/sso/connections/{acme.id}/login"
    assert browser.get("/console/account").status_code == 303  # not signed in
    with database(server) as session:
        [event] = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "auth.sso_required")
        )
    assert event.after is not None and event.after["method"] == "passkey"
    # The connection turned off holds nobody to it: the passkey signs in again.
    acme.set(enabled=False)
    fine = passwordless(browser, token, key.get(sign_in_options(browser, token)))
    assert fine.status_code == 200, fine.text
