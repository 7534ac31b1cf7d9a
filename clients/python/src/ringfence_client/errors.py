"""The SDK's exceptions: a refusal of the gateway is an RFC 9457 problem document,
mapped onto a class by its status and type; an unreachable gateway is
:class:`GatewayUnavailable`. A deny is never an exception: it is a :class:`Decision`
with ``allowed`` False."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

PROBLEM_PREFIX = "urn:ringfence:problem:"


class RingfenceError(Exception):
    """Every error of the SDK."""


class GatewayUnavailable(RingfenceError):
    """The gateway could not answer: it could not be reached, the connection failed, or
    it said 503 on every attempt. A guard fails closed on it (503 by default)."""


class ProblemError(RingfenceError):
    """The gateway refused the request with a problem document.

    ``type`` is the problem's short type (``urn:ringfence:problem:`` removed), ``problem``
    the whole document (its extension members too, e.g. ``errors`` of a 400/422)."""

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        self.status = status
        self.problem = dict(problem)
        raw_type = str(problem.get("type", ""))
        self.type = raw_type.removeprefix(PROBLEM_PREFIX)
        self.title = str(problem.get("title", ""))
        self.detail = str(problem.get("detail") or self.title or f"HTTP {status}")
        super().__init__(f"{status} {self.type or 'error'}: {self.detail}")


class BadRequest(ProblemError):
    """400 or 422: the request is not valid (``problem["errors"]`` says where)."""


class AuthenticationError(ProblemError):
    """401: no token, a bad one, or wrong client credentials."""


class InsufficientScope(ProblemError):
    """403: the token lacks the scope the endpoint needs (``decisions:check``)."""


class NotFound(ProblemError):
    """404."""


class RevisionNotReached(ProblemError):
    """409 ``revision-not-reached``: the replica did not reach ``min_revision`` within
    its wait (retry, or ask again later)."""


class PayloadTooLarge(ProblemError):
    """413: e.g. more evaluations in one batch than the gateway takes."""


class RateLimited(ProblemError):
    """429."""


class ServiceUnavailable(ProblemError, GatewayUnavailable):
    """503 on every attempt: ``replica-stale``, ``database-unavailable``..."""


_BY_STATUS: dict[int, type[ProblemError]] = {
    400: BadRequest,
    401: AuthenticationError,
    403: InsufficientScope,
    404: NotFound,
    409: RevisionNotReached,
    413: PayloadTooLarge,
    422: BadRequest,
    429: RateLimited,
    503: ServiceUnavailable,
}


def problem_of(response: httpx.Response) -> ProblemError:
    """The exception for a refusal: the problem document's, or one made up from an
    answer that is not one (a proxy's page, an OAuth error)."""
    body: Any = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"title": response.reason_phrase, "detail": response.text[:500] or None}
    elif "error" in body and "type" not in body:  # OAuth 2.0 (RFC 6749 section 5.2)
        body = {
            "type": PROBLEM_PREFIX + str(body["error"]),
            "title": str(body["error"]),
            "detail": body.get("error_description"),
        }
    cls = _BY_STATUS.get(response.status_code, ProblemError)
    if response.status_code == 409 and not str(body.get("type", "")).endswith(
        "revision-not-reached"
    ):
        cls = ProblemError
    return cls(response.status_code, body)
