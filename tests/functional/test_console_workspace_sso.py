"""A workspace's own single sign-on in the web console: its owner sets up the connection
and proves a domain on /console/sso (against the loopback OpenID Connect provider and
DNS server), and the sign-in page routes that domain's people to it: no password typed,
straight to the provider; a password where the workspace requires its connection,
refused in words with the way to go."""

from __future__ import annotations

import html
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest

from gateway.config import Settings
from tests.console_support import Console, csrf_of, sign_in
from tests.dns_server import Zone, running_dns
from tests.functional.test_workspace_sso_sign_in import PUBLIC_URL, SECRET
from tests.helpers import PASSWORD, LiveServer, create_workspaces, invite_and_accept, user_id_of
from tests.oidc_provider import OidcProvider, Person, running_provider


@pytest.fixture
def dns() -> Iterator[Zone]:
    with running_dns() as zone:
        yield zone


@pytest.fixture
def idp() -> Iterator[OidcProvider]:
    with running_provider("ringfence-acme", SECRET, "") as running:
        yield running


@pytest.fixture
def settings(settings: Settings, dns: Zone) -> Settings:
    return replace(
        settings, sso_allow_private_issuers=True, dns_nameservers=dns.address, dns_timeout=2.0
    )


def text(page: httpx.Response) -> str:
    return html.unescape(page.text)


def set_up_in_the_console(server: LiveServer, dns: Zone, idp: OidcProvider, olivia: Console) -> int:
    """Olivia sets up acme's connection and proves acme.test on /console/sso; its id."""
    page = olivia.get("/console/sso")
    assert page.status_code == 200 and "Connection of acme" in page.text, page.text[:500]
    assert 'href="/console/sso"' in page.text  # in the navigation
    form = {
        "name": "Acme IdP",
        "issuer": idp.issuer,
        "client_id": "ringfence-acme",
        "client_secret": SECRET,
        "enabled": "on",
    }
    bad = olivia.post("/console/sso/acme/connection", {**form, "issuer": "ftp://nope"})
    assert bad.status_code == 422 and 'id="sso-issuer-error"' in bad.text
    made = olivia.post("/console/sso/acme/connection", form)
    assert made.status_code == 200, made.text[:500]
    [connection] = server.admin().get("/sso-connections").json()
    assert connection["redirect_uri"] in made.text and SECRET not in made.text
    idp.client.redirect_uri = connection["redirect_uri"]
    checked = olivia.post("/console/sso/acme/connection/check")
    assert "The provider answers" in text(checked)

    claimed = olivia.post("/console/sso/acme/domains", {"domain": "acme.test"})
    assert claimed.status_code == 201, claimed.text[:500]
    [claim] = server.admin().get("/sso-domains").json()
    assert claim["txt_value"] in claimed.text
    refused = olivia.post(f"/console/sso/domains/{claim['id']}/verify")
    assert refused.status_code == 409 and "does not exist" in text(refused)
    dns.publish(claim["txt_name"], claim["txt_value"])
    verified = olivia.post(f"/console/sso/domains/{claim['id']}/verify")
    assert verified.status_code == 200 and "acme.test is verified." in text(verified)
    return int(connection["id"])


def test_an_owner_sets_up_single_sign_on_and_its_domains_people_are_routed_to_it(
    server: LiveServer, dns: Zone, idp: OidcProvider
) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    invite_and_accept(server, root, "olivia@acme.test", "Olivia", [("acme", "owner")])
    invite_and_accept(server, root, "eve@acme.test", "Eve", [("acme", "viewer")])
    olivia = sign_in(server, "olivia@acme.test", PASSWORD)
    cid = set_up_in_the_console(server, dns, idp, olivia)

    # Eve types her address and no password: to the provider, and back signed in.
    idp.user = Person("idp-eve", "eve@acme.test")
    browser = httpx.Client(base_url=server.url, timeout=30)
    page = browser.get("/console/sign-in")
    routed = browser.post(
        "/console/sign-in",
        data={"email": "eve@acme.test", "password": "", "csrf_token": csrf_of(page.text)},
    )
    assert routed.status_code == 303, routed.text[:500]
    start = browser.get(routed.headers["Location"])
    assert start.status_code == 303
    location = start.headers["Location"]
    assert location.startswith(f"/auth/sso/connections/{cid}/login?next=console")
    to_idp = browser.get(location)
    assert to_idp.status_code == 302 and "login_hint=eve%40acme.test" in to_idp.headers["Location"]
    callback = httpx.get(to_idp.headers["Location"], timeout=30).headers["Location"]
    done = browser.get(callback.replace(PUBLIC_URL, server.url, 1))
    assert done.status_code == 303, done.text[:500]
    landed = browser.get(done.headers["Location"].replace(PUBLIC_URL, server.url, 1))
    assert landed.status_code == 303, landed.text[:500]  # signed in: on to her first page
    assert browser.get("/console/account").status_code == 200

    # Required: a password for an acme.test address is refused in words, with the way.
    made = olivia.post(
        "/console/sso/acme/connection",
        {"name": "Acme IdP", "issuer": idp.issuer, "client_id": "ringfence-acme"}
        | {"enabled": "on", "require_sso": "on"},
    )
    assert "required for the verified domains" in made.text
    other = httpx.Client(base_url=server.url, timeout=30)
    page = other.get("/console/sign-in")
    refused = other.post(
        "/console/sign-in",
        data={"email": "eve@acme.test", "password": PASSWORD, "csrf_token": csrf_of(page.text)},
    )
    assert refused.status_code == 403
    words = text(refused)
    assert "People at acme.test sign in with their organisation's single sign-on" in words
    assert f'id="sso-route" href="/console/sso/start?connection={cid}' in refused.text

    # Eve is linked: her owner sees it, with the back-channel logout URI to register,
    # and unlinks her after a confirmation; her console session through it ends.
    page = text(olivia.get("/console/sso"))
    assert f"{PUBLIC_URL}/auth/sso/connections/{cid}/backchannel-logout" in page
    assert "idp-eve" in page and "eve@acme.test" in page
    eve = user_id_of(root, "eve@acme.test")
    confirm = olivia.get(f"/console/sso/acme/links/{eve}/unlink")
    assert confirm.status_code == 200 and "Unlink Eve?" in text(confirm)
    assert 'id="unlink-title"' in confirm.text and "subject <code>idp-eve</code>" in confirm.text
    forged = olivia.client.post(f"/console/sso/acme/links/{eve}/unlink")  # no CSRF token
    assert forged.status_code == 403
    done = text(olivia.post(f"/console/sso/acme/links/{eve}/unlink"))
    assert "Unlinked Eve <eve@acme.test>; 1 session started through the connection" in done
    assert "They can still sign in with: password." in done
    assert "Nobody has signed in through it yet." in done
    assert browser.get("/console/account").status_code == 303  # signed out
    again = olivia.get(f"/console/sso/acme/links/{eve}/unlink")
    assert again.status_code == 404
