"""WebAuthn (passkeys and security keys), with the ``webauthn`` package: the options a
browser's ``navigator.credentials.create()`` and ``.get()`` take, and the verification of
what they answer. Pure functions; what is stored, and which challenge is whose, is
gateway.services.passkeys'.

The relying party is the installation's public URL (``RINGFENCE_PUBLIC_URL``): its host
is the RP id a passkey is scoped to, and its scheme, host and port the only origin whose
ceremonies are accepted. A passkey made for one public URL does not sign in at another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import webauthn
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

RP_NAME = "Ringfence"
# How long the browser gives the person to use their authenticator (a hint to it); the
# challenge itself lasts a little longer (gateway.services.passkeys.CHALLENGE_TTL).
TIMEOUT_MS = 120_000
CHALLENGE_BYTES = 32
USER_HANDLE_BYTES = 32
MAX_CREDENTIAL_ID = 1023  # bytes (WebAuthn's limit)
TRANSPORTS = {t.value for t in AuthenticatorTransport}


class PasskeyRefused(Exception):
    """A ceremony's answer that does not verify; ``reason`` is for the audit trail."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RelyingParty:
    id: str  # the public URL's host: what passkeys are scoped to
    origin: str  # scheme://host[:port], the one origin accepted


@dataclass(frozen=True)
class Registered:
    credential_id: str  # base64url
    public_key: bytes  # COSE_Key
    sign_count: int
    aaguid: str
    backed_up: bool
    transports: list[str]


@dataclass(frozen=True)
class Asserted:
    credential_id: str  # base64url
    sign_count: int
    backed_up: bool
    user_verified: bool


def relying_party(public_url: str) -> RelyingParty:
    parts = urlsplit(public_url)
    host = (parts.hostname or "").lower()
    if not host or parts.scheme not in ("http", "https"):
        raise ValueError(f"RINGFENCE_PUBLIC_URL {public_url!r} names no http(s) host")
    default_port = {"http": 80, "https": 443}[parts.scheme]
    port = f":{parts.port}" if parts.port and parts.port != default_port else ""
    return RelyingParty(host, f"{parts.scheme}://{host}{port}")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def from_b64url(text: str) -> bytes:
    """Bytes of base64url text (padding optional); ValueError when it is not."""
    if not isinstance(text, str) or not text.isascii():
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


def new_challenge() -> bytes:
    return secrets.token_bytes(CHALLENGE_BYTES)


def new_user_handle() -> str:
    """A random WebAuthn user id (base64url): nothing of the account's id or address."""
    return b64url(secrets.token_bytes(USER_HANDLE_BYTES))


def challenge_digest(challenge: bytes) -> str:
    """What is stored of a challenge: its SHA-256 (random, so no salt needed)."""
    return hashlib.sha256(challenge).hexdigest()


def sent_challenge(credential: Mapping[str, Any]) -> bytes | None:
    """The challenge the browser signed, read from the answer's clientDataJSON (to find
    the ceremony it answers); None when the answer is not shaped as one."""
    response = credential.get("response")
    if not isinstance(response, Mapping):
        return None
    try:
        client_data = json.loads(from_b64url(response.get("clientDataJSON", "")))
        return from_b64url(client_data["challenge"]) if isinstance(client_data, dict) else None
    except (ValueError, KeyError, TypeError):
        return None


def sent_credential_id(credential: Mapping[str, Any]) -> str | None:
    """The answer's credential id (base64url, as stored), if it is one."""
    raw = credential.get("rawId")
    try:
        decoded = from_b64url(raw) if isinstance(raw, str) else b""
    except ValueError:
        return None
    return b64url(decoded) if 0 < len(decoded) <= MAX_CREDENTIAL_ID else None


def sent_user_handle(credential: Mapping[str, Any]) -> str | None:
    """The user handle a discoverable credential answered with (base64url), if any."""
    response = credential.get("response")
    handle = response.get("userHandle") if isinstance(response, Mapping) else None
    try:
        return b64url(from_b64url(handle)) if isinstance(handle, str) and handle else None
    except ValueError:
        return None


def _options(options: Any) -> dict[str, Any]:
    return dict(json.loads(webauthn.options_to_json(options)))


def registration_options(
    rp: RelyingParty,
    challenge: bytes,
    user_handle: str,
    user_name: str,
    display_name: str,
    existing: Iterable[str],
) -> dict[str, Any]:
    """For ``navigator.credentials.create()`` (JSON, binary members base64url): a
    discoverable credential (a passkey that can sign in by itself), user verification
    preferred, no attestation (the authenticator's make is not checked), and the
    person's existing credentials excluded (one authenticator, one passkey)."""
    return _options(
        webauthn.generate_registration_options(
            rp_id=rp.id,
            rp_name=RP_NAME,
            user_id=from_b64url(user_handle),
            user_name=user_name,
            user_display_name=display_name,
            challenge=challenge,
            timeout=TIMEOUT_MS,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.PREFERRED,
                user_verification=UserVerificationRequirement.PREFERRED,
            ),
            exclude_credentials=[
                PublicKeyCredentialDescriptor(id=from_b64url(c)) for c in existing
            ],
        )
    )


def authentication_options(
    rp: RelyingParty,
    challenge: bytes,
    allowed: Iterable[tuple[str, list[str] | None]] = (),
    user_verification: bool = False,
) -> dict[str, Any]:
    """For ``navigator.credentials.get()``: ``allowed`` (credential id, transports) for a
    second step; none for a passwordless sign-in, where the authenticator offers the
    passkeys it keeps for this RP (and must verify the person: ``user_verification``)."""
    return _options(
        webauthn.generate_authentication_options(
            rp_id=rp.id,
            challenge=challenge,
            timeout=TIMEOUT_MS,
            allow_credentials=[
                PublicKeyCredentialDescriptor(
                    id=from_b64url(cid),
                    transports=[AuthenticatorTransport(t) for t in (ts or []) if t in TRANSPORTS]
                    or None,
                )
                for cid, ts in allowed
            ],
            user_verification=UserVerificationRequirement.REQUIRED
            if user_verification
            else UserVerificationRequirement.PREFERRED,
        )
    )


def verify_registration(
    rp: RelyingParty, credential: Mapping[str, Any], challenge: bytes
) -> Registered:
    """The new credential, if ``credential`` answers ``challenge`` at this RP's origin
    with the person present; PasskeyRefused otherwise."""
    try:
        verified = webauthn.verify_registration_response(
            credential=dict(credential),
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
        )
    except (WebAuthnException, ValueError, TypeError, KeyError) as exc:
        raise PasskeyRefused(f"registration not verified: {exc}") from exc
    if len(verified.credential_id) > MAX_CREDENTIAL_ID:
        raise PasskeyRefused("registration not verified: credential id too long")
    response = credential.get("response")
    sent = response.get("transports") if isinstance(response, Mapping) else None
    transports = sorted({t for t in sent if t in TRANSPORTS}) if isinstance(sent, list) else []
    return Registered(
        credential_id=b64url(verified.credential_id),
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        aaguid=verified.aaguid,
        backed_up=verified.credential_backed_up,
        transports=transports,
    )


def verify_assertion(
    rp: RelyingParty,
    credential: Mapping[str, Any],
    challenge: bytes,
    public_key: bytes,
    sign_count: int,
    user_verification: bool = False,
) -> Asserted:
    """Whether ``credential`` is the stored passkey's signature over ``challenge`` at this
    RP's origin, with the person present (and verified, if asked), and a signature
    counter that grew (the library's check: a counter at or below the last one seen,
    where either is not zero, is a cloned authenticator or a replay); PasskeyRefused
    otherwise, its reason saying which."""
    try:
        verified = webauthn.verify_authentication_response(
            credential=dict(credential),
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
            credential_public_key=public_key,
            credential_current_sign_count=sign_count,
            require_user_verification=user_verification,
        )
    except (WebAuthnException, ValueError, TypeError, KeyError) as exc:
        text = str(exc)
        if "sign count" in text.lower():
            raise PasskeyRefused("sign count did not grow (a cloned authenticator?)") from exc
        raise PasskeyRefused(f"assertion not verified: {text}") from exc
    return Asserted(
        credential_id=b64url(verified.credential_id),
        sign_count=verified.new_sign_count,
        backed_up=verified.credential_backed_up,
        user_verified=verified.user_verified,
    )
