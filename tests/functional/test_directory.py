"""Company directories over SCIM 2.0, through HTTP: directory connections in the admin
API (token shown once, stored hashed, rotated, revoked, audited, per workspace), the
SCIM endpoints a directory calls (users linked or created, deactivated at once, groups
mapped to roles), the dialects of Okta and Microsoft Entra, and the wall between two
workspaces' directories."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from functools import partial
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.app import create_app
from gateway.config import Settings
from gateway.db.models import DirectoryConnection, DirectoryUser, User
from gateway.db.session import make_engine
from gateway.identity.security import token_digest
from tests.helpers import (
    PASSWORD,
    LiveServer,
    allowed,
    assert_problem,
    close_app,
    create_workspaces,
    invite_and_accept,
    onboard,
    outbox_messages,
    serving,
    user_id_of,
)

SCIM = "/scim/v2"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"


def connect(admin: httpx.Client, workspace: str, **roles: Any) -> tuple[int, str]:
    """A new directory connection of ``workspace``: its id and token."""
    response = admin.post(
        "/directory-connections", json={"workspace": workspace, "name": "Okta", **roles}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return body["connection"]["id"], body["token"]


def scim_client(server: LiveServer, token: str) -> httpx.Client:
    client = server.client(token)
    client.headers["Content-Type"] = "application/scim+json"
    return client


def scim_user(user_name: str, email: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "schemas": [USER_SCHEMA],
        "userName": user_name,
        "name": {"givenName": "Ada", "familyName": "Lovelace"},
        "emails": [{"value": email or user_name, "type": "work", "primary": True}],
        "active": True,
        **extra,
    }


def created(scim: httpx.Client, body: dict[str, Any], endpoint: str = "Users") -> dict[str, Any]:
    response = scim.post(f"{SCIM}/{endpoint}", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def assert_scim_error(response: httpx.Response, status: int, scim_type: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["schemas"] == [ERROR], body
    assert body["status"] == str(status), body
    assert body["detail"], body
    if scim_type is not None:
        assert body["scimType"] == scim_type, body


def audit_actions(admin: httpx.Client, workspace: str) -> list[str]:
    response = admin.get("/audit", params={"workspace": workspace, "per_page": 100})
    assert response.status_code == 200, response.text
    return [event["action"] for event in response.json()]


def test_connections_token_once_hashed_rotated_revoked_and_audited(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme", "globex")
    connection_id, token = connect(admin, "acme", default_role="viewer")
    assert token.startswith("rfd_")
    listed = admin.get("/directory-connections", params={"workspace": "acme"}).json()
    assert [c["id"] for c in listed] == [connection_id]
    assert token not in str(listed)
    assert listed[0]["scim_base_url"] == server.url + SCIM
    # Stored as its SHA-256 only.
    with Session(make_engine(server.settings.sqlalchemy_url)) as session:
        stored = session.scalars(select(DirectoryConnection)).one()
        assert stored.token_hash == token_digest(token)
        assert token not in str(vars(stored))

    with scim_client(server, token) as scim:
        assert scim.get(f"{SCIM}/Users").status_code == 200
        rotated = admin.post(f"/directory-connections/{connection_id}/rotate-token")
        assert rotated.status_code == 200, rotated.text
        new_token = rotated.json()["token"]
        assert_scim_error(scim.get(f"{SCIM}/Users"), 401)
    with scim_client(server, new_token) as scim:
        assert scim.get(f"{SCIM}/Users").status_code == 200
        assert admin.delete(f"/directory-connections/{connection_id}").status_code == 200
        refused = scim.get(f"{SCIM}/Users")
        assert_scim_error(refused, 401)
        assert "Bearer" in refused.headers.get("WWW-Authenticate", "")
    assert {
        "directory.connection.created",
        "directory.connection.token_rotated",
        "directory.connection.revoked",
    } <= set(audit_actions(admin, "acme"))


def test_only_who_manages_the_workspace_directory(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme", "globex")
    globex_id, _ = connect(admin, "globex")
    _, acme_admin = invite_and_accept(server, admin, "ann@acme.test", "Ann", [("acme", "admin")])
    _, acme_editor = invite_and_accept(server, admin, "ed@acme.test", "Ed", [("acme", "editor")])
    # An acme admin connects acme, not globex, and never sees globex's connection.
    connect(acme_admin, "acme", group_roles={"Engineering": "editor"})
    refused = acme_admin.post("/directory-connections", json={"workspace": "globex", "name": "x"})
    assert_problem(refused, 403, "forbidden")
    assert_problem(acme_admin.get(f"/directory-connections/{globex_id}"), 404, "not-found")
    assert_problem(
        acme_admin.post(f"/directory-connections/{globex_id}/rotate-token"), 404, "not-found"
    )
    assert all(c["workspace"] == "acme" for c in acme_admin.get("/directory-connections").json())
    # No escalation through a mapping: an admin cannot map a group to owner.
    escalating = acme_admin.post(
        "/directory-connections",
        json={"workspace": "acme", "name": "x", "group_roles": {"it": "owner"}},
    )
    assert_problem(escalating, 403, "forbidden")
    assert_problem(
        acme_editor.post("/directory-connections", json={"workspace": "acme", "name": "x"}),
        403,
        "forbidden",
    )


def test_provisioning_deactivation_groups_and_the_wall(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme", "globex")
    # Someone with an account already (in globex): linked by acme's directory, not copied.
    existing = onboard(server, admin, "grace@example.com", "Grace Hopper", [("globex", "viewer")])
    acme_id, acme_token = connect(admin, "acme", group_roles={"Engineering": "editor"})
    _, globex_token = connect(admin, "globex")
    mails_before = len(outbox_messages(server.settings))

    with scim_client(server, acme_token) as acme, scim_client(server, globex_token) as globex:
        ada = created(acme, scim_user("ada@example.com", externalId="00u1"))
        assert ada["active"] is True and ada["userName"] == "ada@example.com"
        assert ada["meta"]["version"] and ada["meta"]["location"].endswith(ada["id"])
        grace = created(
            acme,
            scim_user(
                "Grace@Example.com",
                schemas=[USER_SCHEMA, ENTERPRISE],
                **{ENTERPRISE: {"employeeNumber": "42"}},
            ),
        )
        assert grace[ENTERPRISE]["employeeNumber"] == "42"
        assert len(outbox_messages(server.settings)) == mails_before  # no invitation email
        with Session(make_engine(server.settings.sqlalchemy_url)) as session:
            accounts = session.scalars(
                select(User).where(User.email.in_(["ada@example.com", "grace@example.com"]))
            ).all()
            assert len(accounts) == 2
            linked = next(a for a in accounts if a.email == "grace@example.com")
            assert linked.id == existing and linked.name == "Grace Hopper"

        # Uniqueness, case-insensitive, per directory.
        assert_scim_error(
            acme.post(f"{SCIM}/Users", json=scim_user("ADA@example.com")), 409, "uniqueness"
        )
        found = acme.get(f"{SCIM}/Users", params={"filter": 'userName eq "ADA@EXAMPLE.COM"'})
        assert found.json()["totalResults"] == 1 and found.json()["schemas"] == [LIST]
        nothing = acme.get(f"{SCIM}/Users", params={"filter": 'userName eq "nobody@example.com"'})
        assert nothing.json()["totalResults"] == 0
        for external_id in ("00u1", "00U1"):  # externalId: unique and found in any case
            by_id = acme.get(f"{SCIM}/Users", params={"filter": f'externalId eq "{external_id}"'})
            assert [u["id"] for u in by_id.json()["Resources"]] == [ada["id"]]
        assert_scim_error(
            acme.post(f"{SCIM}/Users", json=scim_user("ann@example.com", externalId="00U1")),
            409,
            "uniqueness",
        )
        # One account, one user of a directory: another userName with Ada's address is
        # refused, at creation and when a user without an address is given hers.
        assert_scim_error(
            acme.post(f"{SCIM}/Users", json=scim_user("ada.l", email="Ada@Example.com")),
            409,
            "uniqueness",
        )
        nameless = created(acme, {**scim_user("lovelace"), "emails": []})
        assert_scim_error(
            acme.put(
                f"{SCIM}/Users/{nameless['id']}", json=scim_user("lovelace", "ada@example.com")
            ),
            409,
            "uniqueness",
        )
        assert acme.delete(f"{SCIM}/Users/{nameless['id']}").status_code == 204
        # The allowed email domains, as stored at run time, hold for new accounts too.
        limited = admin.patch("/settings/email", json={"allowed_domains": ["example.org"]})
        assert limited.status_code == 200, limited.text
        assert_scim_error(
            acme.post(f"{SCIM}/Users", json=scim_user("eve@example.net")), 400, "invalidValue"
        )
        assert admin.patch("/settings/email", json={"allowed_domains": []}).status_code == 200
        work = acme.get(
            f"{SCIM}/Users", params={"filter": 'emails[type eq "work"].value co "ada@"'}
        )
        assert [u["id"] for u in work.json()["Resources"]] == [ada["id"]]
        page = acme.get(f"{SCIM}/Users", params={"startIndex": 2, "count": 1}).json()
        assert page["totalResults"] == 2 and page["itemsPerPage"] == 1
        assert page["Resources"][0]["id"] == grace["id"]

        # A group mapped to editor: its members get it at once.
        assert not allowed(server, "ada@example.com", "acme", "write")
        engineering = created(
            acme,
            {"schemas": [GROUP_SCHEMA], "displayName": "engineering", "members": []},
            "Groups",
        )
        patched = acme.patch(
            f"{SCIM}/Groups/{engineering['id']}",
            json={
                "schemas": [PATCH_OP],
                "Operations": [
                    {"op": "add", "path": "members", "value": [{"value": ada["id"]}]},
                    {"op": "add", "path": "members", "value": [{"value": grace["id"]}]},
                ],
            },
        )
        assert patched.status_code in (200, 204), patched.text
        assert allowed(server, "ada@example.com", "acme", "write")
        assert allowed(server, "grace@example.com", "acme", "write")
        # A role the directory gave is not taken by hand (its mapping or groups decide).
        ada_account = user_id_of(admin, "ada@example.com")
        by_hand = admin.delete(f"/users/{ada_account}/grants/acme/editor")
        assert_problem(by_hand, 409, "conflict", "company directory")
        replaced = admin.put(f"/users/{ada_account}/workspaces/acme/roles", json={"roles": []})
        assert_problem(replaced, 409, "conflict", "company directory")
        # The API says which roles the directory gave, on a person and in lists.
        shown = admin.get(f"/users/{ada_account}").json()
        assert shown["directory_roles"] == {"acme": ["editor"]}
        assert "editor" in shown["roles"]["acme"]
        [listed] = admin.get("/users", params={"q": "ada@"}).json()
        assert listed["directory_roles"] == {"acme": ["editor"]}
        grace_view = admin.get(f"/users/{user_id_of(admin, 'grace@example.com')}").json()
        assert grace_view["directory_roles"] == {"acme": ["editor"]}
        assert "globex" in grace_view["roles"]  # granted by hand: not the directory's
        # globex's admin: of Grace (in both) nothing of acme's; Ada is an unknown id.
        onboard(server, admin, "gus@example.com", "Gus", [("globex", "admin")])
        with server.login("gus@example.com", PASSWORD) as gus:
            seen = gus.get(f"/users/{existing}").json()
            assert (seen["roles"], seen["directory_roles"]) == ({"globex": ["viewer"]}, {})
            [listed_by_gus] = gus.get("/users", params={"q": "grace@"}).json()
            assert listed_by_gus["directory_roles"] == {}
            assert_problem(gus.get(f"/users/{ada_account}"), 404, "not-found")
            assert_problem(gus.get("/users/999999"), 404, "not-found")
        assert not allowed(server, "ada@example.com", "globex", "read")
        removed = acme.patch(
            f"{SCIM}/Groups/{engineering['id']}",
            json={
                "schemas": [PATCH_OP],
                "Operations": [
                    {"op": "remove", "path": f'members[value eq "{grace["id"]}"]'},
                ],
            },
        )
        assert removed.status_code in (200, 204), removed.text
        assert not allowed(server, "grace@example.com", "acme", "read")
        assert allowed(server, "grace@example.com", "globex", "read")  # her other workspace

        # Another workspace's directory sees and touches nothing of acme's.
        assert globex.get(f"{SCIM}/Users").json()["totalResults"] == 0
        assert_scim_error(globex.get(f"{SCIM}/Users/{ada['id']}"), 404)
        assert_scim_error(
            globex.put(f"{SCIM}/Users/{ada['id']}", json=scim_user("ada@example.com")), 404
        )
        assert_scim_error(
            globex.patch(
                f"{SCIM}/Groups/{engineering['id']}",
                json={"schemas": [PATCH_OP], "Operations": [{"op": "remove", "path": "members"}]},
            ),
            404,
        )
        assert_scim_error(globex.delete(f"{SCIM}/Users/{ada['id']}"), 404)
        # Nor can it put acme's people in its own groups.
        assert_scim_error(
            globex.post(
                f"{SCIM}/Groups",
                json={
                    "schemas": [GROUP_SCHEMA],
                    "displayName": "x",
                    "members": [{"value": ada["id"]}],
                },
            ),
            400,
        )

        # Okta's deactivation: PATCH without a path, a value object. Denied at once.
        okta = acme.patch(
            f"{SCIM}/Users/{ada['id']}",
            json={
                "schemas": [PATCH_OP],
                "Operations": [{"op": "replace", "value": {"active": False}}],
            },
        )
        assert okta.status_code in (200, 204), okta.text
        assert not allowed(server, "ada@example.com", "acme", "write")
        still = acme.get(f"{SCIM}/Users/{ada['id']}").json()
        assert still["active"] is False  # deactivated people stay visible (Entra)
        inactive = acme.get(f"{SCIM}/Users", params={"filter": "active eq false"}).json()
        assert [u["id"] for u in inactive["Resources"]] == [ada["id"]]
        # A stale ETag changes nothing.
        stale = acme.put(
            f"{SCIM}/Users/{ada['id']}",
            json=scim_user("ada@example.com"),
            headers={"If-Match": ada["meta"]["version"]},
        )
        assert_scim_error(stale, 412)
        # Entra's: a capitalised op and "True" as a string, with a path.
        entra = acme.patch(
            f"{SCIM}/Users/{ada['id']}",
            json={
                "schemas": [PATCH_OP],
                "Operations": [{"op": "Replace", "path": "active", "value": "True"}],
            },
        )
        assert entra.status_code in (200, 204), entra.text
        assert allowed(server, "ada@example.com", "acme", "write")  # the group's role again
        email_path = acme.patch(
            f"{SCIM}/Users/{ada['id']}",
            json={
                "schemas": [PATCH_OP],
                "Operations": [
                    {
                        "op": "Replace",
                        "path": 'emails[type eq "work"].value',
                        "value": "ada.l@example.com",
                    }
                ],
            },
        )
        assert email_path.status_code in (200, 204), email_path.text
        assert acme.get(f"{SCIM}/Users/{ada['id']}").json()["emails"][0]["value"] == (
            "ada.l@example.com"
        )
        # Her account was created by this directory: it follows (checks by email too).
        assert allowed(server, "ada.l@example.com", "acme", "write")

        # DELETE removes them from the workspace; the account stays.
        assert acme.delete(f"{SCIM}/Users/{ada['id']}").status_code == 204
        assert not allowed(server, "ada.l@example.com", "acme", "read")
        assert_scim_error(acme.get(f"{SCIM}/Users/{ada['id']}"), 404)

    actions = audit_actions(admin, "acme")
    assert {
        "directory.user.created",
        "directory.user.linked",
        "directory.user.deactivated",
        "directory.user.reactivated",
        "directory.user.removed",
        "directory.group.members_changed",
        "directory.roles_changed",
    } <= set(actions)
    events = admin.get("/audit", params={"workspace": "acme", "per_page": 100}).json()
    synced = [e for e in events if e["action"] == "directory.roles_changed"]
    assert all(f"directory:{acme_id}" == e.get("actor_client_id") for e in synced), synced[:1]


def test_leaving_ends_access_and_sessions_when_nothing_is_left(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    hal_id, hal = invite_and_accept(server, admin, "hal@example.com", "Hal", [("acme", "viewer")])
    assert hal.get("/invitations/mine").status_code == 200
    _, token = connect(admin, "acme", default_role="editor")
    with scim_client(server, token) as acme:
        linked = created(acme, scim_user("HAL@example.com"))
        assert allowed(server, "hal@example.com", "acme", "write")  # the default role
        # Entra deactivates with a string.
        gone = acme.patch(
            f"{SCIM}/Users/{linked['id']}",
            json={
                "schemas": [PATCH_OP],
                "Operations": [{"op": "Replace", "path": "active", "value": "False"}],
            },
        )
        assert gone.status_code in (200, 204), gone.text
    # Every role in acme went (the one granted by hand too): no access left, so her
    # sessions ended with it.
    assert not allowed(server, "hal@example.com", "acme", "read")
    assert hal.get("/invitations/mine").status_code == 401
    assert admin.get(f"/users/{hal_id}").json()["roles"] == {}


@contextmanager
def acme_directory(
    settings: Settings, admin_password: str, **changes: Any
) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """A gateway of its own with ``changes`` to the settings, workspace acme and a
    directory connection of it: the admin's client and the directory's."""
    app = create_app(replace(settings, **changes))
    try:
        with serving(app) as httpd:
            server = LiveServer(
                f"http://127.0.0.1:{httpd.server_port}", app, settings, admin_password
            )
            admin = server.admin()
            create_workspaces(admin, "acme")
            _, token = connect(admin, "acme")
            with scim_client(server, token) as scim:
                yield admin, scim
    finally:
        close_app(app)


def test_a_flooding_directory_is_answered_429(settings: Settings, admin_password: str) -> None:
    limited = {"scim_requests_per_connection": "3 per minute"}
    with acme_directory(settings, admin_password, **limited) as (_, scim):
        for _ in range(3):
            assert scim.get(f"{SCIM}/Users").status_code == 200
        flooded = scim.get(f"{SCIM}/Users")
        assert_scim_error(flooded, 429)
        assert int(flooded.headers["Retry-After"]) >= 1


def test_the_environments_allowed_domains_hold_until_an_admin_stores_others(
    settings: Settings, admin_password: str
) -> None:
    """RINGFENCE_ALLOWED_EMAIL_DOMAINS holds for the accounts a directory creates while
    no admin stored a list; a stored list, even an empty one (any domain), wins."""
    domains = {"allowed_email_domains": "example.org"}
    with acme_directory(settings, admin_password, **domains) as (admin, scim):
        assert_scim_error(
            scim.post(f"{SCIM}/Users", json=scim_user("eve@example.net")), 400, "invalidValue"
        )
        created(scim, scim_user("olga@example.org"))
        stored = admin.patch("/settings/email", json={"allowed_domains": []})
        assert stored.status_code == 200, stored.text
        created(scim, scim_user("eve@example.net"))


def test_the_answer_to_a_creation_is_what_reading_the_user_gives(server: LiveServer) -> None:
    """Okta's, Entra's and bare creations (a password, read-only groups and the enterprise
    extension among them): the 201's body, ETag and location are the GET's after it."""
    admin = server.admin()
    create_workspaces(admin, "acme")
    _, token = connect(admin, "acme")
    bodies = [
        scim_user(
            "okta.user@example.com",
            externalId="00u1abc",
            displayName="Okta User",
            locale="en-US",
            password="Sup3r-secret-passw0rd",
        ),
        {
            "schemas": [USER_SCHEMA, ENTERPRISE],
            "userName": "entra.user@example.com",
            "externalId": "e3f1-77",
            "active": False,
            "name": {"formatted": "Entra User", "familyName": "User", "givenName": "Entra"},
            "emails": [{"value": "entra.user@example.com", "type": "work", "primary": True}],
            "phoneNumbers": [{"value": "+44 20 7946 0000", "type": "work"}],
            "addresses": [{"type": "work", "country": "GB", "formatted": "London"}],
            "title": "Engineer",
            ENTERPRISE: {"employeeNumber": "1701", "department": "Research"},
        },
        {"schemas": [USER_SCHEMA], "userName": "no-address"},
        scim_user("grouped@example.com", groups=[{"value": "nope", "display": "sent"}]),
    ]
    with scim_client(server, token) as scim:
        for body in bodies:
            answer = scim.post(f"{SCIM}/Users", json=body)
            assert answer.status_code == 201, answer.text
            location = answer.json()["meta"]["location"]
            assert answer.headers["Location"] == location
            read = scim.get(location)
            assert read.status_code == 200, read.text
            assert answer.json() == read.json()
            assert answer.headers["ETag"] == read.headers["ETag"]
            assert "password" not in answer.json() and "groups" not in answer.json()


def test_the_same_person_pushed_at_once_is_created_once(server: LiveServer) -> None:
    """A directory retrying a creation still in flight, or pushing one person (or group)
    on two connections at once: both pass the uniqueness read before either writes. The
    second write is refused by the database's constraint, and answered 409 as the read
    would have answered it, never 500; the person exists once."""
    admin = server.admin()
    create_workspaces(admin, "acme")
    _, token = connect(admin, "acme")
    pushers = 4
    with ExitStack() as stack:  # a connection each
        clients = [stack.enter_context(scim_client(server, token)) for _ in range(pushers)]
        for attempt in range(5):
            # The same userName; then another userName with the same address.
            bodies = [
                scim_user(f"race{attempt}@example.com")
                if n % 2 == 0 or attempt % 2 == 0
                else scim_user(f"race{attempt}.{n}", email=f"race{attempt}@example.com")
                for n in range(pushers)
            ]
            statuses = at_once(
                *(
                    partial(client.post, f"{SCIM}/Users", json=body)
                    for client, body in zip(clients, bodies, strict=True)
                )
            )
            assert sorted(statuses) == [201] + [409] * (pushers - 1), statuses
        # A group's displayName, the same way.
        group = {"schemas": [GROUP_SCHEMA], "displayName": "Racers", "members": []}
        statuses = at_once(*(partial(c.post, f"{SCIM}/Groups", json=group) for c in clients))
        assert sorted(statuses) == [201] + [409] * (pushers - 1), statuses
    with scim_client(server, token) as scim:
        listed = scim.get(f"{SCIM}/Users", params={"filter": 'userName sw "race"'}).json()
        groups = scim.get(f"{SCIM}/Groups").json()
    assert listed["totalResults"] == 5
    assert groups["totalResults"] == 1


def test_two_directories_pushing_one_new_person_at_once_share_the_account(
    server: LiveServer,
) -> None:
    """Two workspaces' directories create the same new person at once: both pass the
    read that finds no account, one creates it, the other's insert meets the email's
    constraint. That one links the account made meanwhile, as it would have a moment
    later: both 201, one account, never 500."""
    admin = server.admin()
    create_workspaces(admin, "acme", "globex")
    acme, globex = (scim_client(server, connect(admin, w)[1]) for w in ("acme", "globex"))
    with acme, globex:
        for attempt in range(6):
            body = scim_user(f"both{attempt}@example.com")
            statuses = at_once(
                *(partial(c.post, f"{SCIM}/Users", json=body) for c in (acme, globex))
            )
            assert statuses == [201, 201], statuses
        with Session(make_engine(server.settings.sqlalchemy_url)) as session:
            accounts = session.scalars(select(User.email).where(User.email.like("both%"))).all()
            links = session.scalars(
                select(DirectoryUser.user_id).where(DirectoryUser.user_name.like("both%"))
            ).all()
        assert sorted(accounts) == sorted(f"both{n}@example.com" for n in range(6))
        assert len(links) == 12 and len(set(links)) == 6  # each account linked by both

        # The same when one directory's replacement gives someone their first address
        # while the other directory creates the account for it.
        for attempt in range(6):
            email = f"late{attempt}@example.com"
            no_address = {"schemas": [USER_SCHEMA], "userName": f"late{attempt}"}
            member = created(acme, no_address)
            replaced = scim_user(f"late{attempt}", email=email)
            statuses = at_once(
                partial(acme.put, f"{SCIM}/Users/{member['id']}", json=replaced),
                partial(globex.post, f"{SCIM}/Users", json=scim_user(email)),
            )
            assert sorted(statuses) == [200, 201], statuses
    with Session(make_engine(server.settings.sqlalchemy_url)) as session:
        late = session.scalars(select(User.id).where(User.email.like("late%"))).all()
        linked = session.scalars(
            select(DirectoryUser.user_id).where(DirectoryUser.user_name.like("late%"))
        ).all()
    assert len(late) == 6 and sorted(linked) == sorted([*late, *late])


def at_once(*requests: Callable[[], httpx.Response]) -> list[int]:
    """The statuses of ``requests``, each sent from its own thread at the same moment."""
    barrier = threading.Barrier(len(requests))
    statuses: list[int] = []

    def send(request: Callable[[], httpx.Response]) -> None:
        barrier.wait()
        statuses.append(request().status_code)

    threads = [threading.Thread(target=send, args=(request,)) for request in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return statuses
