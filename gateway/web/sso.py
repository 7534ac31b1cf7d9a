"""Single sign-on over OpenID Connect (Authlib's Flask client), the browser side.

``GET /auth/sso/login`` sends the browser to the provider; ``GET /invite/<token>/sso``
does the same to accept an invitation; ``GET /auth/sso/callback`` checks the answer
(state, then the ID token's signature, issuer, audience and nonce, all by Authlib) and
hands the person a one-time code for ``POST /auth/sso/exchange`` (never tokens in a
URL). State, nonce and the PKCE verifier wait in Flask's signed session cookie, so the
callback only works in the browser that started the round trip.

Configured by ``RINGFENCE_OIDC_ISSUER``, ``_CLIENT_ID`` and ``_CLIENT_SECRET``, with
discovery from the issuer's ``/.well-known/openid-configuration``; off when the issuer
is empty (every route then answers 404 ``sso-not-configured``).

A workspace's own connection has the same round trip under
``/auth/sso/connections/<id>/``, and a back channel: ``POST
/auth/sso/connections/<id>/backchannel-logout``, where its provider posts logout tokens
(OpenID Connect Back-Channel Logout 1.0) that end the sessions started through it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from authlib.integrations.base_client import MismatchingStateError, OAuthError
from authlib.integrations.flask_client import FlaskIntegration, FlaskOAuth2App, OAuth
from flask import Blueprint, Flask, jsonify, redirect, session
from flask import request as flask_request
from joserfc.errors import JoseError
from requests import RequestException
from werkzeug.wrappers import Response

from gateway.audit import refusals
from gateway.audit.refusals import with_reason
from gateway.config import Settings
from gateway.db.models import SsoConnection
from gateway.errors import (
    IdentityProviderUnavailable,
    InvalidInput,
    InvalidInvitationToken,
    InvalidLogoutToken,
    PayloadTooLarge,
    RingfenceError,
    SsoFailed,
    SsoNotConfigured,
    Unauthorized,
)
from gateway.identity.logout_tokens import (
    LogoutTokenRefused,
    read_logout_token,
    signing_algorithms,
)
from gateway.logs import request_id
from gateway.notifier import name_problem
from gateway.services.auth import IssuedToken
from gateway.services.sso import ExternalIdentity, SsoCode
from gateway.services.sso_connections import redirect_uri
from gateway.web.http import note_refusal, services
from gateway.web.state import gateway_state, state

log = logging.getLogger("ringfence.sso")
bp = Blueprint("sso", __name__)

PROVIDER = "oidc"
_INVITATION_KEY = "ringfence_sso_invitation"
# A per-request return target (``?next=``), by name from this allow-list only: never a URL
# from the request, so the callback cannot be turned into an open redirect.
RETURN_TARGETS = {"console": "/console/sso/done"}
_RETURN_KEY = "ringfence_sso_next"
_BINDING_KEY = "ringfence_sso_binding"
# Where a refusal for a named target waits for that target's page to show it.
ERROR_KEY = "ringfence_sso_error"


def init_app(app: Flask, settings: Settings) -> None:
    """Register the provider (when configured) and the routes."""
    # The session cookie holds only the round trip's state; its own name keeps it apart
    # from any other app's cookie on the host, and Lax lets the provider's top-level
    # redirect back carry it.
    app.config.update(
        SESSION_COOKIE_NAME="ringfence_sso",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.public_url.startswith("https://"),
        PERMANENT_SESSION_LIFETIME=600,
    )
    if settings.oidc_issuer:
        oauth = OAuth(app)
        oauth.register(
            PROVIDER,
            client_id=settings.oidc_client_id,
            client_secret=settings.oidc_client_secret,
            server_metadata_url=settings.oidc_issuer.rstrip("/")
            + "/.well-known/openid-configuration",
            client_kwargs={
                "scope": "openid email profile",
                "code_challenge_method": "S256",
                "default_timeout": settings.oidc_timeout,
            },
        )
        gateway_state(app).sso = oauth
    app.register_blueprint(bp)


def _client() -> Any:
    oauth = state().sso
    if oauth is None:
        raise SsoNotConfigured("This gateway has no single sign-on provider configured")
    return oauth.create_client(PROVIDER)


def _settings() -> Settings:
    return state().settings


def _metadata(client: Any, issuer: str | None = None) -> dict[str, Any]:
    try:
        metadata: dict[str, Any] = client.load_server_metadata()
    except (RequestException, ValueError) as exc:
        log.warning("OIDC discovery failed: %s", exc)
        raise IdentityProviderUnavailable(
            "The identity provider's configuration could not be read; try again later"
        ) from exc
    # OpenID Connect Discovery 1.0, 4.3: the issuer must be exactly the one configured,
    # else ID tokens of another issuer would be accepted.
    expected = _settings().oidc_issuer if issuer is None else issuer
    if metadata.get("issuer", "").rstrip("/") != expected.rstrip("/"):
        raise IdentityProviderUnavailable(
            "The identity provider's discovery document names another issuer"
        )
    return metadata


def _to_provider(
    client: Any = None,
    issuer: str | None = None,
    redirect_uri: str | None = None,
    **extra: str,
) -> Response:
    client = client or _client()
    _metadata(client, issuer)
    redirect_uri = redirect_uri or _settings().public_url.rstrip("/") + "/auth/sso/callback"
    try:
        response: Response = client.authorize_redirect(redirect_uri, **extra)
    except RequestException as exc:
        raise IdentityProviderUnavailable("The identity provider could not be reached") from exc
    return response


@bp.get("/auth/sso/login")
def login() -> Response:
    """Start single sign-on: a redirect to the identity provider."""
    _client()
    _remember_return_target()
    return _to_provider()


def _remember_return_target() -> None:
    session.pop(_INVITATION_KEY, None)
    session.pop(_RETURN_KEY, None)
    session.pop(_BINDING_KEY, None)
    target = flask_request.args.get("next")
    if target is not None:
        # ``binding`` is the target's own proof that this browser started the sign-in
        # (the console's: a digest of its cookie); it is handed back with the code.
        binding = flask_request.args.get("binding", "")
        if target not in RETURN_TARGETS or not (0 < len(binding) <= 128 and binding.isalnum()):
            raise InvalidInput("Unknown sign-in return target", errors={"next": ["unknown"]})
        session[_RETURN_KEY], session[_BINDING_KEY] = target, binding


@bp.get("/invite/<token>/sso")
def accept_with_sso(token: str) -> Response:
    """Accept an invitation with single sign-on: the provider's verified email must be
    the invited address."""
    _client()
    token = token[:200]
    state = services().invitations.token_state(token)
    if not state.usable:
        raise InvalidInvitationToken(state.reason)
    session[_INVITATION_KEY] = token
    session.pop(_RETURN_KEY, None)
    return _to_provider()


@bp.get("/auth/sso/callback")
def callback() -> Response:
    """The provider's answer: sign the person in (or accept their invitation), and hand
    back a one-time code for ``POST /auth/sso/exchange``."""
    client = _client()
    return _answer(lambda: _callback(client))


def _answer(finish: Callable[[], SsoCode]) -> Response:
    """The end of a round trip: the code to the return target the sign-in named (or its
    refusal, for that target's page to show), else as the installation says."""
    target = session.pop(_RETURN_KEY, None)
    binding = str(session.pop(_BINDING_KEY, ""))
    if target in RETURN_TARGETS:
        back = _settings().public_url.rstrip("/") + RETURN_TARGETS[target]
        try:
            code = finish()
        except RingfenceError as exc:
            # The target's page shows the refusal (kept in the signed session cookie, so
            # nobody can put a message of theirs on it).
            session[ERROR_KEY] = exc.detail or exc.title
            return redirect(back + "?" + urlencode({"binding": binding}), code=303)
        return redirect(back + "?" + urlencode({"code": code.code, "binding": binding}), code=303)
    code = finish()
    return_url = _settings().oidc_return_url
    if return_url:
        separator = "&" if "?" in return_url else "?"
        return redirect(return_url + separator + urlencode({"code": code.code}), code=303)
    return jsonify(code=code.code, expires_in=code.expires_in, exchange="POST /auth/sso/exchange")


def _callback(client: Any, connection: SsoConnection | None = None) -> SsoCode:
    try:
        return _signed_on(client, connection)
    except SsoFailed as exc:
        # Refusals of a known identity are audited by the service (auth.sso_refused).
        # These failed before anyone was identified: anyone can send them, with words of
        # their choosing (?error=...), so they are counted and audited by sample.
        note_refusal("sso_callback", exc)
        raise


def exchange_code(code: str) -> IssuedToken:
    """Session tokens for a one-time sign-on code (``POST /auth/sso/exchange``, and the
    console's end of the round trip). Anyone can send a made-up code: a refusal is
    counted, and audited by sample (gateway.audit.refusals)."""
    try:
        return services().sso.exchange(code, flask_request.remote_addr or "", request_id())
    except Unauthorized as exc:
        note_refusal("sso_code", exc)
        raise


def _signed_on(client: Any, connection: SsoConnection | None = None) -> SsoCode:
    invitation = session.pop(_INVITATION_KEY, None) if connection is None else None
    try:
        token = client.authorize_access_token()
    except MismatchingStateError as exc:
        raise with_reason(
            SsoFailed(
                "The sign-on answer does not belong to a sign-on started in this browser "
                "(state mismatch); start again"
            ),
            "state-mismatch",
        ) from exc
    except OAuthError as exc:
        raise with_reason(
            SsoFailed(f"The identity provider refused: {exc.error}", error=exc.error),
            "provider-error",
        ) from exc
    except (JoseError, ValueError) as exc:
        # Signature, issuer, audience, expiry or nonce of the ID token.
        raise with_reason(
            SsoFailed(f"The ID token is not acceptable: {exc}"), "id-token-invalid"
        ) from exc
    except RequestException as exc:
        raise IdentityProviderUnavailable("The identity provider could not be reached") from exc
    claims = token.get("userinfo")
    if not claims or not claims.get("sub"):
        raise with_reason(SsoFailed("The identity provider sent no ID token"), "no-id-token")
    verified = claims.get("email_verified")
    # A name with control characters (it would go into emails' headers) is left out, as
    # the admin API refuses it: the invitation's name is used instead.
    name = str(claims.get("name") or "")
    issuer = connection.issuer if connection else None
    sid = claims.get("sid")
    identity = ExternalIdentity(
        issuer=str(claims.get("iss") or _metadata(client, issuer)["issuer"]),
        subject=str(claims["sub"]),
        email=str(claims.get("email") or ""),
        email_verified=verified is True or str(verified).lower() == "true",
        name="" if name_problem(name) else name,
        # The provider's session, which its logout token may name (kept as sent).
        sid=sid if isinstance(sid, str) and 0 < len(sid) <= 255 else "",
    )
    client_address, rid = flask_request.remote_addr or "", request_id()
    sso = services().sso
    if connection is not None:
        return sso.sign_in_with_connection(connection, identity, client_address, rid)
    return (
        sso.accept_invitation(invitation, identity, client_address, rid)
        if invitation
        else sso.sign_in(identity, client_address, rid)
    )


# -- a workspace's own connection ----------------------------------------------------
#
# The same round trip with the connection's client (gateway.services.sso_connections):
# its own redirect URI, and the state, nonce and PKCE verifier kept under its own name,
# so an answer that comes back to another connection's callback finds no state there.

CONNECTION = "/auth/sso/connections/<int(max=2147483647):connection_id>"
_CLIENTS: dict[tuple[int, str, str, str], Any] = {}
_CLIENTS_LOCK = threading.Lock()
MAX_CLIENTS = 500


def _connection_client(connection: SsoConnection) -> Any:
    """Authlib's client for the connection as it is now (its discovery document and
    keys are fetched once per client; an edited connection gets a new one)."""
    key = (connection.id, connection.issuer, connection.client_id, connection.sealed_client_secret)
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            if len(_CLIENTS) >= MAX_CLIENTS:
                _CLIENTS.clear()
            name = f"sso-connection-{connection.id}."
            client = FlaskOAuth2App(
                FlaskIntegration(name),
                name,
                client_id=connection.client_id,
                client_secret=services().sso_connections.client_secret(connection),
                server_metadata_url=connection.issuer.rstrip("/")
                + "/.well-known/openid-configuration",
                client_kwargs={
                    "scope": "openid email profile",
                    "code_challenge_method": "S256",
                    "default_timeout": _settings().oidc_timeout,
                },
            )
            _CLIENTS[key] = client
    return client


@bp.get(f"{CONNECTION}/login")
def connection_login(connection_id: int) -> Response:
    """Start signing in through a workspace's connection (where the sign-in page routes
    the people of its verified domains); ``login_hint`` is passed on to the provider."""
    connection = services().sso_connections.for_sign_in(connection_id)
    _remember_return_target()
    hint = flask_request.args.get("login_hint", "")[:320]
    extra = {"login_hint": hint} if hint and "@" in hint and hint.isprintable() else {}
    return _to_provider(
        _connection_client(connection),
        connection.issuer,
        redirect_uri(_settings(), connection.id),
        **extra,
    )


@bp.get(f"{CONNECTION}/callback")
def connection_callback(connection_id: int) -> Response:
    """The provider's answer for a workspace's connection."""
    connection = services().sso_connections.for_sign_in(connection_id)
    client = _connection_client(connection)
    return _answer(lambda: _callback(client, connection))


# -- back-channel logout ---------------------------------------------------------------
#
# OpenID Connect Back-Channel Logout 1.0: the provider posts a logout token (a signed JWT)
# as the form field ``logout_token``. Read by gateway.identity.logout_tokens with the
# keys of the connection's client (the same discovery document and JWKS its ID tokens
# are verified with); what it ends, gateway.services.sso_logout.

# Bytes of a logout post: a token is at most a few kilobytes (MAX_TOKEN_LENGTH, 8 KiB).
MAX_LOGOUT_BODY = 16 * 1024
# A token naming a key not in the provider's set fetches the set again (the provider
# rotated its keys), at most this often per connection: tokens with made-up key ids
# must not make the gateway hammer the provider.
JWKS_REFETCH_SECONDS = 60.0
_JWKS_FETCHED: dict[tuple[int, str], float] = {}  # (connection, issuer): when


def _provider_keys(client: Any, connection: SsoConnection) -> Callable[[bool], dict[str, Any]]:
    """The connection's key set, from its client (fetched once, then kept with the
    discovery document); ``force`` fetches it again unless it was a moment ago."""

    def keys(force: bool) -> dict[str, Any]:
        if force:
            key = (connection.id, connection.issuer)
            with _CLIENTS_LOCK:
                now = time.monotonic()
                if now - _JWKS_FETCHED.get(key, -math.inf) < JWKS_REFETCH_SECONDS:
                    force = False
                else:
                    if len(_JWKS_FETCHED) >= MAX_CLIENTS:
                        _JWKS_FETCHED.clear()
                    _JWKS_FETCHED[key] = now
        try:
            jwks: dict[str, Any] = client.fetch_jwk_set(force=force)
        except (RequestException, RuntimeError, ValueError) as exc:
            log.warning("JWKS of connection %d could not be read: %s", connection.id, exc)
            raise IdentityProviderUnavailable(
                "The identity provider's keys could not be read; try again later"
            ) from exc
        return jwks

    return keys


@bp.post(f"{CONNECTION}/backchannel-logout")
def connection_backchannel_logout(connection_id: int) -> Response:
    """The provider of a workspace's connection says a person's session there ended: the
    sessions they started through the connection end (only the provider session the
    token names, if it names one). 200 with an empty body when the token is valid,
    whether or not anyone's session ended; 400 ``invalid-logout-token`` (with ``error``
    ``invalid_request``) when it is not; 404 for a connection that does not exist or is
    turned off."""
    client_address, rid = flask_request.remote_addr or "", request_id()
    logout = services().sso_logout
    throttle = services().auth.throttle
    throttle.logout_check(client_address)
    if (flask_request.content_length or 0) > MAX_LOGOUT_BODY:
        raise PayloadTooLarge(f"A logout token's post is at most {MAX_LOGOUT_BODY} bytes")
    flask_request.max_content_length = MAX_LOGOUT_BODY  # a body without a length, too
    token = flask_request.form.get("logout_token", "")
    try:
        connection = logout.connection(connection_id)
    except SsoNotConfigured as exc:
        throttle.logout_refused(client_address)
        note_refusal("sso_logout", with_reason(exc, "no-connection"))
        raise
    client = _connection_client(connection)
    metadata = _metadata(client, connection.issuer)
    try:
        claims = read_logout_token(
            token,
            _provider_keys(client, connection),
            metadata["issuer"],
            connection.client_id,
            signing_algorithms(metadata.get("id_token_signing_alg_values_supported")),
        )
        logout.logout(connection, claims, client_address, rid)
    except LogoutTokenRefused as exc:
        throttle.logout_refused(client_address)
        refused = InvalidLogoutToken(exc.detail)
        if exc.verified:
            # Signed by the provider: audited each time (a replay, by the service).
            refusals.count("sso_logout", exc.reason)
            if exc.reason != "replayed":
                logout.refused(connection, exc.reason, client_address, rid)
        else:
            # Anyone can send these: counted, and audited by sample.
            note_refusal("sso_logout", with_reason(refused, exc.reason))
        raise refused from None
    answer = Response(status=200)
    answer.headers["Cache-Control"] = "no-store"
    return answer
