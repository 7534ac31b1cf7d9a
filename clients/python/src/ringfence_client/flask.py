"""The Flask guard: an extension and a decorator (``pip install ringfence-client[flask]``).

    ringfence = FlaskRingfence(app, subject=lambda: g.user.email)

    @app.get("/w/<workspace>/documents")
    @ringfence.require("documents", "read")
    def documents(workspace): ...

The workspace is the view's ``workspace`` argument unless ``workspace=`` names another
argument or gives a function of the view's arguments; ``owner=`` (a function of them
too) names the resource's owner for owner-only permissions. A deny is a 403, a gateway
that cannot answer a 503 with ``Retry-After`` (fail closed; see
:mod:`ringfence_client.guard`), both raised as werkzeug's HTTP exceptions, so the app's
error handlers shape them. The decision is in ``flask.g.ringfence_decision``.

Without a ``client``, the extension makes one from the app's configuration:
``RINGFENCE_URL``, ``RINGFENCE_CLIENT_ID``, ``RINGFENCE_CLIENT_SECRET``, and optionally
``RINGFENCE_OUTAGE_ALLOW_SECONDS`` (the opt-in cache of allows for outages, 0: off) and
``RINGFENCE_UNAVAILABLE_STATUS`` (503).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, current_app, g
from werkzeug.exceptions import Forbidden, HTTPException

from ringfence_client.client import RingfenceClient
from ringfence_client.guard import Guard, Verdict

F = TypeVar("F", bound=Callable[..., Any])
EXTENSION = "ringfence"


class Unavailable(HTTPException):
    """The fail-closed answer when the gateway cannot answer (503 unless configured)."""

    code = 503
    description = "The authorization gateway cannot answer; try again shortly."

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.detail)
        self.code = verdict.status
        self.retry_after = verdict.retry_after

    def get_headers(self, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        headers = super().get_headers(*args, **kwargs)
        if self.retry_after is not None:
            headers.append(("Retry-After", str(self.retry_after)))
        return headers


class FlaskRingfence:
    """The extension: one :class:`Guard` per app, and :meth:`require`."""

    def __init__(
        self,
        app: Flask | None = None,
        *,
        client: RingfenceClient | None = None,
        subject: Callable[[], str | None] | None = None,
        guard: Guard | None = None,
    ) -> None:
        self._client = client
        self._guard = guard
        self.subject = subject or (lambda: getattr(g, "ringfence_subject", None))
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        guard = self._guard
        if guard is None:
            client = self._client or RingfenceClient(
                app.config["RINGFENCE_URL"],
                client_id=app.config["RINGFENCE_CLIENT_ID"],
                client_secret=app.config["RINGFENCE_CLIENT_SECRET"],
            )
            guard = Guard(
                client,
                outage_allow_seconds=float(app.config.get("RINGFENCE_OUTAGE_ALLOW_SECONDS", 0)),
                unavailable_status=int(app.config.get("RINGFENCE_UNAVAILABLE_STATUS", 503)),
            )
        app.extensions[EXTENSION] = guard

    @property
    def guard(self) -> Guard:
        return current_app.extensions[EXTENSION]

    def check(
        self, workspace: str, resource: str, action: str, owner: str | None = None
    ) -> Verdict:
        """The verdict for the signed-in subject, without raising (for a view that
        decides itself what a deny looks like)."""
        return self.guard.decide(self.subject(), workspace, resource, action, owner)

    def require(
        self,
        resource: str,
        action: str,
        *,
        workspace: str | Callable[..., str] = "workspace",
        owner: Callable[..., str | None] | None = None,
    ) -> Callable[[F], F]:
        """A view decorator: the view runs only if the signed-in subject may do
        ``action`` on ``resource`` in the workspace."""

        def decorate(view: F) -> F:
            @functools.wraps(view)
            def guarded(*args: Any, **kwargs: Any) -> Any:
                name = workspace(**kwargs) if callable(workspace) else kwargs[workspace]
                verdict = self.check(name, resource, action, owner(**kwargs) if owner else None)
                enforce(verdict)
                return view(*args, **kwargs)

            return guarded  # type: ignore[return-value]

        return decorate


def enforce(verdict: Verdict) -> None:
    """Raise the HTTP exception of a verdict that does not allow; note its decision."""
    g.ringfence_decision = verdict.decision
    if verdict.allowed:
        return
    if verdict.status == 403:
        raise Forbidden(verdict.detail)
    raise Unavailable(verdict)


__all__ = ["FlaskRingfence", "Unavailable", "enforce"]
