"""The fast lane of ``POST /v1/check``: the plain question with a remembered token,
answered below Flask.

Nearly every call other services make is the same request: ``POST /v1/check`` with a
service token this process accepted a moment ago (gateway.identity.token_cache) and the plain
body of four names. Routed through Flask, such a request costs several times the
decision itself (request and application contexts, URL matching, the hooks, the
response object): measured over HTTP, single checks reached about 77% of the requests
per second of ``/healthz``. This WSGI layer answers that one request directly, with the
same answer, headers and metrics as the Flask route, and hands every other request to
Flask untouched: another path, method or content type, no token or one not remembered
(Flask checks it in full and remembers it), ``X-Min-Revision``, any other body, and any
error. So nothing about authentication, validation or problems is decided here: a
request the lane is not sure of goes the full way, and the lane fails closed like it.
tests/functional/test_check_lane.py shows both ways answer alike.

AuthZEN batches (``POST /access/v1/evaluations``, unscoped or per workspace) take the
lane on the same terms when their body is the usual batch the typed path answers
(AuthZenService.evaluate_many_json); any other body goes to Flask, which answers or
refuses it as it always has.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from gateway.logs import request_id_from
from gateway.replication.sync import SyncState, state_of
from gateway.web.decision_api import plain_json, plain_question
from gateway.web.freshness import MIN_REVISION_HEADER, decision_headers, observe_decision
from gateway.web.http import ALWAYS_HEADERS, LANE_REQUEST_ID, bearer_token, decision_services_of
from gateway.web.state import gateway_state

log = logging.getLogger("ringfence.check_lane")

PATH = "/v1/check"
EVALUATIONS = "/access/v1/evaluations"
SCOPED = "/pdp/"
# The plain body is four names of at most 255 characters: anything longer is not plain.
MAX_PLAIN_BODY = 8192
_MIN_REVISION_KEY = "HTTP_" + MIN_REVISION_HEADER.upper().replace("-", "_")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class CheckLane:
    """WSGI middleware around the Flask app's ``wsgi_app``."""

    def __init__(self, app: Flask, flask_wsgi: WSGIApp) -> None:
        self.app = app
        self.state = gateway_state(app)  # built before the lane: looked up once
        self.flask_wsgi = flask_wsgi

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path == PATH:
            return self._check(environ, start_response)
        if path.endswith(EVALUATIONS):
            batch, scope = _batch_scope(path)
            if batch:
                return self._batch(environ, start_response, scope)
        return self.flask_wsgi(environ, start_response)

    def _check(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        body = self._body(environ, MAX_PLAIN_BODY)
        if body is None:
            return self.flask_wsgi(environ, start_response)
        question = plain_question(body)
        if question is not None:
            try:
                return self._answer(environ, start_response, question)
            except Exception:  # Flask answers it again, with its problem if it fails too
                log.warning("check lane failed; Flask answers the request", exc_info=True)
        environ["wsgi.input"] = io.BytesIO(body)  # what was read, for Flask to read again
        return self.flask_wsgi(environ, start_response)

    def _batch(
        self, environ: dict[str, Any], start_response: Callable[..., Any], scope: str | None
    ) -> Any:
        body = self._body(environ, self.state.settings.max_body_bytes)
        if body is None:
            return self.flask_wsgi(environ, start_response)
        try:
            answered = self._answer_batch(environ, start_response, body, scope)
            if answered is not None:
                return answered
        except Exception:  # as _check
            log.warning("check lane failed; Flask answers the request", exc_info=True)
        environ["wsgi.input"] = io.BytesIO(body)
        return self.flask_wsgi(environ, start_response)

    def _body(self, environ: dict[str, Any], limit: int) -> bytes | None:
        """The body of a request the lane may answer, else None (nothing read)."""
        if (
            environ.get("REQUEST_METHOD") != "POST"
            or environ.get("CONTENT_TYPE") != "application/json"
            or _MIN_REVISION_KEY in environ
        ):
            return None
        token = bearer_token(environ.get("HTTP_AUTHORIZATION", ""))
        if token is None or not self.state.token_cache.fresh(token):
            return None
        try:
            length = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            return None
        if not 0 < length <= limit:
            return None
        body: bytes = environ["wsgi.input"].read(length)
        return body

    def _answer_batch(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        body: bytes,
        scope: str | None,
    ) -> list[bytes] | None:
        """The typed path's answer to a batch, or None (nothing sent) if it declines."""
        started = time.perf_counter()
        gateway = self.state
        gateway.restart_after_fork()
        state = state_of(gateway.engine)
        confirmed_at = state.confirmed_at
        request_id = request_id_from(environ.get("HTTP_X_REQUEST_ID", ""))
        noted = LANE_REQUEST_ID.set(request_id)
        try:
            answer = decision_services_of(gateway).authzen.evaluate_many_json(body, scope)
        finally:
            LANE_REQUEST_ID.reset(noted)
        if answer is None:
            return None
        observe_decision(started, {"allow": answer.allowed, "deny": answer.denied})
        self._respond(start_response, answer.body, request_id, state, confirmed_at)
        return [answer.body]

    @staticmethod
    def _respond(
        start_response: Callable[..., Any],
        payload: bytes,
        request_id: str,
        state: SyncState,
        confirmed_at: float,
    ) -> None:
        """A 200 with the headers Flask gives a decision answer."""
        start_response(
            "200 OK",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(payload))),
                ("X-Request-ID", request_id),
                *ALWAYS_HEADERS,
                *decision_headers(state, confirmed_at),
            ],
        )

    def _answer(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        question: tuple[str, str, str, str],
    ) -> list[bytes]:
        started = time.perf_counter()
        gateway = self.state
        gateway.restart_after_fork()
        state = state_of(gateway.engine)
        confirmed_at = state.confirmed_at  # before answering, as freshness_before takes it
        request_id = request_id_from(environ.get("HTTP_X_REQUEST_ID", ""))
        noted = LANE_REQUEST_ID.set(request_id)  # for the decision log's line
        try:
            decision = decision_services_of(gateway).decisions.check(*question)
        finally:
            LANE_REQUEST_ID.reset(noted)
        payload = plain_json(decision)  # as flask.jsonify writes it, byte for byte
        observe_decision(started, {"allow" if decision.allowed else "deny": 1})
        self._respond(start_response, payload, request_id, state, confirmed_at)
        return [payload]


def _batch_scope(path: str) -> tuple[bool, str | None]:
    """Of a path ending in EVALUATIONS: whether it is a batch route, and its workspace
    (None unscoped; ``/pdp/<workspace>/access/v1/evaluations`` as Flask's route matches
    it, one non-empty segment)."""
    if path == EVALUATIONS:
        return True, None
    if path.startswith(SCOPED):
        workspace = path[len(SCOPED) : -len(EVALUATIONS)]
        if workspace and "/" not in workspace:
            return True, workspace
    return False, None
