"""The page behind the emailed accept link: choose a password, become active.

Server-rendered, no script; it calls the same service as ``POST /invitations/accept``.
"""

from __future__ import annotations

from flask import Blueprint, render_template, request

from gateway.errors import InvalidInput, RingfenceError
from gateway.http import services
from gateway.services.invitations import MIN_PASSWORD_LENGTH

bp = Blueprint("accept_page", __name__, template_folder="templates")

# Styles are inline in the template; nothing else may load or run on this page.
CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"


def _page(status: int = 200, **context: object) -> tuple[str, int, dict[str, str]]:
    context.setdefault("title", "Accept your invitation")
    context.setdefault("min_length", MIN_PASSWORD_LENGTH)
    html = render_template("accept.html", **context)
    headers = {
        "Content-Security-Policy": CSP,
        "Referrer-Policy": "no-referrer",  # the URL carries the token
        "X-Frame-Options": "DENY",
    }
    return html, status, headers


@bp.get("/accept")
def form() -> tuple[str, int, dict[str, str]]:
    token = request.args.get("token", "")
    if not token:
        return _page(400, error="This link has no invitation token.", show_form=False)
    return _page(token=token, name="", show_form=True, field_errors=[])


@bp.post("/accept")
def accept() -> tuple[str, int, dict[str, str]]:
    token = request.form.get("token", "")[:200]
    name = request.form.get("name", "").strip()[:200] or None
    try:
        user = services().invitations.accept(token, request.form.get("password", "")[:1024], name)
    except InvalidInput as exc:
        return _page(422, token=token, name=name or "", show_form=True, field_errors=[exc.detail])
    except RingfenceError as exc:
        return _page(exc.status, error=exc.detail or exc.title, show_form=False)
    return _page(
        title="Welcome to Ringfence",
        message=f"Your account {user.email} is active. You can sign in now.",
        show_form=False,
    )
