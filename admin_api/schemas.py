"""Marshmallow schemas of the admin API: request validation and response shapes."""

from __future__ import annotations

import re
from datetime import UTC
from email.utils import getaddresses
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate

from gateway.db.models import InvitationStatus, UserStatus
from gateway.emails import normalise_email
from gateway.identity.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from gateway.notifier import name_problem
from gateway.policy.validation import ROLE_NAME
from gateway.services.base import AuditTarget
from gateway.services.invitations import RoleInWorkspace, effective_status

SLUG = validate.Regexp(
    r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$",
    error="Use 1-63 lowercase letters, digits and hyphens, not starting or ending with a hyphen",
)
SLUG_OR_ALL = validate.Regexp(
    r"^(\*|[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)$",
    error="Use a workspace slug, or * for every workspace",
)
ROLE = validate.Regexp(r"^[a-z0-9_-]{1,63}$", error="Not a role name")


class PlainText(validate.Validator):
    """Names of people and workspaces go into email headers and bodies: a line break in
    one, as is or inside an RFC 2047 encoded word, could add headers (security finding
    4). ``regex`` is the part the OpenAPI document can say (no control characters, as
    gateway.notifier counts them); encoded words are checked here only."""

    regex = re.compile(r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*$")

    def __call__(self, value: str) -> str:
        if problem := name_problem(value):
            raise ValidationError(problem)
        return value


# A list, not validate.And: the OpenAPI document shows each validator of a field's list
# (its length, its pattern), but nothing inside an And.
NAME = [validate.Length(min=1, max=200), PlainText()]
# gateway.identity.passwords' length rule, in its words and in the OpenAPI document; whether a
# password is too common is the service's to say.
NEW_PASSWORD = [
    validate.Length(
        min=MIN_PASSWORD_LENGTH,
        error=f"The password must have at least {MIN_PASSWORD_LENGTH} characters",
    ),
    validate.Length(
        max=MAX_PASSWORD_LENGTH,
        error=f"The password must have at most {MAX_PASSWORD_LENGTH} characters",
    ),
]


class EmailAddress(fields.Email):
    """An address in the one form Ringfence stores and compares (gateway.emails),
    validated after normalising: a full-width at sign, capitals or surrounding spaces
    name the same address, and would not pass ``fields.Email`` as typed."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        return normalise_email(super()._deserialize(value, attr, data, **kwargs))


def sender_address(value: str) -> None:
    """``ops@example.com`` or ``Ringfence <ops@example.com>``: a From header with one
    address in it, not "not an address" (which mail servers refuse at the first send)."""
    problem = "Not a sender address: give ops@example.com or Name <ops@example.com>"
    found = getaddresses([value])
    if len(found) != 1 or "\n" in value or "\r" in value:
        raise ValidationError(problem)
    validate.Email(error=problem)(found[0][1])


class StrictSchema(Schema):
    """Request bodies: unknown fields are refused, so typos never pass silently."""


class LenientQuery(Schema):
    class Meta:
        unknown = EXCLUDE


# -- auth ---------------------------------------------------------------------------


class LoginSchema(StrictSchema):
    email = fields.String(required=True, validate=validate.Length(min=1, max=320))
    password = fields.String(
        required=True, load_only=True, validate=validate.Length(min=1, max=1024)
    )


class TokenSchema(Schema):
    access_token = fields.String()
    token_type = fields.String()
    expires_in = fields.Integer()
    refresh_token = fields.String(
        metadata={"description": "Single use: POST it to /auth/refresh for the next pair"}
    )


class RefreshSchema(StrictSchema):
    refresh_token = fields.String(required=True, validate=validate.Length(min=1, max=200))


# -- workspaces -----------------------------------------------------------------------


class WorkspaceCreateSchema(StrictSchema):
    slug = fields.String(required=True, validate=SLUG, metadata={"example": "acme"})
    name = fields.String(required=True, validate=NAME, metadata={"example": "Acme Inc."})


class WorkspaceRenameSchema(StrictSchema):
    name = fields.String(required=True, validate=NAME)


class WorkspaceSchema(Schema):
    slug = fields.String()
    name = fields.String()
    created_at = fields.DateTime()


class RolesQuerySchema(Schema):
    workspace = fields.String(
        required=True,
        validate=SLUG_OR_ALL,
        metadata={"description": "The workspace (or * for the roles shared by every one)"},
    )


class RoleSchema(Schema):
    name = fields.String(metadata={"description": "What a grant names"})
    description = fields.String(allow_none=True)
    workspace = fields.String(
        allow_none=True,
        metadata={"description": "The one workspace the role exists in; null: shared by all"},
    )
    source = fields.String(
        allow_none=True,
        metadata={
            "description": "The policy file that defines it, relative to policies/; null "
            "for a custom role"
        },
    )
    custom = fields.Boolean(
        metadata={"description": "Defined by the workspace's admins (POST /custom-roles)"}
    )
    scope = fields.String(
        metadata={
            "description": "workspace: granted in any one workspace; installation: granted "
            "only in every workspace (*), so listed only for workspace *"
        }
    )
    inherits = fields.List(fields.String())
    permissions = fields.List(
        fields.String(),
        metadata={"description": "As written in the file: wildcards and :own included"},
    )
    effective_permissions = fields.List(
        fields.String(),
        metadata={
            "description": "Every catalogue permission the role gives, inherited ones "
            "included and wildcards expanded; resource:action:own holds only on the "
            "holder's own resources"
        },
    )


# The policy files' rule for role names (a custom role may move into them: policy export).
CUSTOM_ROLE_NAME = [
    validate.Length(min=1, max=63),
    validate.Regexp(
        f"^{ROLE_NAME.pattern}$",
        error="Use lowercase letters, digits, '_' and '-', starting with a letter",
    ),
]
PERMISSION_NAME = validate.Regexp(
    r"^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*(:own)?$", error="Not a permission (resource:action)"
)


class CustomRoleUpdateSchema(StrictSchema):
    description = fields.String(load_default="", validate=[validate.Length(max=500), PlainText()])
    permissions = fields.List(
        fields.String(validate=PERMISSION_NAME),
        required=True,
        validate=validate.Length(min=1, max=100),
        metadata={
            "description": "Catalogue permissions (GET /permissions), each one you hold in "
            "the workspace; resource:action:own for the holder's own resources only"
        },
    )


class CustomRoleCreateSchema(CustomRoleUpdateSchema):
    name = fields.String(
        required=True,
        validate=CUSTOM_ROLE_NAME,
        metadata={"description": "What grants name; not a role of policies/"},
    )


class CustomRoleSchema(Schema):
    name = fields.String()
    workspace = fields.String(attribute="workspace_slug")
    description = fields.String()
    permissions = fields.List(fields.String())
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class PermissionSchema(Schema):
    name = fields.String(metadata={"description": "resource:action"})
    description = fields.String()


class RevisionSchema(Schema):
    revision = fields.Integer(
        metadata={"description": "Policy revision at which the change is in effect"}
    )


# -- users --------------------------------------------------------------------------


class UserQuerySchema(LenientQuery):
    status = fields.Enum(UserStatus, by_value=True)
    workspace = fields.String(validate=SLUG)
    role = fields.String(validate=ROLE)
    q = fields.String(
        validate=validate.Length(min=1, max=200), metadata={"description": "Name or email contains"}
    )


class InvitationSummarySchema(Schema):
    id = fields.Integer()
    status = fields.Function(lambda inv: str(effective_status(inv)))
    delivery_detail = fields.String(allow_none=True)
    expires_at = fields.DateTime()
    created_at = fields.DateTime()


class UserSchema(Schema):
    """Serialises a ``gateway.services.users.UserView``."""

    id = fields.Function(lambda v: v.user.id)
    email = fields.Function(lambda v: v.user.email)
    name = fields.Function(lambda v: v.user.name)
    status = fields.Function(lambda v: str(v.user.status))
    roles = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "Roles per workspace (the invited roles while pending)"},
    )
    directory_roles = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={
            "description": "Of ``roles``, those a company directory gave (SCIM: its groups' "
            "mapping or the connection's default role), per workspace: the directory takes "
            "them back, and removing one by hand is a 409; the others were granted by hand"
        },
    )
    invitation = fields.Nested(InvitationSummarySchema, allow_none=True)
    last_login_at = fields.Function(lambda v: _iso(v.user.last_login_at))
    created_at = fields.Function(lambda v: _iso(v.user.created_at))
    last_seen_at = fields.Function(
        lambda v: _iso(v.user.last_seen_at),
        metadata={"description": "Last signed-in admin API request (to the minute)"},
    )
    workspaces_last_seen = fields.Dict(
        keys=fields.String(),
        values=fields.DateTime(),
        metadata={
            "description": "Workspace → when the check endpoints last answered about this "
            "person there (to the minute; written every RINGFENCE_ACTIVITY_FLUSH_SECONDS); "
            "only workspaces where you may read users"
        },
    )
    grants = fields.Function(
        lambda v: [
            {
                "workspace": g.workspace_slug,
                "role": g.role,
                "granted_at": _iso(g.granted_at),
                "expires_at": _iso(g.expires_at),
            }
            for g in v.user.grants
            if g.role in v.roles.get(g.workspace_slug, ())
        ],
        metadata={
            "description": "Active grants with their end dates (null: no end); a grant "
            "whose end has passed is left out at once"
        },
    )


def _iso(value: Any) -> str | None:
    return value.isoformat() if value else None


class RolesSchema(StrictSchema):
    roles = fields.List(
        fields.String(validate=ROLE), required=True, validate=validate.Length(max=50)
    )


class GrantSchema(StrictSchema):
    workspace = fields.String(
        required=True,
        validate=SLUG_OR_ALL,
        metadata={"description": "A workspace slug, or * for every workspace"},
    )
    role = fields.String(required=True, validate=ROLE)
    expires_at = fields.AwareDateTime(
        default_timezone=UTC,
        load_default=None,
        allow_none=True,
        metadata={
            "description": "Optional end of the grant (in the future); decisions deny from then on"
        },
    )


class GrantChangeSchema(RevisionSchema):
    user = fields.Nested(UserSchema)


# -- invitations ----------------------------------------------------------------------


class RoleInWorkspaceSchema(StrictSchema):
    workspace = fields.String(required=True, validate=SLUG)
    role = fields.String(required=True, validate=ROLE)

    @post_load
    def make(self, data: dict[str, str], **_: Any) -> RoleInWorkspace:
        return RoleInWorkspace(data["workspace"], data["role"])


class InvitationCreateSchema(StrictSchema):
    email = EmailAddress(required=True, validate=validate.Length(max=320))
    name = fields.String(required=True, validate=NAME, metadata={"example": "John Smith"})
    roles = fields.List(
        fields.Nested(RoleInWorkspaceSchema),
        required=True,
        # Worded for the person filling in the form, not "Length must be between 1 and 50".
        validate=[
            validate.Length(min=1, error="Pick at least one role"),
            validate.Length(max=50, error="At most {max} roles in one invitation"),
        ],
        metadata={"description": "Roles per workspace, e.g. editor in acme, viewer in globex"},
    )


class InvitationQuerySchema(LenientQuery):
    status = fields.Enum(InvitationStatus, by_value=True)
    older_than_days = fields.Integer(
        validate=validate.Range(min=0, max=3650),
        metadata={
            "description": "Only invitations at least this old; without status: still waiting"
        },
    )


class DeliverySchema(Schema):
    status = fields.Function(lambda inv: str(inv.delivery_status))
    detail = fields.String(attribute="delivery_detail", allow_none=True)
    attempts = fields.Integer(attribute="delivery_attempts")
    sent_at = fields.DateTime(allow_none=True)


class InvitationSchema(Schema):
    id = fields.Integer()
    email = fields.String()
    name = fields.String()
    # The account only once the person accepted: before that, an id (old or new) would
    # tell the inviter whether the address already had an account.
    user_id = fields.Function(
        lambda inv: inv.user_id if inv.status == InvitationStatus.ACCEPTED else None,
        metadata={"type": "integer", "nullable": True},
    )
    status = fields.Function(lambda inv: str(effective_status(inv)))
    roles = fields.Function(
        lambda inv: [{"workspace": g.workspace_slug, "role": g.role} for g in inv.grants]
    )
    expires_at = fields.DateTime()
    created_at = fields.DateTime()
    accepted_at = fields.DateTime(allow_none=True)
    invited_by_id = fields.Integer(allow_none=True)
    delivery = fields.Function(lambda inv: DeliverySchema().dump(inv))
    resend_count = fields.Integer()
    resent_at = fields.DateTime(allow_none=True)
    reminded_at = fields.DateTime(allow_none=True)


class AcceptSchema(StrictSchema):
    token = fields.String(required=True, validate=validate.Length(min=1, max=200))
    # Required to create a new account; an existing account keeps its password.
    password = fields.String(load_only=True, validate=NEW_PASSWORD)
    name = fields.String(validate=NAME)


# -- audit ----------------------------------------------------------------------------


class AuditQuerySchema(LenientQuery):
    # Ids are 32-bit in the database; a larger one would overflow in the driver (a 500).
    actor_id = fields.Integer(validate=validate.Range(min=0, max=2**31 - 1))
    # Listed, not enforced (OneOf): a type the trail does not hold finds nothing, as before.
    target_type = fields.String(
        validate=validate.Length(max=63),
        metadata={
            "description": "What the event is about: " + ", ".join(t.value for t in AuditTarget)
        },
    )
    target_id = fields.String(validate=validate.Length(max=63))
    workspace = fields.String(validate=validate.Length(max=63))
    action = fields.String(validate=validate.Length(max=63))
    since = fields.AwareDateTime(default_timezone=UTC)
    until = fields.AwareDateTime(default_timezone=UTC)
    actor = fields.String(
        validate=validate.Length(min=1, max=320),
        metadata={"description": "Part of the recorded actor name or email (any case)"},
    )
    actor_client_id = fields.String(validate=validate.Length(max=100))
    request_id = fields.String(validate=validate.Length(max=100))


class AuditPageQuerySchema(AuditQuerySchema):
    cursor = fields.String(
        validate=validate.Length(max=200),
        metadata={"description": "X-Next-Cursor of the previous page (opaque)"},
    )
    page_size = fields.Integer(load_default=50, validate=validate.Range(min=1, max=1000))
    page = fields.Integer(
        validate=validate.Range(min=1, max=2**31 - 1),
        metadata={"description": "Numbered pages (older clients); prefer cursor"},
    )


class AuditExportQuerySchema(AuditQuerySchema):
    format = fields.String(
        load_default="jsonl",
        validate=validate.OneOf(["jsonl", "csv", "bundle"]),
        metadata={
            "description": "jsonl (one event per line, verifiable), csv, or bundle (JSON "
            "Lines: a header, the events, the signed checkpoints covering them and the "
            "JWKS that verifies those: `ringfence audit verify-export`)"
        },
    )


class AuditEventSchema(Schema):
    id = fields.Integer()
    at = fields.DateTime()
    actor_id = fields.Integer(allow_none=True)
    actor_name = fields.String()
    action = fields.String()
    target_type = fields.String()
    target_id = fields.String(allow_none=True)
    target_name = fields.String(allow_none=True)
    workspace = fields.String(allow_none=True)
    before = fields.Dict(allow_none=True)
    after = fields.Dict(allow_none=True)
    revision = fields.Integer(allow_none=True)
    request_id = fields.String(allow_none=True)
    actor_client_id = fields.String(allow_none=True)
    source_address = fields.String(allow_none=True)
    reason = fields.String(allow_none=True)
    prev_hash = fields.String()
    hash = fields.String()


# -- settings -------------------------------------------------------------------------


class EmailSettingsSchema(Schema):
    transport = fields.String(metadata={"description": "smtp, or outbox when no SMTP host is set"})
    smtp_host = fields.String()
    smtp_port = fields.Integer()
    smtp_security = fields.String()
    smtp_username = fields.String()
    smtp_timeout = fields.Float()
    mail_from = fields.String()
    allowed_domains = fields.List(fields.String())
    password_set = fields.Boolean(metadata={"description": "The password itself is never returned"})


class EmailSettingsUpdateSchema(StrictSchema):
    smtp_host = fields.String(validate=validate.Length(max=253))
    smtp_port = fields.Integer(validate=validate.Range(min=1, max=65535))
    smtp_security = fields.String(validate=validate.OneOf(["none", "starttls", "tls"]))
    smtp_username = fields.String(validate=validate.Length(max=320))
    smtp_password = fields.String(load_only=True, validate=validate.Length(max=1024))
    smtp_timeout = fields.Float(validate=validate.Range(min=1, max=120))
    mail_from = fields.String(
        validate=[validate.Length(min=3, max=320), sender_address],
        metadata={
            "description": "One address, plain or with a name: Name <ops@example.com>",
            "example": "Ringfence <no-reply@example.com>",
        },
    )
    allowed_domains = fields.List(
        fields.String(
            validate=validate.Regexp(
                r"^@?[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$",
                error="Not a domain name",
            )
        ),
        validate=validate.Length(max=100),
    )


class EmailTestSchema(EmailSettingsUpdateSchema):
    """Whom to send the test to and, optionally, settings to try instead of the saved ones
    (any field of ``PATCH /settings/email``, checked the same way; nothing is saved)."""

    to = EmailAddress(required=True)


class EmailTestResultSchema(Schema):
    ok = fields.Boolean()
    detail = fields.String()


# -- passwords and single sign-on -------------------------------------------------------


class PasswordChangeSchema(StrictSchema):
    current_password = fields.String(
        required=True, load_only=True, validate=validate.Length(min=1, max=1024)
    )
    new_password = fields.String(required=True, load_only=True, validate=NEW_PASSWORD)


class PasswordResetRequestSchema(StrictSchema):
    email = fields.String(required=True, validate=validate.Length(min=1, max=320))


class PasswordResetConfirmSchema(StrictSchema):
    token = fields.String(required=True, validate=validate.Length(min=1, max=200))
    new_password = fields.String(required=True, load_only=True, validate=NEW_PASSWORD)


class AcceptedSchema(Schema):
    detail = fields.String()


class SsoExchangeSchema(StrictSchema):
    code = fields.String(required=True, validate=validate.Length(min=1, max=200))
