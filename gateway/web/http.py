"""HTTP plumbing shared by every API: problem+json errors, request ids, the services of
the current request, and the signed-in actor."""

from __future__ import annotations

import contextlib
import hmac
import logging
import threading
from collections.abc import Iterable
from contextvars import ContextVar
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from apispec import BasePlugin
from flask import Flask, Response, current_app, g, jsonify, request
from flask_smorest import Api
from flask_smorest.pagination import PaginationMetadataSchema
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from gateway.audit import refusals
from gateway.errors import (
    PROBLEM_TYPE_PREFIX,
    InvalidInput,
    MfaEnrolmentRequired,
    PayloadTooLarge,
    RingfenceError,
    Unauthorized,
)
from gateway.logs import request_id
from gateway.services import Actor, Services, user_emails
from gateway.web.state import DecisionServices, GatewayState, state

log = logging.getLogger("ringfence.http")
PROBLEM_JSON = "application/problem+json"


# Every path that answers decisions (/v1/check, AuthZEN under /access/v1/ and per workspace
# under /pdp/<workspace>/access/v1/): the token guard and the freshness hooks go by prefix,
# so an endpoint added there is covered without being listed.
DECISION_PATHS = ("/v1/check", "/access/v1/", "/pdp/")


def is_decision_request() -> bool:
    return request.method == "POST" and request.path.startswith(DECISION_PATHS)


def problem_response(problem: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    response = jsonify(problem)
    response.status_code = int(problem["status"])
    response.mimetype = PROBLEM_JSON
    for name, value in (headers or {}).items():
        response.headers[name] = value
    if response.status_code == 413:
        # A body too large is not read: the server closes the connection after the
        # answer, and a client that sent its next request on it would see it cut.
        response.headers["Connection"] = "close"
    return response


def http_exception_problem(error: HTTPException) -> dict[str, Any]:
    """Werkzeug and flask-smorest errors, webargs validation messages included."""
    status = error.code or 500
    if status == 413:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        return PayloadTooLarge(f"The request body is larger than {limit} bytes").to_problem()
    problem: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + (error.name or "error").lower().replace(" ", "-"),
        "title": error.name,
        "status": status,
    }
    data = getattr(error, "data", None) or {}
    messages = data.get("messages")
    if messages:
        # webargs nests messages by location ("json", "query", ...); flatten them.
        errors: dict[str, Any] = {}
        for location, location_messages in messages.items():
            if isinstance(location_messages, dict):
                errors.update(location_messages)
            else:  # e.g. {"json": ["Invalid JSON body."]}
                errors[location] = location_messages
        problem["type"] = PROBLEM_TYPE_PREFIX + "invalid-input"
        problem["title"] = "The request is not valid"
        problem["detail"] = "; ".join(f"{field}: {_first(msg)}" for field, msg in errors.items())
        problem["errors"] = errors
    elif status == 400 and "JSON" in (error.description or ""):
        problem["detail"] = "The request body is not valid JSON"
    elif error.description:
        problem["detail"] = error.description
    return problem


def _first(message: Any) -> str:
    while isinstance(message, list | dict):
        message = message[0] if isinstance(message, list) else next(iter(message.values()))
    return str(message)


def http_exception_headers(error: HTTPException) -> dict[str, str]:
    """The headers Werkzeug would send with ``error`` (``Allow`` on a 405, say), but its
    HTML content type; and those flask-smorest's ``abort(..., headers=...)`` gave it."""
    headers = {name: value for name, value in error.get_headers() if name.lower() != "content-type"}
    headers.update(getattr(error, "data", {}).get("headers", {}) or {})
    return headers


# -- the errors in the OpenAPI document -------------------------------------------------

# What every error answer is (problem_response): RFC 9457's members and the extension
# members that gateway.errors' raisers add. More may come (RFC 9457 lets clients ignore
# the ones they do not know), so the object stays open.
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {
            "type": "string",
            "format": "uri-reference",
            "description": f"{PROBLEM_TYPE_PREFIX}<kind>: what went wrong, for programs",
            "examples": [f"{PROBLEM_TYPE_PREFIX}not-found"],
        },
        "title": {"type": "string", "description": "The kind of problem, for people"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "This occurrence, for people"},
        "errors": {
            "type": "object",
            "description": "Invalid input: field (or header) -> messages, nested like the "
            "input for nested fields",
            "additionalProperties": {"type": ["array", "object"]},
        },
        "request_id": {"type": "string", "description": "On a 500: the id in the server log"},
        "permission": {"type": "string", "description": "The permission that was missing"},
        "missing_permissions": {"type": "array", "items": {"type": "string"}},
        "role": {"type": "string"},
        "workspace": {"type": "string"},
        "reason": {"type": "string", "description": "Why a token was refused"},
        "scope": {"type": "string", "description": "The scope the token lacks"},
        "retry_after": {"type": "integer", "description": "Seconds, as in Retry-After"},
        "known_roles": {"type": "array", "items": {"type": "string"}},
        "known_scopes": {"type": "array", "items": {"type": "string"}},
        "allowed_domains": {"type": "array", "items": {"type": "string"}},
        "reports": {"type": "array", "items": {"type": "string"}},
        "problems": {"type": "array", "items": {"type": "string"}},
        "invitation_id": {"type": "integer"},
        "client_id": {"type": "string"},
        "max_evaluations": {"type": "integer"},
        "min_revision": {"type": "integer"},
        "revision": {"type": "integer"},
        "waited_ms": {"type": "integer"},
    },
    "additionalProperties": True,
}
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_STRING = {"type": "string"}
# Headers some errors always carry (RFC 9110, RFC 6750).
PROBLEM_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "Bearer; with RFC 6750 error details when a token was refused",
            "required": True,
            "schema": _STRING,
        }
    },
    405: {
        "Allow": {
            "description": "The methods the path answers",
            "required": True,
            "schema": _STRING,
        }
    },
    429: {
        "Retry-After": {
            "description": "Seconds to wait",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        }
    },
}
# The error responses listed on operations (any other status is the "default" one).
UNAUTHORIZED, FORBIDDEN = HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN


def problem_doc(status: int | None, description: str) -> dict[str, Any]:
    """An OpenAPI response: problem+json, with the headers of that status."""
    doc: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}},
    }
    if status in PROBLEM_HEADERS:
        doc["headers"] = PROBLEM_HEADERS[status]
    return doc


class ProblemDocs(BasePlugin):
    """Documents what the error handlers do on every operation: problem+json answers,
    401 and 403 where a bearer token is required, and no security requirement on the
    ``public`` endpoints (the ones that need no token, by Flask endpoint name)."""

    def __init__(self, public: Iterable[str]) -> None:
        self.public = frozenset(public)

    def operation_helper(
        self, path: str | None = None, operations: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        rule = kwargs.get("rule")
        for operation in (operations or {}).values():
            if rule is not None and rule.endpoint in self.public:
                operation["security"] = []
            responses = operation.setdefault("responses", {})
            if operation.get("security") != []:
                responses.setdefault(str(int(UNAUTHORIZED)), UNAUTHORIZED.name)
                responses.setdefault(str(int(FORBIDDEN)), FORBIDDEN.name)


class ProblemApi(Api):
    """flask-smorest's Api, with its errors rendered as RFC 9457 problem details, and
    documented as they are (:class:`ProblemDocs`); ``public_endpoints`` need no token.

    Blueprints are routed at once and documented when the OpenAPI document is first
    read: building it costs ~75 ms of every start (each served worker, each test's
    app), and most processes never serve it."""

    def __init__(
        self,
        app: Flask | None = None,
        *,
        public_endpoints: Iterable[str] = (),
        spec_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self._undocumented: list[tuple[Any, str, Any]] = []
        self._documenting = threading.Lock()
        spec_kwargs = dict(spec_kwargs or {})
        spec_kwargs["extra_plugins"] = [
            *spec_kwargs.get("extra_plugins", ()),
            ProblemDocs(public_endpoints),
        ]
        super().__init__(app, spec_kwargs=spec_kwargs)

    @property
    def spec(self) -> Any:
        """The OpenAPI document, with every blueprint registered so far in it."""
        if self._undocumented:
            with self._documenting:
                pending, self._undocumented = self._undocumented, []
                for blp, name, parameters in pending:
                    blp.register_views_in_doc(
                        self, self._app, self._spec, name=name, parameters=parameters
                    )
                    self._spec.tag({"name": name, "description": blp.description})
        return self._spec

    @spec.setter
    def spec(self, value: Any) -> None:
        self._spec = value

    def register_blueprint(self, blp: Any, *, parameters: Any = None, **options: Any) -> None:
        """flask-smorest's, with the documentation left for :attr:`spec` to write."""
        name = options.get("name", blp.name)
        self._app.extensions["flask-smorest"]["blp_name_to_api"][name] = self
        self._app.register_blueprint(blp, **options)
        self._undocumented.append((blp, name, parameters))

    def handle_http_exception(self, error: HTTPException) -> Response:
        return problem_response(http_exception_problem(error), http_exception_headers(error))

    def _register_responses(self) -> None:
        # flask-smorest's own would document its Error schema as application/json.
        self.spec.components.schema("Problem", PROBLEM_SCHEMA)
        for status in HTTPStatus:
            response = (
                problem_doc(status, status.phrase)
                if status >= 400
                else {"description": status.phrase}
            )
            self.spec.components.response(status.name, response, lazy=True)
        self.spec.components.response(
            self.DEFAULT_ERROR_RESPONSE_NAME, problem_doc(None, "Any other error"), lazy=True
        )

    def _register_pagination_header(self) -> None:
        # X-Pagination is JSON: a header with content, not a schema (which would say the
        # header value is an object in OpenAPI's "simple" style, k1,v1,k2,v2).
        self.spec.components.header(
            "PAGINATION",
            {
                "description": "Pagination metadata (JSON)",
                "required": True,
                "content": {"application/json": {"schema": PaginationMetadataSchema}},
            },
            lazy=True,
        )


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(RingfenceError)
    def ringfence_error(error: RingfenceError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(error, Unauthorized) else {}
        if challenge := getattr(error, "challenge", None):  # RFC 6750 error details
            headers["WWW-Authenticate"] = challenge
        if "retry_after" in error.extensions:
            headers["Retry-After"] = str(error.extensions["retry_after"])
        return problem_response(error.to_problem(), headers)

    app.errorhandler(Exception)(unexpected_error)


def unexpected_error(error: Exception) -> Response:
    if isinstance(error, HTTPException):
        return problem_response(http_exception_problem(error), http_exception_headers(error))
    # Never leak internals: the trace goes to the log, the client gets an id for it.
    log.exception("unhandled error (request %s)", request_id())
    return problem_response(RingfenceError(request_id=request_id()).to_problem())


# The request id of a decision answered by gateway.web.check_lane, outside any Flask request.
LANE_REQUEST_ID: ContextVar[str | None] = ContextVar("ringfence_lane_request_id", default=None)

# On every response (a handler may choose another Cache-Control).
ALWAYS_HEADERS = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"))


def services() -> Services:
    """The services of this request, around one database session closed at teardown."""
    if "services" not in g:
        gateway = state()
        g.db_session = gateway.session_factory()
        g.services = Services(
            g.db_session, gateway.engine, gateway.notifier, gateway.settings, gateway.throttle
        )
    return g.services


def decision_services() -> DecisionServices:
    """The decision and AuthZEN services of this app."""
    return decision_services_of(state())


def decision_services_of(gateway: GatewayState) -> DecisionServices:
    found = gateway.decisions
    if found is None:
        found = gateway.decisions = DecisionServices(
            gateway, lambda ids: user_emails(services().session, ids)
        )
    return found


def answered(body: dict[str, Any]) -> dict[str, Any]:
    """``body``, noted as this request's decision answer: the decision metrics count it
    as it is, instead of parsing the response back (gateway.web.freshness)."""
    g.decision_answer = body
    return body


def answered_json(body: bytes, results: dict[str, int]) -> Response:
    """A decision answer already in JSON, and its decisions by result (``allow``,
    ``deny``) for the decision metrics (gateway.web.freshness), which so do not parse it."""
    g.decision_results = results
    return current_app.response_class(body, mimetype="application/json")


def close_services(_exc: BaseException | None) -> None:
    session = g.pop("db_session", None)
    g.pop("services", None)
    if session is None:
        return
    try:
        session.close()
    except SQLAlchemyError:
        # The link dropped once the answer was decided: the ROLLBACK that ends the
        # session's transaction cannot be sent (the server ends it with the connection).
        # The answer stands; raising here turned it into a bare 500, even for a change
        # that had committed (a fault-injection run saw "committed but reported failed").
        log.warning("The request's database link dropped as it ended", exc_info=True)
        with contextlib.suppress(SQLAlchemyError):
            session.invalidate()


def current_session_id() -> str | None:
    """The sign-in session of this request's access token (after :func:`current_actor`)."""
    current_actor()
    return g.get("session_id")


def bearer_token(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else None."""
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


# What a session good only for enrolling a second factor may do (admin_api/mfa.py).
ENROLMENT_ENDPOINTS = frozenset({"mfa.MfaStatus", "mfa.TotpEnrolment", "mfa.TotpConfirm"}) | {
    "auth.Logout"
}


def current_actor() -> Actor:
    """The signed-in user of this request, from ``Authorization: Bearer <token>``."""
    if "actor" not in g:
        token = bearer_token(request.headers.get("Authorization", ""))
        if token is None:
            refusals.count("access_token", "missing-token")
            raise Unauthorized("Send an access token: Authorization: Bearer <token>")
        try:
            user, g.session_id = services().auth.authenticate(token)
        except Unauthorized as exc:  # a token was presented and refused
            note_refusal("access_token", exc)
            raise
        if request.endpoint not in ENROLMENT_ENDPOINTS and services().auth.enrolment_only(
            g.session_id
        ):
            raise MfaEnrolmentRequired(
                "Your sign-in is good only for setting up two-step sign-in: POST "
                "/auth/mfa/totp, then /auth/mfa/totp/confirm with a code"
            )
        g.actor = Actor(
            user.id,
            f"{user.name} <{user.email}>",
            request_id(),
            source_address=request.remote_addr,
            reason=change_reason(),
        )
    return g.actor


def note_refusal(kind: str, error: Exception) -> None:
    """Count the refusal of a caller who is not signed in; when the sampler lets it
    through (once per source and window), audit the refusals of that source since its
    previous event. Never the caller's words: the category of ``error`` only."""
    summary = state().refusals.refused(kind, request.remote_addr, refusals.reason_of(error))
    if summary is None:
        return
    try:
        services().auth.record_refusals(summary)
    except Exception:  # the caller is refused all the same; the metric has the count
        log.warning("could not audit %d refused %s", summary.refusals, kind, exc_info=True)


def require_metrics_token(expected: str) -> None:
    """With ``RINGFENCE_METRICS_TOKEN`` set, ``/metrics`` needs it as a bearer token
    (compared in constant time); refusals are counted, not audited (a scraper with an
    old token would otherwise write an event every few seconds)."""
    if not expected:
        return
    token = bearer_token(request.headers.get("Authorization", ""))
    if token is not None and hmac.compare_digest(token.encode(), expected.encode()):
        return
    refusals.count("metrics_token", "missing-token" if token is None else "wrong-token")
    raise Unauthorized("Send the metrics token: Authorization: Bearer <RINGFENCE_METRICS_TOKEN>")


REASON_HEADER = "X-Ringfence-Reason"
MAX_REASON = 1000


def change_reason() -> str | None:
    """The reason the admin typed for this change (``X-Ringfence-Reason``), recorded on
    its audit events; percent-encoded UTF-8 is decoded, so any language fits a header."""
    raw = request.headers.get(REASON_HEADER, "").strip()
    if not raw:
        return None
    try:
        reason = unquote(raw, errors="strict") if "%" in raw else raw
    except UnicodeDecodeError:
        reason = "\x00"  # refused below, like any other unprintable reason
    if len(reason) > MAX_REASON or not reason.isprintable():
        raise InvalidInput(
            f"{REASON_HEADER} must be printable text of at most {MAX_REASON} characters",
            errors={REASON_HEADER: ["invalid"]},
        )
    return reason
