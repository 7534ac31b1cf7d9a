"""What the framework guards share: one decision per request turned into an outcome a
framework can answer with (allowed, 403, or the fail-closed 503), and the opt-in cache
of recent allows that may answer while the gateway cannot be reached.

Fail closed: a deny is a 403, a question the gateway finds invalid is a 403, and a
gateway that cannot answer (unreachable, 503 on every retry, refusing the service's own
credentials) is a 503, never an allow, unless ``outage_allow_seconds`` is set: then an
allow of the same question seen within that many seconds answers instead, and only
while the gateway cannot be reached.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from ringfence_client.aio import AsyncRingfenceClient
from ringfence_client.client import RingfenceClient
from ringfence_client.errors import BadRequest, GatewayUnavailable, ProblemError, RingfenceError
from ringfence_client.models import Decision

log = logging.getLogger("ringfence_client.guard")

Key = tuple[str, str, str, str, str | None]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the guard says of one request: ``status`` 200 (allowed), 403 (denied) or
    the guard's ``unavailable_status`` (the gateway could not answer); ``decision`` the
    gateway's answer when there was one; ``cached`` when an outage was answered from the
    cache of recent allows."""

    status: int
    detail: str
    decision: Decision | None = None
    cached: bool = False
    retry_after: int | None = None

    @property
    def allowed(self) -> bool:
        return self.status == 200


class AccessDenied(RingfenceError):
    """Raised by the guards that use exceptions (Django's decorator, ``Guard.require``):
    the request is not allowed, or cannot be decided (``verdict.status``)."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.detail)
        self.verdict = verdict


class OutageCache:
    """Allows seen in the last ``seconds``, at most ``size`` of them (oldest dropped):
    answers for an outage only. A deny of the same question forgets its allow."""

    def __init__(self, seconds: float, size: int = 10_000) -> None:
        self.seconds = seconds
        self.size = size
        self._allows: OrderedDict[Key, float] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, key: Key, allowed: bool) -> None:
        if self.seconds <= 0:
            return
        with self._lock:
            if not allowed:
                self._allows.pop(key, None)
                return
            self._allows[key] = time.monotonic()
            self._allows.move_to_end(key)
            while len(self._allows) > self.size:
                self._allows.popitem(last=False)

    def recent(self, key: Key) -> bool:
        if self.seconds <= 0:
            return False
        with self._lock:
            seen = self._allows.get(key)
            return seen is not None and time.monotonic() - seen <= self.seconds


class _Deciding:
    def __init__(
        self,
        *,
        unavailable_status: int = 503,
        retry_after: int = 5,
        outage_allow_seconds: float = 0.0,
        outage_cache_size: int = 10_000,
    ) -> None:
        self.unavailable_status = unavailable_status
        self.retry_after = retry_after
        self.outage = OutageCache(outage_allow_seconds, outage_cache_size)

    def _answered(self, key: Key, decision: Decision) -> Verdict:
        self.outage.remember(key, decision.allowed)
        if decision.allowed:
            return Verdict(200, decision.reason, decision)
        return Verdict(403, f"Not allowed: {decision.reason}", decision)

    def _failed(self, key: Key, error: RingfenceError) -> Verdict:
        if isinstance(error, BadRequest):
            return Verdict(403, f"Not allowed: the question is not valid ({error.detail})")
        if isinstance(error, GatewayUnavailable) and self.outage.recent(key):
            log.warning("gateway unavailable (%s); answered from a recent allow", error)
            return Verdict(200, "allowed a moment ago (gateway unavailable)", cached=True)
        if isinstance(error, ProblemError) and not isinstance(error, GatewayUnavailable):
            # The service's own credentials or scope refused, a revision not reached:
            # nothing the user can change, and not an outage either.
            log.error("the gateway refused the guard's question: %s", error)
        else:
            log.warning("gateway unavailable: %s", error)
        return Verdict(
            self.unavailable_status,
            "The authorization gateway cannot answer; try again shortly.",
            retry_after=self.retry_after,
        )

    @staticmethod
    def _no_subject() -> Verdict:
        return Verdict(403, "Not allowed: no signed-in subject")


class Guard(_Deciding):
    """Decisions for a synchronous framework (Flask, Django), over a
    :class:`RingfenceClient`. See the module docstring for what fails closed."""

    def __init__(
        self,
        client: RingfenceClient,
        *,
        unavailable_status: int = 503,
        retry_after: int = 5,
        outage_allow_seconds: float = 0.0,
        outage_cache_size: int = 10_000,
    ) -> None:
        super().__init__(
            unavailable_status=unavailable_status,
            retry_after=retry_after,
            outage_allow_seconds=outage_allow_seconds,
            outage_cache_size=outage_cache_size,
        )
        self.client = client

    def decide(
        self,
        subject: str | None,
        workspace: str,
        resource: str,
        action: str,
        owner: str | None = None,
    ) -> Verdict:
        if not subject:
            return self._no_subject()
        key = (subject, workspace, resource, action, owner)
        try:
            decision = self.client.check(subject, workspace, resource, action, owner=owner)
        except RingfenceError as error:
            return self._failed(key, error)
        return self._answered(key, decision)

    def require(
        self,
        subject: str | None,
        workspace: str,
        resource: str,
        action: str,
        owner: str | None = None,
    ) -> Verdict:
        """:meth:`decide`, raising :class:`AccessDenied` unless allowed."""
        verdict = self.decide(subject, workspace, resource, action, owner)
        if not verdict.allowed:
            raise AccessDenied(verdict)
        return verdict


class AsyncGuard(_Deciding):
    """Decisions for an asyncio framework (FastAPI), over an
    :class:`AsyncRingfenceClient`."""

    def __init__(
        self,
        client: AsyncRingfenceClient,
        *,
        unavailable_status: int = 503,
        retry_after: int = 5,
        outage_allow_seconds: float = 0.0,
        outage_cache_size: int = 10_000,
    ) -> None:
        super().__init__(
            unavailable_status=unavailable_status,
            retry_after=retry_after,
            outage_allow_seconds=outage_allow_seconds,
            outage_cache_size=outage_cache_size,
        )
        self.client = client

    async def decide(
        self,
        subject: str | None,
        workspace: str,
        resource: str,
        action: str,
        owner: str | None = None,
    ) -> Verdict:
        if not subject:
            return self._no_subject()
        key = (subject, workspace, resource, action, owner)
        try:
            decision = await self.client.check(subject, workspace, resource, action, owner=owner)
        except RingfenceError as error:
            return self._failed(key, error)
        return self._answered(key, decision)
