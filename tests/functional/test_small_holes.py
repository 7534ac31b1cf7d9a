"""Security finding 7, the smaller holes, each over real HTTP: deeply nested JSON is a
400 on every JSON endpoint, only canonical user references resolve, /docs has a strict
Content-Security-Policy, reviewers who lost the right stop seeing their items, texts do
not name what the caller may not see, console changes are audited with their origin,
and email addresses are NFKC-normalised at input."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import pytest

from tests.console_support import sign_in
from tests.functional.test_access_reviews import items_of, started
from tests.helpers import (
    ADMIN_EMAIL,
    LiveServer,
    assert_problem,
    create_workspaces,
    decision_headers,
    invite_and_accept,
    post_decision,
)

JSON = {"Content-Type": "application/json"}
DEEP_BODIES = {
    "arrays": b"[" * 100_000,
    "objects": b'{"a":' * 50_000,
    # Small enough for the check lane (gateway.web.check_lane reads up to 8 KiB itself).
    "lane-sized": b"[" * 8_000,
}


def _path_with_ids(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def _json_operations(server: LiveServer) -> list[tuple[str, str]]:
    """(method, path) of every operation in the OpenAPI document that takes a JSON body."""
    with server.client() as anonymous:
        spec = anonymous.get("/openapi.json").json()
    found = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":  # shared by the path's operations
                continue
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                found.append((method.upper(), _path_with_ids(path)))
    return found


# -- deeply nested JSON -------------------------------------------------------------------


@pytest.mark.parametrize("shape", list(DEEP_BODIES))
def test_deeply_nested_json_is_a_400_on_every_json_endpoint(server: LiveServer, shape: str) -> None:
    body = DEEP_BODIES[shape]
    admin = server.admin()
    create_workspaces(admin, "acme")
    operations = _json_operations(server)
    paths = {path for _, path in operations}
    # The document lists the admin API, /v1/check and AuthZEN alike.
    assert {"/v1/check", "/access/v1/evaluation", "/invitations", "/auth/login"} <= paths
    decision = decision_headers(server)
    for method, path in operations:
        token_headers = decision if path.startswith(("/v1/", "/access/", "/pdp/")) else {}
        client = admin if not token_headers else server.client()
        response = client.request(method, path, content=body, headers={**JSON, **token_headers})
        assert response.status_code == 400, (method, path, response.text)
        assert response.headers["Content-Type"] == "application/problem+json"
        assert "too deeply nested" in response.json()["detail"].lower(), (method, path)


def test_a_deeply_nested_check_goes_through_the_lane_to_the_same_400(server: LiveServer) -> None:
    """The plain check of a remembered token is answered below Flask; a body it cannot
    read goes on to Flask, which refuses it as malformed."""
    plain = {"subject": ADMIN_EMAIL, "workspace": "acme", "resource": "d", "action": "r"}
    assert post_decision(server, "/v1/check", plain).status_code == 200  # token remembered
    for body in DEEP_BODIES.values():
        response = post_decision(server, "/v1/check", content=body, headers=JSON)
        problem = assert_problem(response, 400, "invalid-input", "too deeply nested")
        assert problem["errors"] == {"json": ["The JSON body is too deeply nested"]}
    assert post_decision(server, "/v1/check", plain).status_code == 200  # and still serves


def test_a_deeply_nested_authzen_body_is_a_bad_request(server: LiveServer) -> None:
    for path in (
        "/access/v1/evaluation",
        "/access/v1/evaluations",
        "/pdp/acme/access/v1/evaluation",
    ):
        for body in DEEP_BODIES.values():
            response = post_decision(server, path, content=body, headers=JSON)
            assert_problem(response, 400, "bad-request", "too deeply nested")


def test_a_token_nested_too_deeply_is_malformed_not_a_500(server: LiveServer) -> None:
    def part(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    header = part(b'{"alg":"RS256","typ":"at+jwt","kid":"k"}')
    deep_header = part(b'{"a":' * 2000)
    for token in (f"{header}.{part(b'[' * 5000)}.c2ln", f"{deep_header}.{part(b'{}')}.c2ln"):
        with server.client(token) as client:
            response = client.get("/users")
        problem = assert_problem(response, 401, "unauthorized")
        assert problem["reason"] == "malformed"


# -- canonical user references ----------------------------------------------------------


def test_only_canonical_user_references_are_allowed_over_http(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    john, _ = invite_and_accept(server, admin, "john@example.com", "John", [("acme", "editor")])
    question = {"workspace": "acme", "resource": "documents", "action": "write"}

    def check(subject: str) -> dict[str, Any]:
        response = post_decision(server, "/v1/check", {"subject": subject, **question})
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    assert check(f"user:{john}")["allowed"] and check(str(john))["allowed"]
    assert check("JOHN@example.com")["allowed"]
    for other in (f"user:0{john}", f"0{john}", f" user:{john} ", f"user:{john} "):
        assert check(other) == {**check(other), "allowed": False, "reason": "unknown subject"}
    full_width = "".join(chr(0xFF10 + int(d)) for d in str(john))
    assert check(f"user:{full_width}")["reason"] == "unknown subject"

    def evaluation(subject_id: str) -> bool:
        body = {
            "subject": {"type": "user", "id": subject_id},
            "action": {"name": "write"},
            "resource": {"type": "documents", "id": "1", "properties": {"workspace": "acme"}},
        }
        response = post_decision(server, "/access/v1/evaluation", body)
        assert response.status_code == 200, response.text
        return response.json()["decision"]  # type: ignore[no-any-return]

    assert evaluation(f"user:{john}")
    assert not evaluation(f"user:0{john}")
    assert not evaluation(f"user:{full_width}")

    # The admin API's ids in URLs: one spelling too.
    assert admin.get(f"/users/{john}").status_code == 200
    for other in (f"0{john}", full_width):
        assert admin.get(f"/users/{other}").status_code == 404


# -- /docs --------------------------------------------------------------------------------


def test_docs_have_a_strict_content_security_policy_and_still_load(server: LiveServer) -> None:
    with server.client() as anonymous:
        page = anonymous.get("/docs")
        assert page.status_code == 200
        csp = page.headers["Content-Security-Policy"]
        directives = dict(
            [*d.split(" ", 1), ""][:2] for d in (p.strip() for p in csp.split(";")) if d
        )
        assert directives["default-src"] == "'none'"
        assert directives["frame-ancestors"] == "'none'"
        script_src = directives["script-src"].split()
        assert "'self'" in script_src
        assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src
        # Every script is ours, from /docs/static, and each inline one is allowed by hash.
        scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.DOTALL)
        sources = [re.search(r'src="([^"]+)"', attrs) for attrs, _ in scripts]
        loaded = [s.group(1) for s in sources if s]
        assert loaded and all(src.startswith("/docs/static/") for src in loaded)
        for attrs, body in scripts:
            if "src=" not in attrs:
                digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
                assert f"'sha256-{digest}'" in script_src
        styles = re.findall(r'<link href="([^"]+)" rel="stylesheet"', page.text)
        for path in loaded + styles:
            asset = anonymous.get(path)
            assert asset.status_code == 200 and len(asset.content) > 1000, path
            assert "default-src 'none'" in asset.headers["Content-Security-Policy"]
        # What the page fetches is on this origin.
        assert '"/openapi.json"' in page.text
        assert anonymous.get("/openapi.json").status_code == 200
        assert "validator.swagger.io" not in page.text


# -- reviewers who lost the right -------------------------------------------------------


def test_a_reviewer_who_lost_the_right_no_longer_reads_their_items(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    alice_id, alice = invite_and_accept(
        server, root, "alice@example.com", "Alice", [("acme", "admin")]
    )
    invite_and_accept(server, root, "bob@example.com", "Bob", [("acme", "editor")])
    campaign = started(root, "acme")
    items = items_of(root, campaign["id"])
    bob_item = items[("bob", "editor")]
    assert alice_id in bob_item["reviewer_ids"]
    assert {i["id"] for i in alice.get("/reviews/items").json()} >= {bob_item["id"]}

    # Alice is no longer an admin of acme: no role_management:write, no reviews:read.
    demoted = root.put(f"/users/{alice_id}/workspaces/acme/roles", json={"roles": ["viewer"]})
    assert demoted.status_code == 200, demoted.text

    assert alice.get("/reviews/items").json() == []
    assert alice.get("/reviews/campaigns").json() == []
    assert alice.get(f"/reviews/campaigns/{campaign['id']}").status_code == 404
    assert alice.get(f"/reviews/campaigns/{campaign['id']}/items").status_code == 404
    decided = alice.post(f"/reviews/items/{bob_item['id']}/decision", json={"decision": "revoke"})
    assert_problem(decided, 404, "not-found")
    # The item is still there for those who may read it, undecided, Alice still listed.
    after = items_of(root, campaign["id"])[("bob", "editor")]
    assert after["decision"] == "undecided" and alice_id in after["reviewer_ids"]

    # Given the right back, she reads and decides again.
    restored = root.put(f"/users/{alice_id}/workspaces/acme/roles", json={"roles": ["admin"]})
    assert restored.status_code == 200, restored.text
    assert bob_item["id"] in {i["id"] for i in alice.get("/reviews/items").json()}


# -- texts that name what the caller may not see ------------------------------------------


def test_invitations_and_refusals_name_only_what_the_caller_may_see(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    alice_id, alice = invite_and_accept(
        server, root, "alice@example.com", "Alice", [("acme", "admin")]
    )
    _, gina = invite_and_accept(server, root, "gina@example.com", "Gina", [("globex", "admin")])
    # A person in both workspaces, and an invitation into both (by the super admin).
    carol_id, _ = invite_and_accept(
        server, root, "carol@example.com", "Carol", [("acme", "viewer"), ("globex", "viewer")]
    )
    both = root.post(
        "/invitations",
        json={
            "email": "dave@example.com",
            "name": "Dave",
            "roles": [
                {"workspace": "acme", "role": "editor"},
                {"workspace": "globex", "role": "viewer"},
            ],
        },
    ).json()
    assert {r["workspace"] for r in both["roles"]} == {"acme", "globex"}

    for admin, mine, other in ((alice, "acme", "globex"), (gina, "globex", "acme")):
        shown = admin.get(f"/invitations/{both['id']}").json()
        assert {r["workspace"] for r in shown["roles"]} == {mine}, shown
        assert shown["invited_by_id"] is None  # the super admin is nobody they can see
        listed = {i["id"]: i for i in admin.get("/invitations").json()}
        assert {r["workspace"] for r in listed[both["id"]]["roles"]} == {mine}
        for response in (
            admin.post(f"/invitations/{both['id']}/revoke"),
            admin.post(f"/invitations/{both['id']}/resend"),
            admin.post(f"/users/{carol_id}/deactivate"),
        ):
            problem = assert_problem(response, 403, "forbidden")
            assert other not in response.text, problem
            assert "workspace" not in problem
    # The super admin still sees everything, and the inviter.
    full = root.get(f"/invitations/{both['id']}").json()
    assert {r["workspace"] for r in full["roles"]} == {"acme", "globex"}
    assert full["invited_by_id"] is not None
    # An invitation an admin made is theirs to see in full, inviter included.
    own = alice.post(
        "/invitations",
        json={
            "email": "erin@example.com",
            "name": "Erin",
            "roles": [{"workspace": "acme", "role": "viewer"}],
        },
    ).json()
    assert alice.get(f"/invitations/{own['id']}").json()["invited_by_id"] == alice_id
    # A refusal about a workspace the caller may see still names it.
    bob_id, _ = invite_and_accept(server, root, "bob@example.com", "Bob", [("acme", "viewer")])
    assert_problem(alice.delete(f"/users/{bob_id}"), 403, "forbidden", "users:remove' in 'acme")


# -- console changes are audited with their origin ----------------------------------------


def test_console_changes_are_audited_with_address_request_id_and_reason(
    server: LiveServer,
) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    eve, _ = invite_and_accept(server, root, "eve@example.com", "Eve", [("acme", "viewer")])
    console = sign_in(server, ADMIN_EMAIL, server.admin_password)
    console.client.headers["X-Request-ID"] = "console-deactivate-1"
    deactivated = console.post(f"/console/users/{eve}/deactivate", {"reason": "left the company"})
    assert deactivated.status_code in (200, 303), deactivated.text
    console.client.headers["X-Request-ID"] = "console-reactivate-1"
    console.client.headers["X-Ringfence-Reason"] = "came back"
    reactivated = console.post(f"/console/users/{eve}/reactivate")
    assert reactivated.status_code in (200, 303), reactivated.text
    console.close()

    events = {
        e["action"]: e
        for e in root.get("/audit", params={"target_id": eve, "page_size": 100}).json()
        if e["action"] in ("user.deactivated", "user.reactivated")
    }
    assert events["user.deactivated"]["source_address"] == "127.0.0.1"
    assert events["user.deactivated"]["request_id"] == "console-deactivate-1"
    assert events["user.deactivated"]["reason"] == "left the company"
    assert events["user.reactivated"]["source_address"] == "127.0.0.1"
    assert events["user.reactivated"]["request_id"] == "console-reactivate-1"
    assert events["user.reactivated"]["reason"] == "came back"
