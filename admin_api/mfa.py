"""Two-step sign-in: a person's own authenticator app and recovery codes, and the second
step of signing in (gateway.services.mfa)."""

from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView
from marshmallow import Schema, fields, validate

from admin_api.schemas import StrictSchema, TokenSchema
from gateway.logs import request_id
from gateway.web.http import current_actor, services
from gateway.web.json_input import Blueprint

blp = Blueprint(
    "mfa", __name__, url_prefix="/auth/mfa", description="Two-step sign-in (TOTP, recovery codes)"
)

CODE = fields.String(
    required=True,
    load_only=True,
    validate=validate.Length(min=1, max=64),
    metadata={"description": "A 6-digit code from the authenticator app, or a recovery code"},
)


class CodeSchema(StrictSchema):
    code = CODE


class VerifySchema(StrictSchema):
    mfa_token = fields.String(
        required=True,
        load_only=True,
        validate=validate.Length(min=1, max=200),
        metadata={"description": "The mfa_token of POST /auth/login's mfa-required answer"},
    )
    code = CODE


class MfaStatusSchema(Schema):
    totp = fields.Boolean(metadata={"description": "An authenticator app is set up"})
    totp_enrolled_at = fields.DateTime(allow_none=True)
    pending = fields.Boolean(metadata={"description": "An enrolment waits for its first code"})
    recovery_codes_left = fields.Integer()
    passkeys = fields.Integer(
        metadata={"description": "Passkeys and security keys (added in the console)"}
    )


class TotpEnrolmentSchema(Schema):
    secret = fields.String(metadata={"description": "Base32; shown this once"})
    otpauth_uri = fields.String(metadata={"description": "For a QR code; shown this once"})


class RecoveryCodesSchema(Schema):
    recovery_codes = fields.List(
        fields.String(), metadata={"description": "Each works once; shown this once"}
    )


def _user_id() -> int:
    actor = current_actor()
    assert actor.user_id is not None  # a signed-in person
    return actor.user_id


@blp.route("")
class MfaStatus(MethodView):
    @blp.response(200, MfaStatusSchema)
    def get(self) -> Any:
        """Your second factors: whether an authenticator app is set up, recovery codes left."""
        return services().mfa.status(_user_id())


@blp.route("/totp")
class TotpEnrolment(MethodView):
    @blp.response(201, TotpEnrolmentSchema)
    def post(self) -> Any:
        """Start setting up an authenticator app: its secret and otpauth:// URI, shown this
        once. Nothing changes at sign-in until a first code confirms it."""
        return services().mfa.begin_totp(current_actor())


@blp.route("/totp/confirm")
class TotpConfirm(MethodView):
    @blp.arguments(CodeSchema)
    @blp.response(200, RecoveryCodesSchema)
    def post(self, args: dict[str, str]) -> Any:
        """Confirm the app with a first code: sign-in asks for a code from now on. The
        answer holds ten recovery codes, shown this once."""
        return services().mfa.confirm_totp(current_actor(), args["code"])


@blp.route("/totp/remove")
class TotpRemove(MethodView):
    @blp.arguments(CodeSchema)
    @blp.response(204)
    def post(self, args: dict[str, str]) -> None:
        """Turn two-step sign-in off, with a current code or a recovery code."""
        services().mfa.remove_totp(current_actor(), args["code"])


@blp.route("/recovery-codes")
class RecoveryCodes(MethodView):
    @blp.arguments(CodeSchema)
    @blp.response(200, RecoveryCodesSchema)
    def post(self, args: dict[str, str]) -> Any:
        """New recovery codes (the old ones stop working), with a current code."""
        return services().mfa.renew_recovery_codes(current_actor(), args["code"])


@blp.route("/verify")
class Verify(MethodView):
    @blp.arguments(VerifySchema)
    @blp.response(200, TokenSchema)
    def post(self, args: dict[str, str]) -> Any:
        """The second step of signing in: the password step's mfa_token and a code (from
        the app, or a recovery code) for session tokens. The mfa_token works once and for
        5 minutes; wrong codes are throttled like wrong passwords."""
        return services().mfa.verify(
            args["mfa_token"], args["code"], request.remote_addr or "", request_id()
        )


users_blp = Blueprint(
    "user_mfa", __name__, url_prefix="/users", description="Resetting a person's second factors"
)


class ResetSchema(Schema):
    sessions_ended = fields.Integer()


@users_blp.route("/<int(max=2147483647):user_id>/mfa/reset")
class MfaReset(MethodView):
    @users_blp.response(200, ResetSchema)
    def post(self, user_id: int) -> Any:
        """Take away a person's second factors (they lost their phone and their recovery
        codes): they sign in with the password alone and may enrol again; every session
        of theirs ends. Needs users:reset_mfa in each of their workspaces and the right to
        grant each of their roles; audited as mfa.reset."""
        return {"sessions_ended": services().mfa.reset(current_actor(), user_id)}


workspaces_blp = Blueprint(
    "workspace_mfa",
    __name__,
    url_prefix="/workspaces",
    description="A workspace's two-step sign-in policy",
)


class WorkspacePolicySchema(Schema):
    workspace = fields.String(dump_only=True)
    required = fields.String(
        required=True,
        validate=validate.OneOf(["off", "admins", "everyone"]),
        metadata={"description": "Who of its members must use a second factor"},
    )
    installation = fields.String(
        dump_only=True, metadata={"description": "RINGFENCE_MFA_REQUIRED, which applies too"}
    )


@workspaces_blp.route("/<slug>/mfa-policy")
class WorkspaceMfaPolicy(MethodView):
    @workspaces_blp.response(200, WorkspacePolicySchema)
    def get(self, slug: str) -> Any:
        """Who of the workspace's members must sign in with a second factor."""
        return services().mfa.workspace_policy(current_actor(), slug)

    @workspaces_blp.arguments(WorkspacePolicySchema)
    @workspaces_blp.response(200, WorkspacePolicySchema)
    def put(self, args: dict[str, str], slug: str) -> Any:
        """Set it (off, admins: holders of a permission other than :read ones here, or
        everyone); needs settings:write. Takes effect at each member's next sign-in:
        whoever it asks who has no factor gets a session good only for enrolling."""
        return services().mfa.set_workspace_policy(current_actor(), slug, args["required"])
