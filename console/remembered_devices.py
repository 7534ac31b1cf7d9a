"""Remembered browsers in the console (``gateway.services.remembered_devices``,
``RINGFENCE_MFA_REMEMBER_DAYS``): the code's page offers "Remember this browser for N
days" (for a code and a passkey alike), and the two-step page lists the person's
remembered browsers with **Forget** and **Forget all browsers**. The skip itself happens
at the password step (``console.views.sign_in``). The cookie holds only a random token
(HttpOnly, SameSite=Lax, Secure and ``__Host-`` over https: ``console/session.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Response, redirect, request, url_for

from console import session as console_session
from console.views import bp, viewer
from gateway.logs import request_id
from gateway.services.remembered_devices import RememberedBrowser
from gateway.web.http import services

DEVICE_ID = "<int(max=2147483647):device_id>"
NOTICES = {
    "forgotten": "Browser forgotten: signing in there asks for the second step again.",
    "all-forgotten": "Every browser forgotten: signing in asks for the second step again.",
}


def remember_if_asked(response: Response, ticket: str, asked: bool) -> None:
    """After a right second step for ``ticket``: remember this browser if the person
    ticked the box (the service checks the ticket was used by that step just now)."""
    if not asked:
        return
    remembered = services().remembered_devices.remember(
        ticket,
        request.headers.get("User-Agent", "")[:512],
        request.remote_addr or "",
        request_id(),
        replacing=console_session.remembered_token(),
    )
    if remembered is not None:
        console_session.set_remembered(response, remembered.token, remembered.max_age)


@dataclass(frozen=True)
class RememberedList:
    days: int
    browsers: list[RememberedBrowser]
    notice: str | None


def remembered_browsers() -> RememberedList | None:
    """The signed-in person's remembered browsers for the two-step page; None when
    remembering is off or they have no second factor (nothing to remember)."""
    found = services().remembered_devices
    user_id = viewer().user_id
    if not found.offered(user_id):
        return None
    return RememberedList(
        found.days,
        found.of_person(user_id, console_session.remembered_token()),
        NOTICES.get(request.args.get("browsers", "")),
    )


@bp.context_processor
def _remembering() -> dict[str, Any]:
    return {
        "remember_days": console_session.settings().mfa_remember_days,
        "remembered_browsers": remembered_browsers,
    }


def _to_two_step(notice: str, forget_cookie: bool) -> Response:
    response = redirect(url_for("console.two_step", browsers=notice), 303)
    if forget_cookie:  # this browser was among them: its cookie is spent
        console_session.forget_remembered(response)  # type: ignore[arg-type]
    return response  # type: ignore[return-value]


@bp.post(f"/account/two-step/browsers/{DEVICE_ID}/forget")
def remembered_forget(device_id: int) -> Response:
    this = services().remembered_devices.forget(
        viewer().actor, device_id, console_session.remembered_token()
    )
    return _to_two_step("forgotten", this)


@bp.post("/account/two-step/browsers/forget-all")
def remembered_forget_all() -> Response:
    _, this = services().remembered_devices.forget_all(
        viewer().actor, console_session.remembered_token()
    )
    return _to_two_step("all-forgotten", this)
