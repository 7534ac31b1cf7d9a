"""The fast lane of ``POST /v1/check``: the plain question with a remembered token,
answered below Flask.

Nearly every call other services make is the same request: ``POST /v1/check`` with a
service token this process accepted a moment ago (gateway.token_cache) and the plain
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
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from gateway.decision_api import plain_answer, plain_question
from gateway.freshness import MIN_REVISION_HEADER, decision_headers, observe_decision
from gateway.http import (
    ALWAYS_HEADERS,
    LANE_REQUEST_ID,
    bearer_token,
    decision_services_of,
    request_id_from,
)
from gateway.sync import state_of

log = logging.getLogger("ringfence.check_lane")

PATH = "/v1/check"
# The plain body is four names of at most 255 characters: anything longer is not plain.
MAX_PLAIN_BODY = 8192
_MIN_REVISION_KEY = "HTTP_" + MIN_REVISION_HEADER.upper().replace("-", "_")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class CheckLane:
    """WSGI middleware around the Flask app's ``wsgi_app``."""

    def __init__(self, app: Flask, flask_wsgi: WSGIApp) -> None:
        self.app = app
        self.flask_wsgi = flask_wsgi

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        body = self._plain_body(environ)
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

    def _plain_body(self, environ: dict[str, Any]) -> bytes | None:
        """The body of a request the lane may answer, else None (nothing read)."""
        if (
            environ.get("PATH_INFO") != PATH
            or environ.get("REQUEST_METHOD") != "POST"
            or environ.get("CONTENT_TYPE") != "application/json"
            or _MIN_REVISION_KEY in environ
        ):
            return None
        token = bearer_token(environ.get("HTTP_AUTHORIZATION", ""))
        if token is None or not self.app.extensions["ringfence_token_cache"].fresh(token):
            return None
        try:
            length = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            return None
        if not 0 < length <= MAX_PLAIN_BODY:
            return None
        body: bytes = environ["wsgi.input"].read(length)
        return body

    def _answer(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        question: tuple[str, str, str, str],
    ) -> list[bytes]:
        started = time.perf_counter()
        extensions = self.app.extensions
        extensions["ringfence_restart_after_fork"]()
        state = state_of(extensions["ringfence"].engine)
        confirmed_at = state.confirmed_at  # before answering, as freshness_before takes it
        request_id = request_id_from(environ.get("HTTP_X_REQUEST_ID", ""))
        noted = LANE_REQUEST_ID.set(request_id)  # for the decision log's line
        try:
            decision = decision_services_of(self.app).decisions.check(*question)
        finally:
            LANE_REQUEST_ID.reset(noted)
        answer = plain_answer(decision)
        # As flask.jsonify writes it (sorted, compact, a final newline): byte for byte.
        payload = (json.dumps(answer, sort_keys=True, separators=(",", ":")) + "\n").encode()
        observe_decision(started, {"allow" if decision.allowed else "deny": 1})
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
        return [payload]
