"""Passkeys and security keys in the console: the person's own (``/console/account/
passkeys``: add one with a name, see them, remove one), **Sign in with a passkey** on the
sign-in page (passwordless: the authenticator offers the passkeys it keeps for this site),
and a passkey as the second step after a right password (the code's page). Thin handlers
over ``gateway.services.passkeys``; the browser's side is ``static/passkeys.js``.

A ceremony is two requests: the options (JSON, with a challenge the service stores bound
to this browser: its console session, its sign-in cookie, or the password step's ticket,
all HttpOnly), then the browser's answer (JSON). Both carry the page's CSRF token in a
header, and every refusal is problem+json (``console.views._error``) for the script to
show. Adding a passkey answers with the page itself, which the script puts in place: the
recovery codes of a first factor are shown once, there, and kept nowhere.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request

from console import session as console_session
from console.remembered_devices import remember_if_asked
from console.views import _render, _safe_next, bp, viewer
from gateway.errors import BadRequest, Conflict, InvalidInput, TooManyRequests
from gateway.logs import request_id
from gateway.services.passkeys import Confirmation, Passkey, PasskeyAdded
from gateway.web.http import services

PASSKEY_ID = "<int(max=2147483647):passkey_id>"
MAX_CODE = 64
NEEDS_SCRIPT = "Adding a passkey needs JavaScript in your browser, and a browser with passkeys"


def _body() -> dict[str, Any]:
    """The JSON object a ceremony's request sends (BadRequest if it is not one)."""
    body = request.get_json(silent=True) if request.is_json else None
    if not isinstance(body, dict):
        raise BadRequest("Send a JSON object")
    return body


def _credential(body: dict[str, Any]) -> dict[str, Any]:
    credential = body.get("credential")
    if not isinstance(credential, dict):
        raise BadRequest("The browser's answer (credential) is missing")
    return credential


def _name(body: dict[str, Any]) -> str:
    name = body.get("name", "")
    return name if isinstance(name, str) else ""


# -- the person's own passkeys ------------------------------------------------------------


def _page(
    status: int = 200,
    notice: str | None = None,
    errors: list[str] | None = None,
    added: PasskeyAdded | None = None,
) -> Response:
    v = viewer()
    return _render(
        "passkeys.html",
        status=status,
        active="passkeys",
        passkeys=services().passkeys.of_person(v.user_id),
        codes=added.recovery_codes if added else None,
        errors=errors or [],
        notice=notice,
        must_enrol=services().auth.enrolment_only(v.session_id),
    )


@bp.get("/account/passkeys")
def passkeys() -> Response:
    return _page()


@bp.post("/account/passkeys/options")
def passkey_options() -> Response:
    """The options for ``navigator.credentials.create()``, the challenge bound to this
    console session."""
    v = viewer()
    body = _body()
    return jsonify(services().passkeys.registration_options(v.actor, v.session_id, _name(body)))


@bp.post("/account/passkeys")
def passkey_add() -> Response:
    """Keep the passkey the browser made; the page itself (201) as the answer."""
    if not request.is_json:  # a form posted without the script: no ceremony happened
        return _page(400, errors=[NEEDS_SCRIPT])
    v = viewer()
    body = _body()
    added = services().passkeys.register(v.actor, v.session_id, _credential(body), _name(body))
    notice = f"Passkey “{added.passkey.name}” added: it signs you in from now on."
    return _page(201, notice=notice, added=added)


def confirmation() -> Confirmation:
    """How the person confirms a change to their own factors: one of their passkeys'
    answer (the script's JSON request), or a code (a form)."""
    if request.is_json:
        return Confirmation(credential=_credential(_body()))
    return Confirmation(code=request.form.get("code", "").strip()[:MAX_CODE])


@bp.post("/account/confirm/passkey-options")
def confirm_options() -> Response:
    """The options for confirming a change with one of the person's passkeys, the
    challenge bound to this console session."""
    _body()
    v = viewer()
    return jsonify(services().passkeys.confirmation_options(v.actor, v.session_id))


def _remove_page(passkey: Passkey, status: int = 200, errors: list[str] | None = None) -> Response:
    return _render(
        "passkey_remove.html",
        status=status,
        active="passkeys",
        passkey=passkey,
        state=services().mfa.status(viewer().user_id),
        errors=errors or [],
    )


@bp.route(f"/account/passkeys/{PASSKEY_ID}/remove", methods=["GET", "POST"])
def passkey_remove(passkey_id: int) -> Response:
    """Remove a passkey, once the person confirms it is them (GET: the page that asks)."""
    v = viewer()
    passkey = services().passkeys.own(v.actor, passkey_id)  # NotFound for another's
    if request.method == "GET":
        return _remove_page(passkey)
    try:
        removed = services().passkeys.remove(v.actor, passkey_id, v.session_id, confirmation())
    except Conflict as exc:  # the last factor, while a policy asks for one
        if request.is_json:
            raise  # the script shows it
        return _page(exc.status, errors=[exc.detail or exc.title])
    except (InvalidInput, TooManyRequests) as exc:  # not confirmed
        if request.is_json:
            raise
        return _remove_page(passkey, exc.status, [exc.detail or exc.title])
    return _page(notice=f"Passkey “{removed.name}” removed: it no longer signs you in.")


# -- signing in ----------------------------------------------------------------------------


def _sign_in_binding() -> str:
    """The sign-in page's pre-session cookie (random, HttpOnly; the CSRF check of this
    request has just proved the page came with it): what binds a passwordless ceremony
    to this browser."""
    value = request.cookies.get(console_session.cookie_name(console_session.PRE_SESSION_COOKIE))
    return value if value and len(value) <= 100 else ""


@bp.post("/sign-in/passkey/options")
def passkey_sign_in_options() -> Response:
    _body()
    options = services().passkeys.sign_in_options(_sign_in_binding(), request.remote_addr or "")
    return jsonify(options)


@bp.post("/sign-in/passkey")
def passkey_sign_in() -> Response:
    """A passwordless sign-in: a console session for the passkey's person, and where to
    go next (the script follows it)."""
    body = _body()
    issued = services().passkeys.sign_in(
        _sign_in_binding(), _credential(body), request.remote_addr or "", request_id()
    )
    return _signed_in(issued.access_token, body)


@bp.post("/sign-in/code/passkey/options")
def passkey_second_options() -> Response:
    _body()
    return jsonify(services().passkeys.second_factor_options(console_session.mfa_ticket()))


@bp.post("/sign-in/code/passkey")
def passkey_second() -> Response:
    """The second step with a passkey, for the ticket the password step left."""
    body = _body()
    issued = services().passkeys.verify_second_factor(
        console_session.mfa_ticket(), _credential(body), request.remote_addr or "", request_id()
    )
    response = _signed_in(issued.access_token, body)
    console_session.end_mfa_ticket(response)
    remember_if_asked(response, console_session.mfa_ticket(), body.get("remember") is True)
    return response


def _signed_in(access_token: str, body: dict[str, Any]) -> Response:
    _, session_id = services().auth.authenticate(access_token)
    assert session_id is not None
    next_page = body.get("next") if isinstance(body.get("next"), str) else None
    response = jsonify({"redirect": _safe_next(next_page)})
    console_session.start_session(response, session_id)
    return response
