"""The asyncio client against the real gateway on loopback: the same questions as the
synchronous one, awaited, concurrently, over one pool and one token."""

from __future__ import annotations

import asyncio

import pytest
from conftest import JOHN, MARY, Gateway
from ringfence_client import AsyncRingfenceClient, BadRequest, GatewayUnavailable, Question
from test_sdk_client import closed_port


async def _story(gateway: Gateway) -> None:
    async with AsyncRingfenceClient(
        gateway.url, client_id=gateway.client_id, client_secret=gateway.client_secret
    ) as ringfence:
        # Concurrent first calls share one token request (the lock) and one pool.
        decisions = await asyncio.gather(
            ringfence.check(JOHN, "acme", "documents", "write"),
            ringfence.check(JOHN, "acme", "documents", "delete"),
            ringfence.check(MARY, "globex", "users", "invite"),
        )
        assert [d.allowed for d in decisions] == [True, False, True]
        why = await ringfence.explain(JOHN, "acme", "documents", "write")
        assert why.explanation is not None
        assert why.explanation.path == ((f"user:{gateway.john_id}", "role:editor", "acme"),)

        answers = await ringfence.check_many(
            [Question(JOHN, "acme", "documents", "read"), (MARY, "acme", "documents", "write")]
        )
        assert [a.allowed for a in answers] == [True, False]

        response = gateway.admin.put(
            f"/users/{gateway.john_id}/workspaces/acme/roles", json={"roles": []}
        )
        assert response.status_code == 200, response.text
        revision = int(response.headers["X-Ringfence-Revision"])
        after = await ringfence.check(JOHN, "acme", "documents", "read", min_revision=revision)
        assert not after.allowed and after.revision >= revision

        readers = [
            s.id
            async for s in ringfence.each(
                ringfence.search_subjects, "acme", "documents", "read", limit=1
            )
        ]
        assert sorted(readers) == ["admin@example.com", MARY]
        where = await ringfence.search_resources(MARY, "read", "documents")
        assert sorted(r.workspace for r in where.results) == ["acme", "globex"]
        assert (await ringfence.search_actions(MARY, "globex", "users")).results
        with pytest.raises(BadRequest):
            await ringfence.check(JOHN, "acme", "documents", "")

    async with AsyncRingfenceClient(
        f"http://127.0.0.1:{closed_port()}", token="t", retries=1, backoff=0.001
    ) as unreachable:
        with pytest.raises(GatewayUnavailable):
            await unreachable.check(JOHN, "acme", "documents", "read")


def test_async_client(gateway: Gateway) -> None:
    asyncio.run(_story(gateway))
