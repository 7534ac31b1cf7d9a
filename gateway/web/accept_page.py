"""The page behind the emailed link, ``/invite/<token>``: who invited you to which
workspaces with which roles; confirm your name, choose a password, become active.

Server-rendered, no script; it calls the same service as ``POST /invitations/accept``.
The token is in the path, so request logs redact it (:class:`RedactInviteTokens`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from flask import Blueprint, render_template, request, url_for

from gateway.errors import InvalidInput, RingfenceError
from gateway.identity.passwords import MIN_PASSWORD_LENGTH
from gateway.logs import request_id
from gateway.notifier import name_problem
from gateway.web.http import services
from gateway.web.state import state

bp = Blueprint("accept_page", __name__, template_folder="templates")

# Styles are inline in the template; nothing else may load or run on this page.
CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",  # the URL carries the token
    "X-Frame-Options": "DENY",
}
_TOKEN_IN_PATH = re.compile(r"/invite/[^\s?\"']+")
# The same for the other links that carry a bearer secret: /reset/<token>, and the
# provider's one-time code in the single sign-on callback's query.
_OTHER_SECRETS = (
    (re.compile(r"/reset/[^\s?\"']+"), "/reset/[redacted]"),
    (re.compile(r"([?&]code=)[^&\s\"']+"), r"\1[redacted]"),
)


def _redact(text: str) -> str:
    text = _TOKEN_IN_PATH.sub("/invite/[redacted]", text)
    for pattern, replacement in _OTHER_SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RedactInviteTokens(logging.Filter):
    """Replaces ``/invite/<token>`` in log records (werkzeug's and granian's access logs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        # werkzeug logs with positional arguments; granian's access log with one mapping
        # of its atoms (``%(path)s``), which must stay a mapping for the format to work.
        if isinstance(record.args, Mapping):
            record.args = {
                key: _redact(value) if isinstance(value, str) else value
                for key, value in record.args.items()
            }
        elif record.args:
            record.args = tuple(_redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = _redact(record.msg)
        return True


def install_log_redaction() -> None:
    for name in ("werkzeug", "granian.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactInviteTokens) for f in logger.filters):
            logger.addFilter(RedactInviteTokens())


def _page(status: int = 200, **context: object) -> tuple[str, int, dict[str, str]]:
    context.setdefault("title", "Accept your invitation")
    context.setdefault("min_length", MIN_PASSWORD_LENGTH)
    context.setdefault("field_errors", [])
    context.setdefault("sso", bool(state().settings.oidc_issuer))
    return render_template("accept.html", **context), status, HEADERS


def _invitation_page(
    token: str, status: int = 200, **extra: object
) -> tuple[str, int, dict[str, str]]:
    state = services().invitations.token_state(token)
    if not state.usable or state.invitation is None:
        return _page(
            410,
            title="This invitation link does not work",
            error=state.reason,
            # A used link is most often one already accepted: its owner signs in.
            sign_in=url_for("console.sign_in"),
        )
    invitation = state.invitation
    return _page(
        status,
        token=token,
        name=extra.pop("name", None) or invitation.name,
        email=invitation.email,
        inviter=state.inviter or "Your administrator",
        roles=services().invitations.named_grants(invitation),  # as its email names them
        has_account=state.has_account,
        expires_at=invitation.expires_at.strftime("%d %B %Y at %H:%M UTC"),
        show_form=True,
        **extra,
    )


@bp.get("/invite/<token>")
def form(token: str) -> tuple[str, int, dict[str, str]]:
    return _invitation_page(token[:200])


@bp.post("/invite/<token>")
def accept(token: str) -> tuple[str, int, dict[str, str]]:
    token = token[:200]
    name = request.form.get("name", "").strip()[:200] or None
    if name and (problem := name_problem(name)):
        # Refused as POST /invitations/accept refuses it: the name goes into emails.
        return _invitation_page(token, 422, field_errors=[f"Name: {problem}"])
    try:
        user = services().invitations.accept(
            token,
            request.form["password"][:1024] if "password" in request.form else None,
            name,
            client=request.remote_addr or "",
            request_id=request_id(),
        )
    except InvalidInput as exc:
        return _invitation_page(token, 422, name=name, field_errors=[exc.detail])
    except RingfenceError as exc:
        return _page(
            exc.status,
            title="This invitation link does not work",
            error=exc.detail,
            sign_in=url_for("console.sign_in"),
        )
    return _page(
        title="Welcome to Ringfence",
        sign_in=url_for("console.sign_in"),
        message=f"Your account {user.email} is active with the new roles. You can sign in now.",
    )
