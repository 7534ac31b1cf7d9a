"""Okta's SCIM 2.0 spec test (tests/conformance/scim/, with its source), every step over
HTTP against the live gateway with Okta's headers, then what Okta does in production
that the export leaves out: deactivation by PATCH without a path, PUT, group push."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from tests.functional.test_directory import (
    ERROR,
    GROUP_SCHEMA,
    LIST,
    PATCH_OP,
    SCIM,
    USER_SCHEMA,
    connect,
)
from tests.helpers import LiveServer, allowed, create_workspaces

STEPS = json.loads(
    (
        Path(__file__).parents[1] / "conformance" / "scim" / "okta_scim20_spec_test_steps.json"
    ).read_text()
)


def value_at(body: dict[str, Any], path: str) -> Any:
    """``name.givenName``, ``Resources[0].id``, ``emails[0].value`` in ``body``."""
    current: Any = body
    for part in path.split("."):
        name, _, index = part.partition("[")
        current = current[name]
        if index:
            current = current[int(index.rstrip("]"))]
    return current


def test_okta_spec_steps(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    _, token = connect(admin, "acme", group_roles={"engineering": "editor"})
    headers = {
        "Accept": "application/scim+json",
        "User-Agent": "OKTA SCIM Integration",
        "Authorization": f"Bearer {token}",
    }
    okta = server.client()
    okta.headers.update(headers)
    random_name = f"okta-{uuid.uuid4().hex[:8]}@example.com"
    new_user = {
        "schemas": [USER_SCHEMA],
        "userName": random_name,
        "name": {"givenName": "Okta", "familyName": "Tester"},
        "emails": [{"primary": True, "value": random_name, "type": "work"}],
        "displayName": "Okta Tester",
        "active": True,
    }
    # Step 1 needs a user with a name and an email already there.
    existing = okta.post(
        f"{SCIM}/Users",
        json={
            **new_user,
            "userName": "first@example.com",
            "emails": [{"value": "first@example.com", "primary": True}],
        },
    )
    assert existing.status_code == 201, existing.text
    ran: list[int] = []
    ids: dict[int, str] = {}

    def check(n: int, response: Any) -> dict[str, Any]:
        [step] = [s for s in STEPS["steps"] if s["n"] == n]
        expect = step["expect"]
        assert response.status_code == expect["status"], (n, response.text)
        body = response.json() if response.content else {}
        if "schemas_has" in expect:
            assert any(expect["schemas_has"] in s for s in body["schemas"]), (n, body)
        if "schemas_contains" in expect:
            assert expect["schemas_contains"] in body["schemas"], (n, body)
        for path in expect.get("numbers", []):
            assert isinstance(value_at(body, path), int), (n, path, body)
        for path in expect.get("non_empty", []):
            assert value_at(body, path) not in (None, "", []), (n, path, body)
        for path, wanted in expect.get("equal", {}).items():
            if wanted == "{id}":
                wanted = ids[1]
            # ".." and "{randomUsername}": the summary's random values, checked below.
            if wanted != ".." and not str(wanted).startswith("{"):
                assert value_at(body, path) == wanted, (n, path, body)
        ran.append(n)
        return body

    listed = check(1, okta.get(f"{SCIM}/Users", params={"count": 1, "startIndex": 1}))
    ids[1] = listed["Resources"][0]["id"]
    check(2, okta.get(f"{SCIM}/Users/{ids[1]}"))
    check(
        3, okta.get(f"{SCIM}/Users", params={"filter": 'userName eq "nobody@invalid.example.com"'})
    )
    check(4, okta.get(f"{SCIM}/Users/{uuid.uuid4().hex}"))
    check(5, okta.get(f"{SCIM}/Users", params={"filter": f'userName eq "{random_name}"'}))
    made = okta.post(f"{SCIM}/Users", json=new_user, headers={"Content-Type": "application/json"})
    body = check(6, made)
    assert body["userName"] == random_name and body["name"]["givenName"] == "Okta"
    ids[6] = body["id"]
    again = check(7, okta.get(f"{SCIM}/Users/{ids[6]}"))
    assert again["name"]["familyName"] == "Tester"
    check(8, okta.post(f"{SCIM}/Users", json=new_user))
    caps = check(
        9, okta.get(f"{SCIM}/Users", params={"filter": f'userName eq "{random_name.upper()}"'})
    )
    assert caps["totalResults"] == 1  # userName is caseExact=false (RFC 7643)
    check(10, okta.get(f"{SCIM}/Groups"))
    refused = okta.get(f"{SCIM}/Users", headers={"Authorization": "non-token"})
    assert refused.json()["schemas"] == [ERROR]
    check(11, refused)
    check(12, okta.get(f"{SCIM}/Users/00919288221112222"))
    assert ran == [s["n"] for s in STEPS["steps"]]
    assert listed["schemas"] == [LIST]

    # What Okta does in production beyond the export.
    group = okta.post(
        f"{SCIM}/Groups",
        json={"schemas": [GROUP_SCHEMA], "displayName": "Engineering", "members": []},
    )
    assert group.status_code == 201, group.text
    pushed = okta.patch(
        f"{SCIM}/Groups/{group.json()['id']}",
        json={
            "schemas": [PATCH_OP],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": ids[6]}]}],
        },
    )
    assert pushed.status_code in (200, 204), pushed.text
    assert allowed(server, random_name, "acme", "write")
    replaced = okta.put(f"{SCIM}/Users/{ids[6]}", json={**new_user, "displayName": "Renamed"})
    assert replaced.status_code == 200 and replaced.json()["displayName"] == "Renamed"
    off = okta.patch(
        f"{SCIM}/Users/{ids[6]}",
        json={"schemas": [PATCH_OP], "Operations": [{"op": "replace", "value": {"active": False}}]},
    )
    assert off.status_code in (200, 204), off.text
    assert not allowed(server, random_name, "acme", "read")
    okta.close()
