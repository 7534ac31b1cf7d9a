"""A passkey authenticator in software, for the functional tests: it answers WebAuthn's
``create()`` and ``get()`` options as a browser and a platform authenticator would,
with real EC P-256 keys (``cryptography``) and real signatures, CBOR-encoded
authenticator data and a client data JSON naming the origin, so that the gateway's
verification (the ``webauthn`` package, never mocked) checks every byte. Its knobs make
the answers the tests need to be refused: another origin, another RP id, no user
verification, a counter that goes back (a cloned key), another user handle."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import struct
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

UP, UV, BE, BS, AT = 0x01, 0x04, 0x08, 0x10, 0x40
AAGUID = bytes(16)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def from_b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Credential:
    credential_id: bytes
    key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    sign_count: int = 0


@dataclass
class SoftAuthenticator:
    """Keeps its credentials (discoverable: each remembers its RP id and user handle)."""

    origin: str
    credentials: list[Credential] = field(default_factory=list)

    def create(
        self,
        options: dict[str, Any],
        origin: str | None = None,
        user_verified: bool = True,
        kind: str = "webauthn.create",
    ) -> dict[str, Any]:
        """A registration answer (attestation ``none``) to ``navigator.credentials.create``
        options as the server sent them (JSON)."""
        rp_id = options["rp"]["id"]
        credential = Credential(
            secrets.token_bytes(16),
            ec.generate_private_key(ec.SECP256R1()),
            rp_id,
            from_b64url(options["user"]["id"]),
        )
        numbers = credential.key.public_key().public_numbers()
        cose_key = cbor2.dumps(
            {
                1: 2,  # kty: EC2
                3: -7,  # alg: ES256
                -1: 1,  # crv: P-256
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )
        attested = AAGUID + struct.pack(">H", len(credential.credential_id))
        attested += credential.credential_id + cose_key
        auth_data = self._auth_data(rp_id, UP | (UV if user_verified else 0) | AT, 0) + attested
        client_data = self._client_data(kind, options["challenge"], origin)
        self.credentials.append(credential)
        return {
            "id": b64url(credential.credential_id),
            "rawId": b64url(credential.credential_id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(
                    cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
                ),
                "transports": ["internal"],
            },
        }

    def get(
        self,
        options: dict[str, Any],
        origin: str | None = None,
        credential: Credential | None = None,
        user_verified: bool = True,
        sign_count: int | None = None,
        user_handle: bytes | None = None,
        rp_id: str | None = None,
        kind: str = "webauthn.get",
    ) -> dict[str, Any]:
        """An assertion for ``navigator.credentials.get`` options: by ``credential`` (else
        the first one the options allow, or the first of the RP: a discoverable one), its
        counter one up unless ``sign_count`` says otherwise."""
        if credential is None:
            allowed = {from_b64url(c["id"]) for c in options.get("allowCredentials", [])}
            credential = next(
                c
                for c in self.credentials
                if c.rp_id == options["rpId"] and (not allowed or c.credential_id in allowed)
            )
        credential.sign_count = credential.sign_count + 1 if sign_count is None else sign_count
        auth_data = self._auth_data(
            rp_id or credential.rp_id, UP | (UV if user_verified else 0), credential.sign_count
        )
        client_data = self._client_data(kind, options["challenge"], origin)
        signature = credential.key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        return {
            "id": b64url(credential.credential_id),
            "rawId": b64url(credential.credential_id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": b64url(
                    credential.user_handle if user_handle is None else user_handle
                ),
            },
        }

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        return json.dumps(
            {
                "type": kind,
                "challenge": challenge,
                "origin": origin or self.origin,
                "crossOrigin": False,
            }
        ).encode()

    @staticmethod
    def _auth_data(rp_id: str, flags: int, sign_count: int) -> bytes:
        return (
            hashlib.sha256(rp_id.encode()).digest() + bytes([flags]) + struct.pack(">I", sign_count)
        )
