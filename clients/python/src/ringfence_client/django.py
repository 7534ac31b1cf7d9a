"""The Django guard: a middleware and a view decorator (``pip install
ringfence-client[django]``).

    # settings.py
    MIDDLEWARE = [..., "ringfence_client.django.RingfenceMiddleware"]
    RINGFENCE = {"URL": "https://ringfence.example", "CLIENT_ID": "...", "CLIENT_SECRET": "..."}

    # views.py
    @ringfence_required("documents", "read")
    def documents(request, workspace): ...

The subject is ``request.user.email`` unless ``RINGFENCE["SUBJECT"]`` names another
attribute of the user (``"username"``, ``"pk"``); an anonymous user has none (403). The
workspace is the view's ``workspace`` argument unless ``workspace=`` names another or
gives a function of the request and the view's arguments; ``owner=`` likewise.

The middleware holds the one :class:`Guard` (made from ``settings.RINGFENCE`` when the
first request arrives), puts ``request.ringfence`` (the guard's :meth:`check` for the
request's subject) on each request, and answers :class:`AccessDenied` raised by a view
(the decorator's, or ``request.ringfence.require(...)``'s) with 403, or 503 and
``Retry-After`` when the gateway cannot answer (fail closed). Optional settings:
``OUTAGE_ALLOW_SECONDS`` (the opt-in cache of allows for outages, 0: off) and
``UNAVAILABLE_STATUS`` (503).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from ringfence_client.client import RingfenceClient
from ringfence_client.guard import AccessDenied, Guard, Verdict

F = TypeVar("F", bound=Callable[..., Any])

# The guard of the configuration in force, and that configuration (kept, so that a new
# settings.RINGFENCE, as in tests, is never mistaken for the old one).
_current: list[tuple[Any, Guard]] = []


def guard_from_settings() -> Guard:
    """The guard of the current ``settings.RINGFENCE``, made once per configuration."""
    config = settings.RINGFENCE
    if _current and _current[0][0] is config:
        return _current[0][1]
    client = config.get("CLIENT") or RingfenceClient(
        config["URL"], client_id=config["CLIENT_ID"], client_secret=config["CLIENT_SECRET"]
    )
    guard = Guard(
        client,
        outage_allow_seconds=float(config.get("OUTAGE_ALLOW_SECONDS", 0)),
        unavailable_status=int(config.get("UNAVAILABLE_STATUS", 503)),
    )
    _current[:] = [(config, guard)]
    return guard


def subject_of(request: HttpRequest) -> str | None:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    value = getattr(user, settings.RINGFENCE.get("SUBJECT", "email"), None)
    return None if value in (None, "") else str(value)


class RequestGuard:
    """``request.ringfence``: the guard's questions for the request's subject."""

    def __init__(self, guard: Guard, request: HttpRequest) -> None:
        self.guard = guard
        self.request = request

    def check(
        self, workspace: str, resource: str, action: str, owner: str | None = None
    ) -> Verdict:
        return self.guard.decide(subject_of(self.request), workspace, resource, action, owner)

    def require(
        self, workspace: str, resource: str, action: str, owner: str | None = None
    ) -> Verdict:
        verdict = self.check(workspace, resource, action, owner)
        if not verdict.allowed:
            raise AccessDenied(verdict)
        return verdict


def refusal(verdict: Verdict) -> HttpResponse:
    """The response to a verdict that does not allow."""
    response = HttpResponse(verdict.detail, status=verdict.status, content_type="text/plain")
    if verdict.retry_after is not None and verdict.status != 403:
        response["Retry-After"] = str(verdict.retry_after)
    return response


class RingfenceMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.ringfence = RequestGuard(guard_from_settings(), request)
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, AccessDenied):
            return refusal(exception.verdict)
        return None


def ringfence_required(
    resource: str,
    action: str,
    *,
    workspace: str | Callable[..., str] = "workspace",
    owner: Callable[..., str | None] | None = None,
) -> Callable[[F], F]:
    """A view decorator: the view runs only if the request's subject may do ``action``
    on ``resource`` in the workspace; otherwise 403 (or the fail-closed 503). Works with
    or without the middleware."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            name = workspace(request, **kwargs) if callable(workspace) else kwargs[workspace]
            checker = getattr(request, "ringfence", None) or RequestGuard(
                guard_from_settings(), request
            )
            verdict = checker.check(
                name, resource, action, owner(request, **kwargs) if owner else None
            )
            if not verdict.allowed:
                return refusal(verdict)
            request.ringfence_decision = verdict.decision
            return view(request, *args, **kwargs)

        return guarded  # type: ignore[return-value]

    return decorate
