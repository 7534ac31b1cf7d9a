"""A small, real OpenID Connect provider for the single sign-on tests, built with Authlib's
authorization server: discovery, the authorization code flow with PKCE, RS256-signed ID
tokens with a nonce, and a JWKS endpoint, served over HTTP on loopback.

It signs in one person without asking (``provider.user``, changeable by a test), and a
test may make it misbehave (``provider.nonce_override``) to check that the gateway
refuses what it should.

It also plays its part of OpenID Connect Back-Channel Logout 1.0: its ID tokens carry
the provider session ``provider.sid`` when a test sets one, and
:meth:`OidcProvider.logout_token` mints logout tokens signed with its own key (or, for
the tests of refusals, with any other key, algorithm, header or claims).
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import AuthorizationCodeMixin, ClientMixin, grants
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from flask import Flask, jsonify
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey
from joserfc.jws import JWSRegistry

from tests.helpers import serving

BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
OMIT: Any = object()  # a claim or header left out of a logout token

# A 2048-bit RSA key takes 90 ms of CPU to generate, and the single sign-on tests start
# a provider or two each (with a key rotation now and then). The keys are made once per
# process and handed out in turn: a provider's key differs from the last KEYS_IN_TURN - 1
# handed out under the same kid, so the providers (and rotations) of one test never share
# one, and every signature is still a real RS256 signature with the provider's own key.
KEYS_IN_TURN = 8
_KEYS: dict[str, list[RSAKey]] = {}
_HANDED_OUT: Counter[str] = Counter()


def signing_key(kid: str) -> RSAKey:
    """An RSA signing key named ``kid``, unlike the last KEYS_IN_TURN - 1 of that name."""
    keys = _KEYS.setdefault(kid, [])
    turn = _HANDED_OUT[kid] % KEYS_IN_TURN
    _HANDED_OUT[kid] += 1
    if turn == len(keys):
        keys.append(RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig"}))
    return keys[turn]


@dataclass
class Person:
    sub: str
    email: str
    email_verified: bool = True
    name: str = "Someone"


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str
    redirect_uri: str

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_allowed_scope(self, scope: str) -> str:
        return " ".join(s for s in scope.split() if s in {"openid", "email", "profile"})

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri == self.redirect_uri

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class Code(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    person: Person
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> str:
        return "0"

    def get_amr(self) -> list[str]:
        return ["pwd"]


class OidcProvider:
    def __init__(self, client_id: str, client_secret: str, redirect_uri: str) -> None:
        self.client = Client(client_id, client_secret, redirect_uri)
        self.user = Person("idp-user-1", "someone@example.com")
        self.nonce_override: str | None = None
        self.sid: str | None = None  # the provider session its ID tokens name (sid)
        self.key = signing_key("test-key-1")
        self.keys = [self.key]  # its JWKS: rotate() adds a key
        self.jwks_fetches = 0
        self.codes: dict[str, Code] = {}
        self.issuer = ""  # set once the socket is bound
        self.app = self._build_app()

    def _build_app(self) -> Flask:
        provider = self
        app = Flask("oidc-provider")
        app.config["OAUTH2_TOKEN_EXPIRES_IN"] = {"authorization_code": 300}

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = [
                "client_secret_basic",
                "client_secret_post",
            ]

            def save_authorization_code(self, code: str, request: Any) -> None:
                data = request.payload.data
                provider.codes[code] = Code(
                    code=code,
                    client_id=request.client.client_id,
                    redirect_uri=request.payload.redirect_uri,
                    scope=request.payload.scope,
                    person=request.user,
                    nonce=provider.nonce_override or data.get("nonce"),
                    code_challenge=data.get("code_challenge"),
                    code_challenge_method=data.get("code_challenge_method"),
                )

            def query_authorization_code(self, code: str, client: Client) -> Code | None:
                found = provider.codes.get(code)
                return found if found and found.client_id == client.client_id else None

            def delete_authorization_code(self, authorization_code: Code) -> None:
                provider.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: Code) -> Person:
                return authorization_code.person

        class IdToken(OpenIDCode):
            def exists_nonce(self, nonce: str, request: Any) -> bool:
                return False

            def resolve_client_private_key(self, client: Client) -> RSAKey:
                return provider.key

            def get_client_algorithm(self, client: Client) -> str:
                return "RS256"

            def get_encode_header(self, client: Client) -> dict[str, str]:
                return {"alg": "RS256", "kid": "test-key-1"}

            def get_client_claims(self, client: Client) -> dict[str, Any]:
                sid = {"sid": provider.sid} if provider.sid else {}
                return {"iss": provider.issuer, "aud": [client.client_id], **sid}

            def generate_user_info(self, user: Person, scope: str) -> UserInfo:
                return UserInfo(
                    sub=user.sub,
                    email=user.email,
                    email_verified=user.email_verified,
                    name=user.name,
                )

        server = AuthorizationServer(
            app,
            query_client=lambda client_id: (
                provider.client if client_id == provider.client.client_id else None
            ),
            save_token=lambda token, request: None,
        )
        server.register_grant(
            CodeGrant, [IdToken(require_nonce=True), CodeChallenge(required=True)]
        )

        @app.get("/.well-known/openid-configuration")
        def discovery() -> Any:
            return jsonify(
                issuer=provider.issuer,
                authorization_endpoint=f"{provider.issuer}/authorize",
                token_endpoint=f"{provider.issuer}/token",
                jwks_uri=f"{provider.issuer}/jwks",
                response_types_supported=["code"],
                subject_types_supported=["public"],
                id_token_signing_alg_values_supported=["RS256"],
                token_endpoint_auth_methods_supported=["client_secret_basic"],
                code_challenge_methods_supported=["S256"],
                scopes_supported=["openid", "email", "profile"],
            )

        @app.get("/jwks")
        def jwks() -> Any:
            provider.jwks_fetches += 1
            return jsonify(keys=[key.as_dict(private=False) for key in provider.keys])

        @app.get("/authorize")
        def authorize() -> Any:
            # Auto-approves: the person is signed in at the provider and consents.
            try:
                grant = server.get_consent_grant(end_user=provider.user)
            except OAuth2Error as error:
                return server.handle_error_response(None, error)
            return server.create_authorization_response(grant_user=provider.user, grant=grant)

        @app.post("/token")
        def token() -> Any:
            return server.create_token_response()

        return app

    def rotate(self, kid: str) -> RSAKey:
        """A new signing key, published beside the old ones; later tokens use it."""
        self.key = signing_key(kid)
        self.keys.append(self.key)
        return self.key

    def logout_token(
        self,
        sub: str | None = "idp-user-1",
        sid: str | None = None,
        key: RSAKey | OctKey | None = None,
        header: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A logout token (OpenID Connect Back-Channel Logout 1.0, section 2.4) for
        ``sub`` and/or ``sid``, as this provider sends it to its client: signed RS256
        with its current key, typed ``logout+jwt``, issued now, for two minutes, with a
        fresh ``jti``. ``claims`` replace or add claims (:data:`OMIT` drops one);
        ``header`` does the same for the JOSE header; ``key`` signs with another key."""
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.client.client_id,
            "iat": now,
            "exp": now + 120,
            "jti": secrets.token_urlsafe(16),
            "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
        }
        if sub is not None:
            body["sub"] = sub
        if sid is not None:
            body["sid"] = sid
        body.update(claims)
        signer = key or self.key
        head: dict[str, Any] = {"alg": "RS256", "typ": "logout+jwt"}
        if signer.kid:
            head["kid"] = signer.kid
        head.update(header or {})
        alg = head["alg"]
        return jwt.encode(
            {k: v for k, v in head.items() if v is not OMIT},
            {k: v for k, v in body.items() if v is not OMIT},
            signer,
            registry=JWSRegistry(algorithms=[alg]),
        )


@contextmanager
def running_provider(
    client_id: str, client_secret: str, redirect_uri: str
) -> Iterator[OidcProvider]:
    """An :class:`OidcProvider` serving on a free loopback port until the block ends."""
    provider = OidcProvider(client_id, client_secret, redirect_uri)
    with serving(provider.app) as httpd:
        provider.issuer = f"http://127.0.0.1:{httpd.server_port}"
        yield provider
