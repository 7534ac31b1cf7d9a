"""The asyncio client: :class:`AsyncRingfenceClient`, the synchronous one's twin (same
arguments, same answers, awaited)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import httpx

from ringfence_client import _core
from ringfence_client._core import Call, RetryPolicy, TokenCache
from ringfence_client.errors import problem_of
from ringfence_client.models import (
    ChangeBatch,
    Decision,
    Page,
    Question,
    ResourceRef,
    Semantic,
    SubjectRef,
)

T = TypeVar("T")


class AsyncRingfenceClient:
    """A client of one Ringfence gateway for asyncio code, shared by the tasks of one
    event loop (it pools connections and caches its access token).

    Credentials: ``client_id`` and ``client_secret`` of an OAuth client (``ringfence
    client create``), exchanged for an access token (client credentials grant) that is
    cached and renewed before it expires; or a ready ``token``. ``timeout`` bounds each
    attempt (seconds, or an :class:`httpx.Timeout`); ``retries``, ``backoff`` and
    ``max_backoff`` say how often and how long to retry on a connection error or a 503
    (:class:`~ringfence_client._core.RetryPolicy`); ``max_connections`` sizes the pool.
    """

    def __init__(
        self,
        base_url: str,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        token: str | None = None,
        scope: str | None = _core.DECISIONS_SCOPE,
        timeout: float | httpx.Timeout = 5.0,
        retries: int = 2,
        backoff: float = 0.05,
        max_backoff: float = 1.0,
        max_connections: int = 20,
        refresh_margin: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if token is None and (client_id is None or client_secret is None):
            raise ValueError("Give client_id and client_secret, or a token")
        self.base_url = base_url.rstrip("/")
        self.retry = RetryPolicy(retries, backoff, max_backoff)
        self._credentials = None if token else (client_id or "", client_secret or "")
        self._static_token = token
        self._scope = scope
        self._tokens = TokenCache(refresh_margin)
        self._token_lock = asyncio.Lock()
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            transport=transport,
            headers={"Accept": "application/json"},
        )

    # -- lifecycle --------------------------------------------------------------------

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncRingfenceClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # -- decisions --------------------------------------------------------------------

    async def check(
        self,
        subject: str,
        workspace: str,
        resource: str,
        action: str,
        *,
        owner: str | None = None,
        explain: bool = False,
        min_revision: int | None = None,
    ) -> Decision:
        """May ``subject`` (email, id or ``user:<id>``) do ``action`` on ``resource`` in
        ``workspace``? A deny is a :class:`Decision` with ``allowed`` False, never an
        exception. ``min_revision``: answered at that policy revision or later (the
        ``X-Ringfence-Revision`` of an admin change: read your writes)."""
        call = _core.check_call(subject, workspace, resource, action, owner, explain, min_revision)
        return _core.decision_of(await self._send(call))

    async def explain(
        self,
        subject: str,
        workspace: str,
        resource: str,
        action: str,
        *,
        owner: str | None = None,
        min_revision: int | None = None,
    ) -> Decision:
        """:meth:`check` with the reason spelled out (``decision.explanation``: the rule
        and the role path of an allow, the reason of a deny)."""
        return await self.check(
            subject,
            workspace,
            resource,
            action,
            owner=owner,
            explain=True,
            min_revision=min_revision,
        )

    async def check_many(
        self,
        questions: Iterable[Question | tuple[str, str, str, str]],
        *,
        semantic: Semantic | None = None,
        explain: bool = False,
        min_revision: int | None = None,
    ) -> list[Decision]:
        """Many questions in one request (AuthZEN evaluations), answered in order;
        ``semantic`` may stop early (``deny_on_first_deny``, ``permit_on_first_permit``:
        then fewer answers than questions come back). A question the gateway could not
        evaluate is a deny with ``error`` set."""
        call = _core.check_many_call(questions, semantic, explain, min_revision)
        if not call.body["evaluations"]:
            return []
        return _core.decisions_of(await self._send(call))

    # -- searches ---------------------------------------------------------------------

    async def search_subjects(
        self,
        workspace: str,
        resource: str,
        action: str,
        *,
        owner: str | None = None,
        limit: int | None = None,
        page_token: str | None = None,
        min_revision: int | None = None,
    ) -> Page[SubjectRef]:
        """Who may do ``action`` on ``resource`` in ``workspace``: one page."""
        call = _core.search_subjects_call(
            workspace, resource, action, owner, limit, page_token, min_revision
        )
        return _core.subjects_of(await self._send(call))

    async def search_resources(
        self,
        subject: str,
        action: str,
        resource: str,
        *,
        workspace: str | None = None,
        limit: int | None = None,
        page_token: str | None = None,
        min_revision: int | None = None,
    ) -> Page[ResourceRef]:
        """Where ``subject`` may do ``action`` on resources of type ``resource`` (in
        every workspace, or in ``workspace``): one page."""
        call = _core.search_resources_call(
            subject, action, resource, workspace, limit, page_token, min_revision
        )
        return _core.resources_of(await self._send(call))

    async def search_actions(
        self,
        subject: str,
        workspace: str,
        resource: str,
        *,
        owner: str | None = None,
        limit: int | None = None,
        page_token: str | None = None,
        min_revision: int | None = None,
    ) -> Page[str]:
        """What ``subject`` may do on ``resource`` in ``workspace``: one page."""
        call = _core.search_actions_call(
            subject, workspace, resource, owner, limit, page_token, min_revision
        )
        return _core.actions_of(await self._send(call))

    async def each(
        self, search: Callable[..., Awaitable[Page[T]]], /, *args: Any, **kwargs: Any
    ) -> AsyncIterator[T]:
        """Every result of a search, page after page: ``async for s in
        client.each(client.search_subjects, "acme", "documents", "read")``."""
        token = kwargs.pop("page_token", None)
        while True:
            page = await search(*args, page_token=token, **kwargs)
            for result in page.results:
                yield result
            if page.last:
                return
            token = page.next_token

    # -- the change feed (a token with decisions:replicate) ----------------------------

    async def snapshot(self, *, workspaces: Iterable[str] | None = None) -> dict[str, Any]:
        """``GET /v1/snapshot``: the engine's whole state at one revision (``revision``,
        ``rules``, ``subjects``, ``workspaces``, ``expiries``); with ``workspaces``,
        what decides in those only."""
        return _core.json_of(await self._send(_core.snapshot_call(workspaces)))

    async def changes(
        self,
        since: int,
        *,
        timeout: float = 0.0,
        limit: int | None = None,
        workspaces: Iterable[str] | None = None,
    ) -> ChangeBatch:
        """``GET /v1/changes``: the revisions after ``since``; with ``timeout``, a long
        poll that waits up to that many seconds (at most 30) for one; with
        ``workspaces``, each revision's entries that matter there."""
        call = _core.changes_call(since, timeout, limit, margin=5.0, workspaces=workspaces)
        return _core.changes_of(await self._send(call))

    # -- the request ------------------------------------------------------------------

    async def _send(self, call: Call) -> httpx.Response:
        token = await self._token()
        response = await self._attempts(call, {"Authorization": f"Bearer {token}"})
        if response.status_code == 401 and self._credentials is not None:
            # Revoked, or its key retired, before it expired: one new token, once.
            self._tokens.forget(token)
            response = await self._attempts(
                call, {"Authorization": f"Bearer {await self._token()}"}
            )
        return response

    async def _attempts(self, call: Call, auth: Mapping[str, str]) -> httpx.Response:
        headers = {**call.headers, **auth}
        return await self._retrying(
            lambda: self._http.request(
                call.method,
                call.path,
                json=call.body,
                headers=headers,
                timeout=httpx.USE_CLIENT_DEFAULT if call.timeout is None else call.timeout,
            )
        )

    async def _retrying(self, send: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
        for attempt in range(self.retry.retries + 1):
            last = attempt == self.retry.retries
            try:
                response = await send()
            except _core.RETRIED_ERRORS as exc:
                if last:
                    raise _core.unreachable(exc, self.base_url) from exc
                await asyncio.sleep(self.retry.delay(attempt))
                continue
            except httpx.TransportError as exc:
                raise _core.unreachable(exc, self.base_url) from exc
            if response.status_code == 503 and not last:
                await asyncio.sleep(self.retry.delay(attempt, response))
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    async def _token(self) -> str:
        if self._static_token is not None:
            return self._static_token
        token = self._tokens.current()
        if token is not None:
            return token
        async with self._token_lock:
            token = self._tokens.current()  # another thread may have fetched it
            if token is not None:
                return token
            assert self._credentials is not None
            asked_at = time.monotonic()
            credentials = self._credentials
            response = await self._retrying(
                lambda: self._http.post(
                    "/oauth/token", data=_core.token_call(self._scope), auth=credentials
                )
            )
            if response.status_code != 200:
                raise problem_of(response)
            return self._tokens.store(response.json(), asked_at)


__all__ = ["AsyncRingfenceClient"]
