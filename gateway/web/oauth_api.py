"""OAuth 2.0 for services over HTTP: the token endpoint (client credentials), revocation
(RFC 7009), introspection (RFC 7662), the public keys (``/.well-known/jwks.json``) and
the server metadata (RFC 8414); and the guard that makes the decision endpoints ask for
a token with ``decisions:check``.

Built with Authlib's Flask ``AuthorizationServer``. Errors of ``/oauth/*`` are RFC 6749
JSON (``{"error": "invalid_client", "error_description": ...}``), not problem+json: that
is the format every OAuth client library expects from these endpoints. Everything else
here answers problem+json as usual.
"""

from __future__ import annotations

import hashlib
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import (
    ClientMixin,
    InvalidGrantError,
    InvalidRequestError,
    TokenMixin,
    grants,
)
from authlib.oauth2.rfc6749.util import scope_to_list
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from flask import Blueprint, Flask, Response, jsonify, request
from sqlalchemy.exc import InterfaceError, OperationalError

from gateway.audit import refusals
from gateway.db.models import OAuthClient
from gateway.errors import Forbidden, InsufficientScope, Unauthorized
from gateway.identity.token_cache import DecisionTokenCache
from gateway.replication.sync import state_of
from gateway.services import Services
from gateway.services.oauth import DECISIONS_SCOPE, SCOPES, ClientService
from gateway.web.bounded import DatabaseStalled
from gateway.web.freshness import DatabaseUnavailable, is_unreachable
from gateway.web.http import DECISION_PATHS, bearer_token, services
from gateway.web.state import GatewayState, gateway_state, state

bp = Blueprint("oauth", __name__)

LOOPBACK = frozenset({"127.0.0.1", "::1"})
CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


# -- Authlib's view of our clients and tokens ------------------------------------------


class Client(ClientMixin):
    """A confidential client that may only use the client-credentials grant."""

    def __init__(self, model: OAuthClient) -> None:
        self.model = model

    def get_client_id(self) -> str:
        return self.model.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        # No scope asked: all of the client's. Asking for one it lacks fails the request
        # (invalid_scope) rather than quietly issuing less than was asked.
        allowed = self.model.scopes.split()
        if not scope:
            return " ".join(allowed)
        wanted = scope_to_list(scope)
        if not set(wanted) <= set(allowed):
            return None
        return " ".join(sorted(set(wanted)))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return ClientService.secret_matches(self.model, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in CLIENT_AUTH_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


class Token(TokenMixin):
    """A token string handed to revocation or introspection, resolved by the services."""

    def __init__(self, value: str, caller: OAuthClient | None = None) -> None:
        self.value = value
        self.caller = caller

    def check_client(self, client: Client) -> bool:
        return True  # the service checks the token belongs to the caller

    def is_expired(self) -> bool:
        return False  # the service answers inactive for expired tokens

    def is_revoked(self) -> bool:
        return False


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS


class AnyHint:
    """RFC 7009 §2.1 and RFC 7662 §2.1: ``token_type_hint`` only speeds a lookup up, and
    a server that cannot find the token by it must search every type it has. Ours are
    all found by one lookup, so the hint is ignored (Authlib refuses hints outside
    ``SUPPORTED_TOKEN_TYPES`` with ``unsupported_token_type``, which would leave an
    access token sent with another hint unrevoked)."""

    def check_params(self, request: Any, client: Any) -> None:
        if "token" not in request.form:
            raise InvalidRequestError()


class Revocation(AnyHint, RevocationEndpoint):
    CLIENT_AUTH_METHODS = CLIENT_AUTH_METHODS
    SUPPORTED_TOKEN_TYPES = ("access_token",)

    def query_token(self, token_string: str, token_type_hint: str | None) -> Token:
        return Token(token_string)

    def revoke_token(self, token: Token, request: Any) -> None:
        try:
            services().tokens.revoke(request.client.model, token.value)
        except Forbidden as exc:
            raise InvalidGrantError("The token was issued to another client") from exc
        # Every process forgets its remembered tokens through the revision this committed.


class Introspection(AnyHint, IntrospectionEndpoint):
    # Only authenticated clients may ask: a token's scope and client are not public.
    CLIENT_AUTH_METHODS = CLIENT_AUTH_METHODS
    SUPPORTED_TOKEN_TYPES = ("access_token",)

    def authenticate_token(self, request: Any, client: Client) -> Token:
        self.check_params(request, client)
        # The service decides what the caller may learn, so it needs to know the caller.
        return Token(request.form["token"], client.model)

    def introspect_token(self, token: Token) -> dict[str, Any]:
        assert token.caller is not None
        return services().tokens.introspect(token.caller, token.value)


class Server(AuthorizationServer):
    def query_client(self, client_id: str) -> Client | None:
        model = services().clients.find_active(client_id)
        return Client(model) if model is not None else None

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        """Nothing to store: tokens are self-contained JWTs; revocation records the jti."""


def _issue(client: Client, grant_type: str, user: Any, scope: str) -> str:
    return services().tokens.issue(client.model, scope)


def _expires_in(client: Client, grant_type: str) -> int:
    return int(state().settings.client_token_ttl)


def make_server() -> Server:
    server = Server()
    server.scopes_supported = sorted(SCOPES)
    server.register_token_generator("default", BearerTokenGenerator(_issue, None, _expires_in))
    server.register_grant(ClientCredentialsGrant)
    server.register_endpoint(Revocation)
    server.register_endpoint(Introspection)
    return server


def _server() -> AuthorizationServer:
    server = state().oauth_server
    assert server is not None, "gateway.web.oauth_api.init_app sets it"
    return server


def _oauth(call: Any) -> Response:
    # Authlib raises (rather than answers) a few errors outside its own handling, e.g.
    # insecure_transport for plain HTTP off loopback; they are OAuth errors all the same.
    try:
        return call()
    except OAuth2Error as error:
        return _server().handle_error_response(None, error)


# -- the endpoints --------------------------------------------------------------------


@bp.post("/oauth/token")
def token() -> Response:
    """Client credentials grant: HTTP Basic (client_secret_basic) or form fields
    (client_secret_post) for a signed access token."""
    return _oauth(lambda: _server().create_token_response())


@bp.post("/oauth/revoke")
def revoke() -> Response:
    """RFC 7009: revoke one of the caller's tokens (200 also for unknown tokens)."""
    return _oauth(lambda: _server().create_endpoint_response(Revocation.ENDPOINT_NAME))


@bp.post("/oauth/introspect")
def introspect() -> Response:
    """RFC 7662: is this token active, and what is it (authenticated clients only)."""
    return _oauth(lambda: _server().create_endpoint_response(Introspection.ENDPOINT_NAME))


@bp.get("/.well-known/jwks.json")
def jwks() -> Response:
    """The public keys that verify Ringfence's access tokens (current and previous)."""
    response = jsonify(services().keys.jwks())
    # Short, so a retired key leaves verifiers' caches soon; a new kid makes them refetch.
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.get("/.well-known/oauth-authorization-server")
def metadata() -> Response:
    """RFC 8414 authorization server metadata."""
    settings = state().settings
    base = settings.public_url.rstrip("/")
    response = jsonify(
        {
            "issuer": settings.issuer,
            "token_endpoint": f"{base}/oauth/token",
            "revocation_endpoint": f"{base}/oauth/revoke",
            "introspection_endpoint": f"{base}/oauth/introspect",
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
            "revocation_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
            "introspection_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
            "scopes_supported": sorted(SCOPES),
            # Required by RFC 8414, and empty: there is no authorization endpoint.
            "response_types_supported": [],
            # No token_endpoint_auth_signing_alg_values_supported: it is about
            # private_key_jwt and client_secret_jwt, which are not offered.
        }
    )
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


# -- the decision endpoints' guard -----------------------------------------------------


def require_decision_token() -> None:
    """Before every request: the decision endpoints need a service token with
    ``decisions:check`` (401 without or with a bad one, 403 without the scope). With
    ``RINGFENCE_DECISIONS_ALLOW_LOOPBACK``, calls from this machine may come without a
    token (a token that is sent is still checked)."""
    if not request.path.startswith(DECISION_PATHS):
        return
    gateway = state()
    settings = gateway.settings
    header = request.headers.get("Authorization", "")
    if not header and settings.decisions_allow_loopback and request.remote_addr in LOOPBACK:
        return
    token = bearer_token(header)
    if token is None:
        refusals.count("decision_token", "missing-token")
        raise Unauthorized(
            f"Send an access token with the scope '{DECISIONS_SCOPE}': "
            "Authorization: Bearer <token> (POST /oauth/token)"
        )
    cache = gateway.token_cache
    if cache.fresh(token):
        return
    calls = gateway.db_calls
    known = cache.known(token)
    if known and (state_of(gateway.engine).stale or calls.recently_stalled()):
        # The database is away or silent, and the token was checked within the outage
        # grace: answered at once (never waiting on the database again and again), and
        # checked again off the request, so that it is refused as soon as it can be.
        calls.start(_digest(token), lambda: _check_again(gateway, cache, token))
        return
    generation = cache.generation  # before the database is read, see remember()
    try:
        # Bounded: a stalled link (psycopg has no read timeout) counts as unreachable.
        # Requests with the same token at once share one check (a new worker's burst).
        claims = calls.run_shared(_digest(token), lambda: check_token(gateway, token))
    except (Unauthorized, InsufficientScope) as exc:
        # Counted only: an audit write per refused call would put the database (and
        # the caller's words) on the decision path.
        refusals.count("decision_token", refusals.reason_of(exc))
        raise
    except (OperationalError, InterfaceError, DatabaseStalled) as exc:
        if not isinstance(exc, DatabaseStalled) and not is_unreachable(exc):
            raise
        if known:
            return  # checked within the outage grace; the answer says stale
        state_of(gateway.engine).wake.set()  # notice the outage
        raise DatabaseUnavailable(
            "The database cannot be reached to check this access token (a token is taken "
            f"from memory only within {cache.outage_grace:g} s of its last check here); "
            "retry shortly.",
            retry_after=2,
        ) from exc
    cache.remember(token, float(claims["exp"]), generation)


def check_token(gateway: GatewayState, token: str) -> dict[str, Any]:
    """The claims of a live service token with ``decisions:check``, checked in full on a
    session of its own (it runs on a thread of :class:`BoundedCalls`)."""
    with gateway.session_factory() as session:
        tokens = Services(
            session, gateway.engine, gateway.notifier, gateway.settings, gateway.throttle
        ).tokens
        return tokens.require(token, DECISIONS_SCOPE)


def _check_again(gateway: GatewayState, cache: DecisionTokenCache, token: str) -> None:
    generation = cache.generation
    try:
        claims = check_token(gateway, token)
    except (Unauthorized, InsufficientScope):
        cache.forget(token)  # the next call is checked in full, and refused
        return
    except Exception:  # unreachable or stalled: the outage grace decides
        return
    cache.remember(token, float(claims["exp"]), generation)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def init_app(app: Flask) -> None:
    """Register the endpoints, the Authlib server and the decision guard on ``app``."""
    gateway = gateway_state(app)
    gateway.oauth_server = make_server()
    # A revision that ended tokens, committed here or applied from elsewhere
    # (gateway.replication.sync).
    state_of(gateway.engine).forget_tokens = gateway.token_cache.forget_all
    app.register_blueprint(bp)
    app.before_request(require_decision_token)
