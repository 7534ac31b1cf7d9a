"""Two-step sign-in in the console: the code's page after a right password, and a
person's own authenticator app (set up with a QR code drawn on the server as SVG, no
script), recovery codes (shown once) and turning it off. Thin handlers over
``gateway.services.mfa``: the same checks, throttling and audit events as the API."""

from __future__ import annotations

import io

import segno
from flask import Response, g, redirect, request, url_for
from markupsafe import Markup

from console import session as console_session
from console.passkeys import MAX_CODE, confirmation
from console.remembered_devices import remember_if_asked
from console.views import _render, _safe_next, _sign_in_page, bp, viewer
from gateway.errors import (
    Conflict,
    InvalidInput,
    InvalidMfaCode,
    TooManyRequests,
    Unauthorized,
)
from gateway.logs import request_id
from gateway.services.mfa import TotpEnrolment
from gateway.web.http import services


def _code() -> str:
    return request.form.get("code", "").strip()[:MAX_CODE]


def _code_page(errors: list[str] | None = None, status: int = 200) -> Response:
    token, new_cookie = console_session.pre_session_token()
    g.console_pre_token = token
    response = _render(
        "sign_in_code.html",
        status=status,
        errors=errors or [],
        next=request.values.get("next", ""),
        methods=services().mfa.ticket_methods(console_session.mfa_ticket()),
    )
    if new_cookie:
        console_session.set_pre_session(response, new_cookie)
    return response


@bp.route("/sign-in/code", methods=["GET", "POST"])
def sign_in_code() -> Response:
    """The second step: a code from the app (or a recovery code) for the ticket the
    password step left in an HttpOnly cookie."""
    ticket = console_session.mfa_ticket()
    if not ticket:
        return redirect(url_for("console.sign_in"), 303)  # type: ignore[return-value]
    if request.method == "GET":
        return _code_page()
    try:
        issued = services().mfa.verify(ticket, _code(), request.remote_addr or "", request_id())
    except InvalidMfaCode as exc:
        return _code_page([exc.detail or exc.title], 401)
    except TooManyRequests as exc:
        response = _code_page([exc.detail or exc.title], 429)
        response.headers["Retry-After"] = str(exc.extensions.get("retry_after", 60))
        return response
    except Unauthorized as exc:  # the ticket expired or was used
        response = _sign_in_page({"_form": [exc.detail or exc.title]}, 401)
        console_session.end_mfa_ticket(response)
        return response
    _, session_id = services().auth.authenticate(issued.access_token)
    assert session_id is not None
    done = redirect(_safe_next(request.form.get("next")), 303)
    console_session.start_session(done, session_id)  # type: ignore[arg-type]
    console_session.end_mfa_ticket(done)  # type: ignore[arg-type]
    remember_if_asked(done, ticket, request.form.get("remember") == "1")  # type: ignore[arg-type]
    return done  # type: ignore[return-value]


def qr_svg(uri: str) -> Markup:
    """``uri`` as a QR code: an inline SVG of one path, no script or style attribute."""
    out = io.BytesIO()
    segno.make(uri, error="m").save(
        out, kind="svg", xmldecl=False, svgns=True, scale=5, border=4, svgclass="qr", lineclass=None
    )
    return Markup(out.getvalue().decode())  # noqa: S704 - segno's own markup of our URI


def _page(
    status: int = 200,
    enrolment: TotpEnrolment | None = None,
    codes: list[str] | None = None,
    errors: list[str] | None = None,
    notice: str | None = None,
) -> Response:
    return _render(
        "two_step.html",
        status=status,
        active="two-step",
        state=services().mfa.status(viewer().user_id),
        enrolment=enrolment,
        qr=qr_svg(enrolment.otpauth_uri) if enrolment else None,
        codes=codes,
        errors=errors or [],
        notice=notice,
        must_enrol=services().auth.enrolment_only(viewer().session_id),
    )


@bp.get("/account/two-step")
def two_step() -> Response:
    return _page(enrolment=services().mfa.pending_enrolment(viewer().actor))


@bp.post("/account/two-step/start")
def two_step_start() -> Response:
    try:
        return _page(201, services().mfa.begin_totp(viewer().actor))
    except Conflict as exc:
        return _page(409, errors=[exc.detail or exc.title])


@bp.post("/account/two-step/confirm")
def two_step_confirm() -> Response:
    try:
        codes = services().mfa.confirm_totp(viewer().actor, _code()).recovery_codes
    except (InvalidInput, Conflict, TooManyRequests) as exc:
        pending = services().mfa.pending_enrolment(viewer().actor)
        return _page(exc.status, pending, errors=[exc.detail or exc.title])
    return _page(codes=codes, notice="Two-step sign-in is on")


@bp.post("/account/two-step/recovery-codes")
def two_step_recovery_codes() -> Response:
    """New recovery codes, confirmed by a code (the form) or a passkey (the script's
    JSON request, which puts the answered page in place: the codes are shown once)."""
    v = viewer()
    try:
        codes = (
            services()
            .passkeys.renew_recovery_codes(v.actor, v.session_id, confirmation())
            .recovery_codes
        )
    except (InvalidInput, Conflict, TooManyRequests) as exc:
        if request.is_json:
            raise  # problem+json for the script to show
        return _page(exc.status, errors=[exc.detail or exc.title])
    return _page(codes=codes, notice="New recovery codes: the old ones no longer work")


@bp.post("/account/two-step/remove")
def two_step_remove() -> Response:
    try:
        services().mfa.remove_totp(viewer().actor, _code())
    except (InvalidInput, Conflict, TooManyRequests) as exc:
        return _page(exc.status, errors=[exc.detail or exc.title])
    return _page(notice="Two-step sign-in is off")


# A session good only for enrolling (RINGFENCE_MFA_REQUIRED) reaches these pages only.
ENROLMENT_PAGES = {"console.two_step", "console.two_step_start", "console.two_step_confirm"}
ENROLMENT_PAGES |= {"console.sign_out", "console.static"}
# A passkey is a factor too (console/passkeys.py).
ENROLMENT_PAGES |= {"console.passkeys", "console.passkey_options", "console.passkey_add"}


@bp.before_request
def _enrolment_first() -> Response | None:
    """After the console's sign-in check (registered after it): a person who must set
    up two-step sign-in is sent to it from every other page."""
    if "console_viewer" not in g or request.endpoint in ENROLMENT_PAGES:
        return None
    if not services().auth.enrolment_only(viewer().session_id):
        return None
    target = url_for("console.two_step")
    if request.headers.get("HX-Request"):
        response = Response("", 200)
        response.headers["HX-Redirect"] = target
        return response
    return redirect(target, 303)  # type: ignore[return-value]
