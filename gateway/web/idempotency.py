"""``Idempotency-Key`` on the admin API's writes (gateway.services.idempotency owns the
rules): a retry with the key the first request had gets that request's outcome, marked
``Idempotent-Replayed: true``, instead of making the change twice."""

from __future__ import annotations

import logging

from flask import Flask, Response, g, request

from gateway.db.models import IdempotencyKey
from gateway.services.idempotency import IdempotencyService, fingerprint
from gateway.web.freshness import REVISION_HEADER, committed_but_unread
from gateway.web.http import DECISION_PATHS, current_actor, services
from gateway.web.state import gateway_state

log = logging.getLogger("ringfence.idempotency")

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Sign-in, tokens and pages act for whoever holds a credential, not an admin's change.
NOT_ADMIN: tuple[str, ...] = (*DECISION_PATHS, "/oauth/", "/auth/", "/invitations/accept")
NOT_ADMIN += ("/invite/", "/reset/", "/console", "/.well-known/", "/scim/")
KEPT_HEADERS = ("Content-Type", "Location", REVISION_HEADER)


def install(app: Flask) -> None:
    """Register the hooks; before gateway.web.freshness, so that the answer kept carries the
    revision header that freshness adds (after_request hooks run in reverse order)."""
    keys = IdempotencyService(gateway_state(app).session_factory)

    @app.before_request
    def claim_key() -> Response | None:
        key = request.headers.get(HEADER)
        if key is None or request.method not in WRITES or request.path.startswith(NOT_ADMIN):
            return None
        actor = current_actor()  # keys are the signed-in caller's own
        claim = keys.claim(
            f"user:{actor.user_id}",
            key,
            fingerprint(request.method, request.full_path, request.get_data()),
        )
        if claim.replay is not None:
            return _replay(claim.replay)
        row_id = claim.row_id
        assert row_id is not None
        g.idempotency_row = row_id
        services().uow.in_commit.append(
            lambda session, revision: IdempotencyService.record_revision(session, row_id, revision)
        )
        return None

    @app.after_request
    def keep_answer(response: Response) -> Response:
        row_id = g.pop("idempotency_row", None)
        if row_id is None:
            return response
        committed = services().uow.revision if "services" in g else 0
        kept = {name: response.headers[name] for name in KEPT_HEADERS if name in response.headers}
        try:
            keys.keep_answer(
                row_id, response.status_code, response.get_data(as_text=True), kept, committed
            )
        except Exception:
            # A retry then learns the revision committed (if any), or waits for the claim
            # to lapse; this answer stands.
            log.exception("the answer to an idempotent request was not kept")
        return response


def _replay(earlier: IdempotencyKey) -> Response:
    if earlier.status_code is None:  # committed, and the answer was never kept
        assert earlier.revision is not None
        response = committed_but_unread(earlier.revision)
    else:
        response = Response(
            earlier.response_body or "",
            status=earlier.status_code,
            headers=earlier.response_headers or {},
        )
    response.headers[REPLAYED_HEADER] = "true"
    return response
