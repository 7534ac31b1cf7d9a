"""The FastAPI guard: a dependency (``pip install ringfence-client[fastapi]``).

    ringfence = FastAPIRingfence(AsyncRingfenceClient(...), subject=current_user_email)

    reading = Depends(ringfence.require("documents", "read"))

    @app.get("/w/{workspace}/documents", dependencies=[reading])
    async def documents(workspace: str): ...

``subject`` is itself a dependency (anything FastAPI can inject: the signed-in user's
email or id); the workspace is the path parameter ``workspace`` unless ``workspace=``
names another or gives a function of the request; ``owner=`` likewise (a function of the
request). A deny is an ``HTTPException`` 403, a gateway that cannot answer a 503 with
``Retry-After`` (fail closed; see :mod:`ringfence_client.guard`). The dependency's value
is the gateway's :class:`Decision` (None when an outage was answered from the opt-in
cache of allows): ``decision: Annotated[Decision | None, reading]`` in a view's arguments.
"""

# No ``from __future__ import annotations``: FastAPI reads the dependency's annotations
# (``Depends(self.subject)``, a closure's) at run time.

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from ringfence_client.aio import AsyncRingfenceClient
from ringfence_client.guard import AsyncGuard, Verdict
from ringfence_client.models import Decision


class FastAPIRingfence:
    """One :class:`AsyncGuard` and the dependencies made from it."""

    def __init__(
        self,
        client: AsyncRingfenceClient,
        *,
        subject: Callable[..., Any],
        unavailable_status: int = 503,
        outage_allow_seconds: float = 0.0,
        guard: AsyncGuard | None = None,
    ) -> None:
        self.guard = guard or AsyncGuard(
            client,
            unavailable_status=unavailable_status,
            outage_allow_seconds=outage_allow_seconds,
        )
        self.subject = subject

    def require(
        self,
        resource: str,
        action: str,
        *,
        workspace: str | Callable[[Request], str] = "workspace",
        owner: Callable[[Request], str | None] | None = None,
    ) -> Callable[..., Awaitable[Decision | None]]:
        """A dependency that lets the request through only if the subject may do
        ``action`` on ``resource`` in the workspace."""
        guard = self.guard

        async def dependency(
            request: Request, subject: Annotated[Any, Depends(self.subject)]
        ) -> Decision | None:
            name = workspace(request) if callable(workspace) else request.path_params[workspace]
            verdict = await guard.decide(
                None if subject is None else str(subject),
                name,
                resource,
                action,
                owner(request) if owner else None,
            )
            return enforce(verdict)

        return dependency


def enforce(verdict: Verdict) -> Decision | None:
    """The verdict's decision if it allows; its ``HTTPException`` if not."""
    if verdict.allowed:
        return verdict.decision
    headers = None if verdict.retry_after is None else {"Retry-After": str(verdict.retry_after)}
    raise HTTPException(status_code=verdict.status, detail=verdict.detail, headers=headers)
