"""What the synchronous and the asyncio clients share, without I/O: the requests they
send, the answers they read, the retry policy and the token cache."""

from __future__ import annotations

import contextlib
import functools
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx

from ringfence_client.errors import GatewayUnavailable, problem_of
from ringfence_client.models import (
    ChangeBatch,
    Decision,
    Explanation,
    LoggedRevision,
    Page,
    Question,
    ResourceRef,
    Semantic,
    SubjectRef,
)

DECISIONS_SCOPE = "decisions:check"
REPLICATE_SCOPE = "decisions:replicate"
MIN_REVISION = "X-Min-Revision"
ALLOWED = "allowed by policy"
# Failures where the request never reached the gateway, or its answer never came back
# whole: retried (a check changes nothing, so asking again is safe). A read timeout is
# not: the gateway is slow, and asking again would only double the wait.
RETRIED_ERRORS: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
)


@dataclass(frozen=True, slots=True)
class Call:
    """One request to the gateway, relative to its base URL."""

    method: str
    path: str
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # Seconds for this call, where it differs from the client's (a long poll waits).
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``retries`` more attempts after the first on a connection error or a 503, waiting
    ``backoff * 2**n`` (with full jitter, capped at ``max_backoff``; a 503's
    ``Retry-After`` counts, within the cap) between them. Never on any other answer: a
    deny is a 200 and a refusal says something that asking again would not change."""

    retries: int = 2
    backoff: float = 0.05
    max_backoff: float = 1.0

    def delay(self, attempt: int, response: httpx.Response | None = None) -> float:
        wait = random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))  # noqa: S311
        if response is not None:
            with contextlib.suppress(ValueError):
                wait = max(wait, float(response.headers.get("Retry-After", 0)))
        return min(wait, self.max_backoff)


def unreachable(exc: Exception, url: str) -> GatewayUnavailable:
    return GatewayUnavailable(f"The gateway at {url} could not be reached: {exc!r}")


class TokenCache:
    """An access token from the client credentials grant, kept until shortly before it
    expires: ``refresh_margin`` seconds before (at most half its lifetime), a new one is
    fetched, so that no request goes out with a token about to expire."""

    def __init__(self, refresh_margin: float = 30.0) -> None:
        self.refresh_margin = refresh_margin
        self.token: str | None = None
        self.refresh_at = 0.0

    def current(self) -> str | None:
        if self.token is not None and time.monotonic() < self.refresh_at:
            return self.token
        return None

    def store(self, answer: Mapping[str, Any], asked_at: float) -> str:
        token = answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise GatewayUnavailable("The token endpoint answered without an access_token")
        lifetime = float(answer.get("expires_in") or 60)
        self.token = token
        self.refresh_at = asked_at + lifetime - min(self.refresh_margin, lifetime / 2)
        return token

    def forget(self, token: str) -> None:
        if self.token == token:
            self.token = None


def token_call(scope: str | None) -> dict[str, str]:
    return {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}


# -- requests -------------------------------------------------------------------------


def _freshness(min_revision: int | None) -> dict[str, str]:
    return {} if min_revision is None else {MIN_REVISION: str(int(min_revision))}


def check_call(
    subject: str,
    workspace: str,
    resource: str,
    action: str,
    owner: str | None,
    explain: bool,
    min_revision: int | None,
) -> Call:
    body: dict[str, Any] = {
        "subject": subject,
        "workspace": workspace,
        "resource": resource,
        "action": action,
    }
    if owner is not None:
        body["owner"] = owner
    if explain:
        body["explain"] = True
    return Call("POST", "/v1/check", body, _freshness(min_revision))


def _evaluation(question: Question) -> dict[str, Any]:
    properties = {"workspace": question.workspace}
    if question.owner is not None:
        properties["ownerID"] = question.owner
    return {
        "subject": {"type": "user", "id": question.subject},
        "action": {"name": question.action},
        "resource": {"type": question.resource, "id": "*", "properties": properties},
    }


def check_many_call(
    questions: Iterable[Question | tuple[str, str, str, str]],
    semantic: Semantic | None,
    explain: bool,
    min_revision: int | None,
) -> Call:
    items = [_evaluation(q if isinstance(q, Question) else Question(*q)) for q in questions]
    options: dict[str, Any] = {}
    if semantic is not None:
        options["evaluations_semantic"] = semantic
    if explain:
        options["explain"] = True
    body: dict[str, Any] = {"evaluations": items}
    if options:
        body["options"] = options
    return Call("POST", "/access/v1/evaluations", body, _freshness(min_revision))


def _page(limit: int | None, token: str | None) -> dict[str, Any]:
    page: dict[str, Any] = {}
    if limit is not None:
        page["limit"] = limit
    if token:
        page["token"] = token
    return {"page": page} if page else {}


def search_subjects_call(
    workspace: str,
    resource: str,
    action: str,
    owner: str | None,
    limit: int | None,
    token: str | None,
    min_revision: int | None,
) -> Call:
    properties = {"workspace": workspace, **({"ownerID": owner} if owner else {})}
    body = {
        "subject": {"type": "user"},
        "action": {"name": action},
        "resource": {"type": resource, "id": "*", "properties": properties},
        **_page(limit, token),
    }
    return Call("POST", "/access/v1/search/subject", body, _freshness(min_revision))


def search_resources_call(
    subject: str,
    action: str,
    resource: str,
    workspace: str | None,
    limit: int | None,
    token: str | None,
    min_revision: int | None,
) -> Call:
    body = {
        "subject": {"type": "user", "id": subject},
        "action": {"name": action},
        "resource": {
            "type": resource,
            **({"properties": {"workspace": workspace}} if workspace else {}),
        },
        **_page(limit, token),
    }
    return Call("POST", "/access/v1/search/resource", body, _freshness(min_revision))


def search_actions_call(
    subject: str,
    workspace: str,
    resource: str,
    owner: str | None,
    limit: int | None,
    token: str | None,
    min_revision: int | None,
) -> Call:
    properties = {"workspace": workspace, **({"ownerID": owner} if owner else {})}
    body = {
        "subject": {"type": "user", "id": subject},
        "resource": {"type": resource, "id": "*", "properties": properties},
        **_page(limit, token),
    }
    return Call("POST", "/access/v1/search/action", body, _freshness(min_revision))


# -- answers --------------------------------------------------------------------------

P = TypeVar("P")


def _parser(parse: Callable[[httpx.Response], P]) -> Callable[[httpx.Response], P]:
    """A 200 whose body is not what the gateway sends (a proxy's page, a truncated body)
    is the gateway not answering: :class:`GatewayUnavailable`, never a half-read answer."""

    @functools.wraps(parse)
    def parsed(response: httpx.Response) -> P:
        try:
            return parse(response)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise GatewayUnavailable(
                f"The gateway's answer could not be read ({exc!r}): {response.text[:200]!r}"
            ) from exc

    return parsed


def json_of(response: httpx.Response) -> Any:
    """The body of a 200, or the refusal raised as its exception."""
    if response.status_code != 200:
        raise problem_of(response)
    return response.json()


def _staleness(response: httpx.Response) -> tuple[bool, float | None]:
    stale = response.headers.get("X-Ringfence-Stale", "false").lower() == "true"
    raw = response.headers.get("X-Ringfence-Staleness")
    try:
        return stale, None if raw is None else float(raw)
    except ValueError:
        return stale, None


@_parser
def decision_of(response: httpx.Response) -> Decision:
    data = json_of(response)
    stale, staleness = _staleness(response)
    explanation = data.get("explanation")
    return Decision(
        allowed=data["allowed"] is True,
        revision=int(data["revision"]),
        reason=str(data.get("reason", "")),
        explanation=None if explanation is None else Explanation.from_json(explanation),
        stale=stale,
        staleness=staleness,
    )


def _evaluation_answer(item: Mapping[str, Any], stale: bool, staleness: float | None) -> Decision:
    context = item.get("context") or {}
    allowed = item.get("decision") is True
    error = context.get("error")
    reason = ALLOWED if allowed else str((context.get("reason_admin") or {}).get("en", ""))
    if error is not None:
        reason = str(error.get("message", "not evaluated"))
    explanation = context.get("explanation")
    return Decision(
        allowed=allowed,
        revision=int(context.get("revision", 0)),
        reason=reason,
        explanation=None if explanation is None else Explanation.from_json(explanation),
        stale=stale,
        staleness=staleness,
        error=None if error is None else reason,
    )


@_parser
def decisions_of(response: httpx.Response) -> list[Decision]:
    data = json_of(response)
    stale, staleness = _staleness(response)
    return [_evaluation_answer(item, stale, staleness) for item in data["evaluations"]]


def _page_of(data: Mapping[str, Any], results: list[Any]) -> Page[Any]:
    page = data.get("page") or {}
    return Page(results, str(page.get("next_token") or ""), int(page.get("total", len(results))))


@_parser
def subjects_of(response: httpx.Response) -> Page[SubjectRef]:
    data = json_of(response)
    return _page_of(data, [SubjectRef(str(r["type"]), str(r["id"])) for r in data["results"]])


@_parser
def resources_of(response: httpx.Response) -> Page[ResourceRef]:
    data = json_of(response)
    results = []
    for r in data["results"]:
        properties = r.get("properties") or {}
        owner = properties.get("ownerID")
        results.append(
            ResourceRef(
                str(r["type"]),
                str(r["id"]),
                str(properties.get("workspace", "")),
                None if owner is None else str(owner),
            )
        )
    return _page_of(data, results)


@_parser
def actions_of(response: httpx.Response) -> Page[str]:
    data = json_of(response)
    return _page_of(data, [str(r["name"]) for r in data["results"]])


# -- the change feed ------------------------------------------------------------------


def _scope(workspaces: Iterable[str] | None) -> list[tuple[str, str]]:
    return [("workspace", w) for w in sorted(workspaces)] if workspaces is not None else []


def snapshot_call(workspaces: Iterable[str] | None = None) -> Call:
    query = urlencode(_scope(workspaces))
    return Call("GET", "/v1/snapshot" + (f"?{query}" if query else ""))


def changes_call(
    since: int,
    timeout: float,
    limit: int | None,
    margin: float,
    workspaces: Iterable[str] | None = None,
) -> Call:
    params: list[tuple[str, str]] = [("since", str(int(since))), ("timeout", f"{timeout:g}")]
    if limit is not None:
        params.append(("limit", str(int(limit))))
    query = urlencode(params + _scope(workspaces))
    return Call("GET", f"/v1/changes?{query}", timeout=timeout + margin if timeout else None)


@_parser
def changes_of(response: httpx.Response) -> ChangeBatch:
    data = json_of(response)
    return ChangeBatch(
        int(data["since"]),
        int(data["revision"]),
        int(data["head"]),
        [LoggedRevision(int(c["revision"]), c["entries"]) for c in data["changes"]],
    )
