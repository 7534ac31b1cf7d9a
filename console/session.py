"""The console's sign-in session and CSRF tokens.

A console session *is* an :class:`~gateway.db.models.AuthSession` opened by the auth service,
exactly like an API login; the cookie carries only its id, signed and time-stamped with
the secret key (so a database copy alone cannot forge a cookie), and every request asks
the auth service whether the session and the person are still live: deactivation or
sign-out ends a console session on the next click.

CSRF: every state-changing request must carry a token derived (HMAC) from the session id,
in the ``csrf_token`` form field or the ``X-CSRF-Token`` header (which the console's
script adds to htmx requests). Before sign-in, the token is tied to a random pre-session
cookie instead, so that nobody can sign a browser in to an account of theirs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from flask import Response, request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from gateway.config import Settings
from gateway.errors import Forbidden
from gateway.web.state import state

SESSION_MAX_AGE = 12 * 3600  # seconds: a console sign-in lasts a working day at most
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


def settings() -> Settings:
    return state().settings


def secure_cookies() -> bool:
    """Secure cookies wherever the gateway is served over https (its public URL says so).
    A plain-http development URL could not send a Secure cookie back at all."""
    return settings().public_url.lower().startswith("https://")


def cookie_name(base: str) -> str:
    # __Host- cookies are Secure, path=/ and host-only: a sibling subdomain cannot set them.
    return f"__Host-{base}" if secure_cookies() else base


SESSION_COOKIE = "ringfence_console"
PRE_SESSION_COOKIE = "ringfence_console_pre"


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings().secret_key, salt="ringfence-console-session")


def _mac(purpose: str, value: str) -> str:
    key = hashlib.sha256(b"ringfence/console-csrf/v1:" + settings().secret_key.encode()).digest()
    return hmac.new(key, f"{purpose}\0{value}".encode(), hashlib.sha256).hexdigest()


def session_id_from_cookie() -> str | None:
    raw = request.cookies.get(cookie_name(SESSION_COOKIE))
    if not raw:
        return None
    try:
        value = _serializer().loads(raw, max_age=SESSION_MAX_AGE)
    except BadSignature:  # SignatureExpired included
        return None
    return value.get("sid") if isinstance(value, dict) else None


def _set_cookie(response: Response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(
        cookie_name(name),
        value,
        max_age=max_age,
        path="/",
        secure=secure_cookies(),
        httponly=True,
        samesite="Lax",
    )


def start_session(response: Response, session_id: str) -> None:
    _set_cookie(response, SESSION_COOKIE, _serializer().dumps({"sid": session_id}), SESSION_MAX_AGE)
    response.delete_cookie(cookie_name(PRE_SESSION_COOKIE), path="/")


def end_session(response: Response) -> None:
    response.delete_cookie(
        cookie_name(SESSION_COOKIE), path="/", secure=secure_cookies(), httponly=True
    )


MFA_COOKIE = "ringfence_console_mfa"


def set_mfa_ticket(response: Response, ticket: str) -> None:
    """Keep the password step's single-use ticket for the code's page (HttpOnly, never in
    the page or a URL), for as long as the ticket lasts."""
    _set_cookie(response, MFA_COOKIE, ticket, 300)


def mfa_ticket() -> str:
    value = request.cookies.get(cookie_name(MFA_COOKIE), "")
    return value if len(value) <= 200 else ""


def end_mfa_ticket(response: Response) -> None:
    response.delete_cookie(
        cookie_name(MFA_COOKIE), path="/", secure=secure_cookies(), httponly=True
    )


REMEMBER_COOKIE = "ringfence_console_remember"


def set_remembered(response: Response, token: str, max_age: int) -> None:
    """Keep a remembered browser's random token (gateway.services.remembered_devices:
    only its SHA-256 is stored) for as long as it lasts. Signing out leaves it."""
    _set_cookie(response, REMEMBER_COOKIE, token, max_age)


def remembered_token() -> str:
    value = request.cookies.get(cookie_name(REMEMBER_COOKIE), "")
    return value if len(value) <= 200 else ""


def forget_remembered(response: Response) -> None:
    response.delete_cookie(
        cookie_name(REMEMBER_COOKIE), path="/", secure=secure_cookies(), httponly=True
    )


def pre_session_token(response: Response | None = None) -> tuple[str, str | None]:
    """The sign-in form's CSRF token, and a new pre-session cookie value when none exists
    yet (the caller sets it with :func:`set_pre_session`)."""
    existing = request.cookies.get(cookie_name(PRE_SESSION_COOKIE))
    value = existing if existing and len(existing) <= 100 else secrets.token_urlsafe(32)
    return _mac("sign-in", value), (None if value == existing else value)


def set_pre_session(response: Response, value: str) -> None:
    _set_cookie(response, PRE_SESSION_COOKIE, value, 3600)


SSO_COOKIE = "ringfence_console_sso"
SSO_MAX_AGE = 600  # seconds: time to get through the identity provider's sign-in


def start_sso() -> tuple[str, str]:
    """A new random value binding this browser to the SSO sign-in it starts (the caller
    sets it with :func:`set_sso_binding`), and its digest to send along the round trip."""
    value = secrets.token_urlsafe(32)
    return value, sso_binding(value)


def sso_binding(value: str) -> str:
    return _mac("sso", value)


def set_sso_binding(response: Response, value: str) -> None:
    _set_cookie(response, SSO_COOKIE, value, SSO_MAX_AGE)


def sso_binding_matches(sent: str) -> bool:
    """Whether ``sent`` (handed back with the one-time code) belongs to this browser's
    cookie: a code fetched in another browser cannot be slipped into this one."""
    value = request.cookies.get(cookie_name(SSO_COOKIE))
    return bool(value and sent) and hmac.compare_digest(sso_binding(value or ""), sent)


def end_sso(response: Response) -> None:
    response.delete_cookie(
        cookie_name(SSO_COOKIE), path="/", secure=secure_cookies(), httponly=True
    )


def csrf_token(session_id: str) -> str:
    return _mac("session", session_id)


def _sent_token() -> str:
    return request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD, "")


def require_csrf(session_id: str | None) -> None:
    """Forbidden unless the request carries the token of this session (or, signed out,
    of this browser's pre-session cookie)."""
    if session_id is not None:
        expected = csrf_token(session_id)
    else:
        pre = request.cookies.get(cookie_name(PRE_SESSION_COOKIE))
        expected = _mac("sign-in", pre) if pre else ""
    if not expected or not hmac.compare_digest(expected, _sent_token()):
        raise Forbidden(
            "The form has expired or did not come from this console; reload the page and try again",
            reason="csrf",
        )
