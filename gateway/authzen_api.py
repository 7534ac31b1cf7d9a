"""The AuthZEN Authorization API 1.0 over HTTP: evaluation, evaluations, the three
searches and the discovery metadata, unscoped and per workspace.

Unscoped (``/access/v1/...``) the workspace is ``resource.properties.workspace``;
scoped (``/pdp/<workspace>/access/v1/...``) it is the URL's, so requests look exactly
like other decision points' (the Todo interop scenario sends no workspace). Each
workspace's metadata is at ``/.well-known/authzen-configuration/pdp/<workspace>``
(the metadata path of the decision point ``<base>/pdp/<workspace>``, as RFC 8414
places an issuer's). Handlers only read the JSON body; the mapping is
:mod:`gateway.services.authzen`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import current_app, request

from gateway.errors import BadRequest
from gateway.http import answered, decision_services
from gateway.json_input import TOO_DEEP, Blueprint, TooDeeplyNested, loads
from gateway.services.authzen import AuthZenService

blp = Blueprint(
    "authzen",
    __name__,
    description="AuthZEN Authorization API 1.0: evaluations, searches, discovery",
)

SCOPE = "/pdp/<workspace>"


# Request bodies for the OpenAPI document, as plain JSON Schema: the service validates
# (AuthZEN wants 400s, and a batch item's error is a deny, not a refusal).
_ENTITY = {
    "type": "object",
    "required": ["type", "id"],
    "properties": {
        "type": {"type": "string"},
        "id": {"type": "string"},
        "properties": {"type": "object"},
    },
}
_ACTION = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "properties": {"type": "object"}},
}
_RESOURCE = {
    **_ENTITY,
    "description": "type is the Ringfence resource; properties.workspace the workspace "
    "(unscoped endpoints only), properties.ownerID the owner",
}
_PARTS = {
    "subject": _ENTITY,
    "action": _ACTION,
    "resource": _RESOURCE,
    "context": {"type": "object"},
}
EVALUATION = {"type": "object", "required": ["subject", "action", "resource"], "properties": _PARTS}
EVALUATIONS = {
    "type": "object",
    "properties": {
        **_PARTS,
        "options": {
            "type": "object",
            "properties": {
                "evaluations_semantic": {
                    "enum": ["execute_all", "deny_on_first_deny", "permit_on_first_permit"]
                }
            },
        },
        "evaluations": {"type": "array", "items": {"type": "object"}},
    },
}
SEARCH = {
    "type": "object",
    "properties": {
        **_PARTS,
        "page": {
            "type": "object",
            "properties": {"limit": {"type": "integer"}, "token": {"type": "string"}},
        },
    },
}


def _json_body() -> Any:
    """The request's JSON; 400 for another content type, an empty or a malformed body."""
    if not request.is_json:
        raise BadRequest("Send the request as JSON (Content-Type: application/json)")
    raw = request.get_data(cache=False)
    if not raw.strip():
        raise BadRequest("The request body is empty")
    try:
        return loads(raw)
    except TooDeeplyNested as exc:
        raise BadRequest(TOO_DEEP) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("The request body is not valid JSON") from exc


def _authzen() -> AuthZenService:
    return decision_services().authzen


def _post(
    path: str,
    call: Callable[[AuthZenService], Callable[..., Any]],
    schema: dict[str, Any],
    doc: str,
) -> None:
    """Route ``path`` unscoped and per workspace to one service method."""

    def unscoped() -> Any:
        return answered(call(_authzen())(_json_body()))

    def scoped(workspace: str) -> Any:
        return answered(call(_authzen())(_json_body(), workspace))

    body = {"requestBody": {"content": {"application/json": {"schema": schema}}}}
    name = path.strip("/").replace("/", "_")
    for endpoint, view, url in ((name, unscoped, path), (f"{name}_scoped", scoped, SCOPE + path)):
        view.__name__ = endpoint
        view.__doc__ = doc
        blp.route(url, methods=["POST"], endpoint=endpoint)(blp.doc(**body)(view))


_post(
    "/access/v1/evaluation",
    lambda s: s.evaluate,
    EVALUATION,
    "AuthZEN access evaluation: one decision (a deny is a 200)",
)
_post(
    "/access/v1/evaluations",
    lambda s: s.evaluate_many,
    EVALUATIONS,
    "AuthZEN evaluations: a batch with defaults and an evaluations_semantic",
)
_post(
    "/access/v1/search/subject",
    lambda s: s.search_subjects,
    SEARCH,
    "AuthZEN subject search: who may; paged with page.limit and page.token",
)
_post(
    "/access/v1/search/resource",
    lambda s: s.search_resources,
    SEARCH,
    "AuthZEN resource search: where the subject may; paged",
)
_post(
    "/access/v1/search/action",
    lambda s: s.search_actions,
    SEARCH,
    "AuthZEN action search: what the subject may do on the resource; paged",
)


_ENDPOINT = {"type": "string", "format": "uri"}
CONFIGURATION = {
    "type": "object",
    "required": ["policy_decision_point", "access_evaluation_endpoint"],
    "properties": {
        name: _ENDPOINT
        for name in (
            "policy_decision_point",
            "access_evaluation_endpoint",
            "access_evaluations_endpoint",
            "search_subject_endpoint",
            "search_resource_endpoint",
            "search_action_endpoint",
        )
    },
}
_CONFIGURATION_DOC = {
    "responses": {
        "200": {
            "description": "AuthZEN metadata",
            "content": {"application/json": {"schema": CONFIGURATION}},
        }
    },
    "security": [],
}


@blp.route("/.well-known/authzen-configuration", methods=["GET"])
@blp.doc(**_CONFIGURATION_DOC)
def configuration() -> Any:
    """AuthZEN discovery metadata of the unscoped decision point."""
    return AuthZenService.configuration(current_app.extensions["ringfence"].settings.public_url)


@blp.route("/.well-known/authzen-configuration/pdp/<workspace>", methods=["GET"])
@blp.doc(**_CONFIGURATION_DOC)
def workspace_configuration(workspace: str) -> Any:
    """AuthZEN discovery metadata of one workspace's decision point.

    Answered for any name, existing or not, so it tells nobody which workspaces exist.
    """
    settings = current_app.extensions["ringfence"].settings
    return AuthZenService.configuration(settings.public_url, workspace)
