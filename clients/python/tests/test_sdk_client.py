"""The synchronous client against the real gateway on loopback: decisions, batches,
searches, explanations, read-your-writes, tokens, typed refusals, retries."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import JOHN, MARY, Flaky, Gateway, closed_port
from ringfence_client import (
    AuthenticationError,
    BadRequest,
    GatewayUnavailable,
    InsufficientScope,
    Question,
    RevisionNotReached,
    RingfenceClient,
    ServiceUnavailable,
)
from ringfence_client._core import TokenCache

from tests.helpers import create_client, serving


def sdk(gateway: Gateway, **options: Any) -> RingfenceClient:
    return RingfenceClient(
        gateway.url, client_id=gateway.client_id, client_secret=gateway.client_secret, **options
    )


def test_checks_explanations_batches_and_searches(gateway: Gateway) -> None:
    with sdk(gateway) as ringfence:
        allowed = ringfence.check(JOHN, "acme", "documents", "write")
        assert allowed.allowed is True and allowed.reason == "allowed by policy"
        assert allowed.revision > 0 and allowed.stale is False
        assert allowed.explanation is None and allowed.staleness is not None
        token = ringfence._tokens.token
        assert token is not None

        denied = ringfence.check(JOHN, "acme", "documents", "delete")
        assert (denied.allowed, denied.reason) == (False, "no rule allows")
        assert ringfence.check("nobody@example.com", "acme", "documents", "read").reason == (
            "unknown subject"
        )
        # One token for all of them: cached, not fetched per call.
        assert ringfence._tokens.token == token

        why = ringfence.explain(JOHN, "acme", "documents", "write")
        assert why.allowed and why.explanation is not None
        assert why.explanation.rule == ("role:editor", "*", "documents", "write", "")
        assert why.explanation.path == ((f"user:{gateway.john_id}", "role:editor", "acme"),)
        why_not = ringfence.explain(JOHN, "globex", "documents", "read")
        assert not why_not.allowed and why_not.explanation is not None
        assert why_not.explanation.rule is None and why_not.explanation.reason

        answers = ringfence.check_many(
            [
                (JOHN, "acme", "documents", "write"),
                Question(JOHN, "globex", "documents", "read"),
                Question(MARY, "globex", "users", "invite"),
                Question("", "acme", "documents", "read"),
            ]
        )
        assert [a.allowed for a in answers] == [True, False, True, False]
        assert answers[1].reason == "no rule allows"
        assert answers[3].error and answers[0].error is None
        assert all(a.revision == allowed.revision for a in answers[:3])
        stopped = ringfence.check_many(
            [(JOHN, "acme", "documents", "read"), (JOHN, "globex", "documents", "read")] * 2,
            semantic="deny_on_first_deny",
        )
        assert [a.allowed for a in stopped] == [True, False]
        assert ringfence.check_many([]) == []

        readers = ringfence.search_subjects("acme", "documents", "read")
        ids = {s.id for s in readers.results}
        assert ids == {"admin@example.com", JOHN, MARY} and readers.last and readers.total == 3
        paged = list(
            ringfence.each(ringfence.search_subjects, "acme", "documents", "read", limit=1)
        )
        assert {s.id for s in paged} == ids and len(paged) == len(ids)

        where = ringfence.search_resources(MARY, "invite", "users")
        assert [(r.type, r.id, r.workspace) for r in where.results] == [("users", "*", "globex")]
        actions = ringfence.search_actions(JOHN, "acme", "documents")
        assert sorted(actions.results) == ["read", "write"]


def test_read_your_writes_and_fresh_tokens(gateway: Gateway) -> None:
    with sdk(gateway) as ringfence:
        assert not ringfence.check(JOHN, "globex", "documents", "read").allowed
        response = gateway.admin.post(
            f"/users/{gateway.john_id}/grants", json={"workspace": "globex", "role": "viewer"}
        )
        assert response.status_code == 201, response.text
        revision = int(response.headers["X-Ringfence-Revision"])
        decision = ringfence.check(JOHN, "globex", "documents", "read", min_revision=revision)
        assert decision.allowed and decision.revision >= revision
        [batch] = ringfence.check_many(
            [(JOHN, "globex", "documents", "read")], min_revision=revision
        )
        assert batch.allowed and batch.revision >= revision
        with pytest.raises(RevisionNotReached) as raised:
            ringfence.check(JOHN, "globex", "documents", "read", min_revision=revision + 1000)
        assert raised.value.status == 409 and raised.value.type == "revision-not-reached"

        # Renewed before it expires (here: as if its refresh time had come).
        first = ringfence._tokens.token
        ringfence._tokens.refresh_at = 0
        assert ringfence.check(JOHN, "acme", "documents", "read").allowed
        second = ringfence._tokens.token
        assert second is not None and second != first

        # Revoked before it expires: refused once (401), then a new token, answered.
        revoked = gateway.server.client().post(
            "/oauth/revoke",
            data={"token": second},
            auth=(gateway.client_id, gateway.client_secret),
        )
        assert revoked.status_code == 200, revoked.text
        assert ringfence.check(JOHN, "acme", "documents", "read").allowed
        assert ringfence._tokens.token not in (first, second)


def test_token_cache_renews_before_expiry() -> None:
    cache = TokenCache(refresh_margin=30)
    cache.store({"access_token": "a", "expires_in": 3600}, asked_at=1000.0)
    assert cache.refresh_at == 1000.0 + 3600 - 30
    # A short-lived token is renewed half way through its life, not after it expired.
    cache.store({"access_token": "b", "expires_in": 40}, asked_at=1000.0)
    assert cache.refresh_at == 1020.0


def test_refusals_are_typed(gateway: Gateway) -> None:
    with (
        RingfenceClient(
            gateway.url, client_id=gateway.client_id, client_secret="wrong"
        ) as ringfence,
        pytest.raises(AuthenticationError) as raised,
    ):
        ringfence.check(JOHN, "acme", "documents", "read")
    assert raised.value.status == 401 and raised.value.type == "invalid_client"

    with RingfenceClient(gateway.url, token="not-a-token") as ringfence:
        with pytest.raises(AuthenticationError) as raised:
            ringfence.check(JOHN, "acme", "documents", "read")
        assert raised.value.problem["status"] == 401

    introspect_id, introspect_secret = create_client(
        gateway.server.settings, "tokens:introspect", name="no decisions"
    )
    with (
        RingfenceClient(
            gateway.url, client_id=introspect_id, client_secret=introspect_secret, scope=None
        ) as ringfence,
        pytest.raises(InsufficientScope) as forbidden,
    ):
        ringfence.check(JOHN, "acme", "documents", "read")
    assert forbidden.value.status == 403 and "decisions:check" in forbidden.value.detail

    with sdk(gateway) as ringfence, pytest.raises(BadRequest) as invalid:
        ringfence.check("", "acme", "documents", "read")
    assert invalid.value.status == 422 and "subject" in str(invalid.value.problem["errors"])


def test_retries_only_on_503_and_connection_errors(gateway: Gateway) -> None:
    flaky = Flaky(gateway.server.app)
    with serving(flaky) as httpd:
        url = f"http://127.0.0.1:{httpd.server_port}"
        with RingfenceClient(
            url,
            client_id=gateway.client_id,
            client_secret=gateway.client_secret,
            retries=2,
            backoff=0.001,
        ) as ringfence:
            flaky.failures = 2
            assert ringfence.check(JOHN, "acme", "documents", "read").allowed
            assert flaky.seen == 3

            flaky.seen, flaky.failures = 0, 3
            with pytest.raises(ServiceUnavailable) as raised:
                ringfence.check(JOHN, "acme", "documents", "read")
            assert flaky.seen == 3 and raised.value.type == "replica-stale"
            assert isinstance(raised.value, GatewayUnavailable)

            # A deny, or a refusal, is an answer: asked once.
            flaky.seen = 0
            assert not ringfence.check(JOHN, "acme", "documents", "delete").allowed
            with pytest.raises(BadRequest):
                ringfence.check(JOHN, "acme", "", "read")
            assert flaky.seen == 2

            # An answer that is not the gateway's (a proxy's page with a 200): never read
            # as an answer, asked once.
            flaky.seen, flaky.garbled = 0, True
            with pytest.raises(GatewayUnavailable) as garbled:
                ringfence.check(JOHN, "acme", "documents", "read")
            assert "could not be read" in str(garbled.value) and flaky.seen == 1

    with (
        RingfenceClient(
            f"http://127.0.0.1:{closed_port()}", token="t", retries=2, backoff=0.001
        ) as ringfence,
        pytest.raises(GatewayUnavailable) as unreachable,
    ):
        ringfence.check(JOHN, "acme", "documents", "read")
    assert "could not be reached" in str(unreachable.value)
