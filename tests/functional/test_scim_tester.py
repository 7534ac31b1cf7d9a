"""scim2-tester (python-scim, on PyPI) checks the SCIM 2.0 service provider over real
HTTP, against the live gateway with a directory connection's token: discovery
(ServiceProviderConfig, ResourceTypes, Schemas), unknown URLs, and creating, reading,
replacing and deleting Users (with the enterprise extension) and Groups. Every check that
applies must pass; those it skips are exactly NOT_APPLICABLE, each with its RFC reason.

Its per-attribute checks (``crud:read:attributes``, ``patch:add|remove|replace``: one
request per attribute of each schema, ~800 requests, ~25 s here) run with
``make test-thorough``; PATCH as Okta and Entra send it is in test_directory.py."""

from __future__ import annotations

import os

import httpx2
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

from tests.functional.test_directory import connect
from tests.helpers import LiveServer, create_workspaces

FAILED = {Status.ERROR, Status.CRITICAL}
EVERY_CHECK = os.environ.get("RINGFENCE_HYPOTHESIS_PROFILE") == "thorough"
TAGS = None if EVERY_CHECK else {"discovery", "misc", "crud:create", "crud:read"}
TAGS = TAGS if TAGS is None else TAGS | {"crud:update", "crud:delete"}
# Checks the server skips, with the reason they do not apply.
NOT_APPLICABLE = {
    # RFC 7644 §3.4.3: searching from the root "MAY" be supported; it answers 501 here
    # (a directory searches /Users or /Groups).
    "search_with_attributes",
}


def test_scim2_tester_finds_nothing_wrong(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    _, token = connect(admin, "acme")
    with httpx2.Client(
        base_url=f"{server.url}/scim/v2/",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ) as http:
        results = check_server(SyncSCIMClient(http), include_tags=TAGS)
    failed = [r for r in results if r.status in FAILED]
    assert not failed, "\n".join(f"{r.resource_type} {r.title}: {r.reason}" for r in failed)
    if EVERY_CHECK:  # else the checks left out by their tags are reported skipped too
        assert {r.title for r in results if r.status == Status.SKIPPED} <= NOT_APPLICABLE
    passed = {(r.resource_type, r.title) for r in results if r.status == Status.SUCCESS}
    for resource_type in ("User", "Group"):
        for check in ("object_creation", "object_query", "object_replacement", "object_deletion"):
            assert (resource_type, check) in passed, (resource_type, check)
    assert any("service_provider_config" in (title or "") for _, title in passed), passed
