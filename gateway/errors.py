"""The one error hierarchy; rendered once, as RFC 9457 ``application/problem+json``.

Subclasses only declare ``status``, ``type`` and ``title`` (the Authlib style); the
instance carries the ``detail`` and any extension members.
"""

from __future__ import annotations

from typing import Any

PROBLEM_TYPE_PREFIX = "urn:ringfence:problem:"


class RingfenceError(Exception):
    status: int = 500
    type: str = "internal-error"
    title: str = "Internal server error"

    def __init__(self, detail: str | None = None, **extensions: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.extensions = extensions

    def to_problem(self) -> dict[str, Any]:
        problem: dict[str, Any] = {
            "type": PROBLEM_TYPE_PREFIX + self.type,
            "title": self.title,
            "status": self.status,
        }
        if self.detail:
            problem["detail"] = self.detail
        problem.update(self.extensions)
        return problem


class BadRequest(RingfenceError):
    status = 400
    type = "bad-request"
    title = "Bad request"


class InvalidInput(RingfenceError):
    status = 422
    type = "invalid-input"
    title = "The request is not valid"


class Unauthorized(RingfenceError):
    status = 401
    type = "unauthorized"
    title = "Authentication required"


class InvalidCredentials(Unauthorized):
    type = "invalid-credentials"
    title = "Invalid email or password"


class MfaRequired(Unauthorized):
    """The password was right; the second step (POST /auth/mfa/verify with the
    ``mfa_token`` extension member) completes the sign-in."""

    type = "mfa-required"
    title = "A second factor is required"


class InvalidMfaCode(Unauthorized):
    type = "invalid-mfa-code"
    title = "The code is not valid"


class InvalidPasskey(Unauthorized):
    """A passkey's answer that does not verify (gateway.services.passkeys): the same
    answer whatever went wrong, so that it tells nobody which accounts or keys exist."""

    type = "invalid-passkey"
    title = "The passkey was not accepted"


class Forbidden(RingfenceError):
    status = 403
    type = "forbidden"
    title = "Permission denied"


class MfaEnrolmentRequired(Forbidden):
    """RINGFENCE_MFA_REQUIRED asks this person for a second factor: until they enrol
    (POST /auth/mfa/totp, then /confirm) their session is good for nothing else."""

    type = "mfa-enrolment-required"
    title = "Set up two-step sign-in first"


class NotFound(RingfenceError):
    status = 404
    type = "not-found"
    title = "Not found"


class Conflict(RingfenceError):
    status = 409
    type = "conflict"
    title = "Conflict with the current state"


class InvalidInvitationToken(RingfenceError):
    status = 410
    type = "invalid-invitation"
    title = "This invitation link is not valid"


class PayloadTooLarge(RingfenceError):
    status = 413
    type = "payload-too-large"
    title = "Request body too large"


class TooManyRequests(RingfenceError):
    status = 429
    type = "too-many-requests"
    title = "Too many requests"


class PolicyInvalid(RingfenceError):
    status = 422
    type = "policy-invalid"
    title = "The policy files are not valid"


class ServiceUnavailable(RingfenceError):
    status = 503
    type = "unavailable"
    title = "Service temporarily unavailable"


class InvalidToken(Unauthorized):
    """A bearer token that is malformed, expired, wrongly signed, signed by an unknown or
    retired key, meant for another audience or issuer, or revoked (RFC 6750
    ``invalid_token``). The type stays ``unauthorized``; ``reason`` says which."""

    def __init__(self, detail: str, reason: str) -> None:
        super().__init__(detail, reason=reason)
        self.reason = reason
        self.challenge = f'Bearer error="invalid_token", error_description="{detail}"'


class InsufficientScope(Forbidden):
    """A valid token without the scope the endpoint needs (RFC 6750 ``insufficient_scope``)."""

    type = "insufficient-scope"
    title = "The access token lacks the required scope"

    def __init__(self, scope: str) -> None:
        super().__init__(f"This endpoint needs a token with the scope '{scope}'", scope=scope)
        self.challenge = f'Bearer error="insufficient_scope", scope="{scope}"'


class InvalidResetToken(RingfenceError):
    status = 410
    type = "invalid-reset-token"
    title = "This password reset link is not valid"


class SsoNotConfigured(RingfenceError):
    status = 404
    type = "sso-not-configured"
    title = "Single sign-on is not configured"


class SsoRefused(RingfenceError):
    """The identity provider vouched for someone who may not sign in here."""

    status = 403
    type = "sso-refused"
    title = "Single sign-on refused"


class SsoRequired(Forbidden):
    """The address's domain is verified by a workspace that requires its single sign-on:
    no password sign-in (``sso_login`` names where to start instead)."""

    type = "sso-required"
    title = "Sign in with single sign-on"


class SsoFailed(RingfenceError):
    """The sign-on round trip itself is broken or forged (state, nonce, signature)."""

    status = 400
    type = "sso-failed"
    title = "Single sign-on failed"


class InvalidLogoutToken(RingfenceError):
    """A logout token that OpenID Connect Back-Channel Logout 1.0 says to refuse: 400,
    with its ``error`` (``invalid_request``) and ``error_description`` as members."""

    status = 400
    type = "invalid-logout-token"
    title = "The logout token is not valid"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, error="invalid_request", error_description=detail)


class IdentityProviderUnavailable(RingfenceError):
    status = 502
    type = "identity-provider-unavailable"
    title = "The identity provider could not be reached"
