"""Single sign-on's settings as an admin reads them, and a check of the provider.

Single sign-on is configured installation-wide by ``RINGFENCE_OIDC_ISSUER`` and its
neighbours (see :mod:`gateway.web.sso`); nothing of it is stored in the database.
:func:`overview` says what is configured (never the client secret: only whether one is
set) and the redirect URI to register at the provider; :func:`check_provider` fetches
the provider's discovery document as the sign-in would, within
``RINGFENCE_OIDC_TIMEOUT``, and says in words whether it answers and, if not, why. It
changes nothing.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import requests

from gateway.config import Settings
from gateway.notifier import CONNECTION_WORDS, in_words

CALLBACK_PATH = "/auth/sso/callback"
DISCOVERY_PATH = "/.well-known/openid-configuration"
# What a discovery document needs for the sign-in (OpenID Connect Discovery 1.0, 3).
REQUIRED_METADATA = ("authorization_endpoint", "token_endpoint", "jwks_uri")
SHOWN_CHARS = 200
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]+")


@dataclass(frozen=True)
class SsoOverview:
    enabled: bool
    issuer: str
    client_id: str
    secret_set: bool
    discovery_url: str
    redirect_uri: str  # to register at the provider
    return_url: str
    timeout: float


@dataclass(frozen=True)
class ProviderCheck:
    ok: bool
    detail: str


def overview(settings: Settings) -> SsoOverview:
    """What single sign-on is configured with (the client secret only as set or not)."""
    issuer = settings.oidc_issuer
    return SsoOverview(
        enabled=bool(issuer),
        issuer=issuer,
        client_id=settings.oidc_client_id,
        secret_set=bool(settings.oidc_client_secret),
        discovery_url=issuer.rstrip("/") + DISCOVERY_PATH if issuer else "",
        redirect_uri=settings.public_url.rstrip("/") + CALLBACK_PATH,
        return_url=settings.oidc_return_url,
        timeout=settings.oidc_timeout,
    )


def check_provider(settings: Settings) -> ProviderCheck:
    """Fetch the provider's discovery document within ``oidc_timeout`` and judge it as
    the sign-in does: an answer, JSON, the issuer configured, the endpoints the code
    flow needs. Only called with single sign-on on."""
    return check_issuer(settings.oidc_issuer, settings.oidc_timeout, "RINGFENCE_OIDC_ISSUER")


def check_issuer(issuer: str, timeout: float, named: str = "The issuer") -> ProviderCheck:
    """:func:`check_provider` for any issuer (a workspace's connection too); ``named``
    is what the words call the configured issuer when it is wrong."""
    url = issuer.rstrip("/") + DISCOVERY_PATH
    started = time.monotonic()
    try:
        response = requests.get(url, timeout=timeout, headers={"Accept": "application/json"})
    except requests.Timeout:
        unit = "second" if timeout == 1 else "seconds"
        return ProviderCheck(False, f"it did not answer within {timeout:g} {unit}")
    except requests.RequestException as exc:
        return ProviderCheck(False, _unreachable(exc, named))
    elapsed_ms = round((time.monotonic() - started) * 1000)
    if response.status_code != 200:
        phrase = _phrase(response.status_code)
        return ProviderCheck(
            False, f"it answered HTTP {response.status_code}{phrase} at {_shown(url)}"
        )
    try:
        metadata: Any = response.json()
    except ValueError:
        return ProviderCheck(False, "its answer is not a discovery document (not JSON)")
    if not isinstance(metadata, dict):
        return ProviderCheck(False, "its answer is not a discovery document (not a JSON object)")
    stated = metadata.get("issuer")
    if not isinstance(stated, str) or stated.rstrip("/") != issuer.rstrip("/"):
        # Discovery 1.0, 4.3: the sign-in refuses a document of another issuer.
        return ProviderCheck(
            False,
            f"its discovery document names another issuer ({_shown(str(stated))}), "
            f"so sign-in is refused: {named} must be exactly the issuer",
        )
    missing = [key for key in REQUIRED_METADATA if not isinstance(metadata.get(key), str)]
    if missing:
        return ProviderCheck(False, f"its discovery document lacks {', '.join(missing)}")
    return ProviderCheck(
        True,
        f"it answers in {elapsed_ms} ms; sign-in goes to "
        f"{_shown(metadata['authorization_endpoint'])}",
    )


def _unreachable(exc: requests.RequestException, named: str) -> str:
    """A failed request in words: the socket's reason, found in the exception's chain
    (requests wraps urllib3's error, which wraps the socket's)."""
    if isinstance(exc, requests.exceptions.SSLError):
        return "the TLS handshake failed (is its certificate trusted?)"
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
        return f"{named} is not a URL it can be reached at"
    for cause in _chain(exc):
        if isinstance(cause, ssl.SSLError):
            return "the TLS handshake failed (is its certificate trusted?)"
        if isinstance(cause, socket.gaierror) or (
            isinstance(cause, OSError)
            and (cause.errno in CONNECTION_WORDS or isinstance(cause, TimeoutError))
        ):
            return in_words(cause)
    return "it could not be reached"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: causes, contexts, a ``reason`` and exceptions in its
    arguments, each once, at most 20."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 20:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        wrapped = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        wrapped += list(current.args)
        todo += [w for w in wrapped if isinstance(w, BaseException)]


def _phrase(status: int) -> str:
    try:
        return f" ({HTTPStatus(status).phrase})"
    except ValueError:
        return ""


def _shown(text: str) -> str:
    """A value from the provider, as printable ASCII and at most 200 characters."""
    text = _NOT_PRINTABLE.sub(" ", text).strip()
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"
