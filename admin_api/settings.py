"""Run-time settings: email delivery (SMTP) and the company-domain allow-list."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from admin_api.schemas import (
    EmailSettingsSchema,
    EmailSettingsUpdateSchema,
    EmailTestResultSchema,
    EmailTestSchema,
)
from gateway.web.http import current_actor, services
from gateway.web.json_input import Blueprint

blp = Blueprint("settings", __name__, url_prefix="/settings", description="Email settings")


@blp.route("/email")
class EmailSettings(MethodView):
    @blp.response(200, EmailSettingsSchema)
    def get(self) -> Any:
        """The email settings in effect (the password is never returned)."""
        return services().settings.read_email(current_actor())

    @blp.arguments(EmailSettingsUpdateSchema)
    @blp.response(200, EmailSettingsSchema)
    def patch(self, changes: dict[str, Any]) -> Any:
        """Change some email settings; an empty ``smtp_host`` goes back to the outbox folder.

        While a password is set, a change of host, port, security or user name must send
        ``smtp_password`` too (a new one, or empty to remove it): the stored password is
        never sent to a server it was not given for. Without it, 422 and nothing changes.
        """
        return services().settings.update_email(current_actor(), changes)


@blp.route("/email/test")
class EmailTest(MethodView):
    @blp.arguments(EmailTestSchema)
    @blp.response(200, EmailTestResultSchema)
    def post(self, args: dict[str, Any]) -> Any:
        """Send a test email now and report what the SMTP server answered.

        With only ``to``, the saved settings are tested. Any other field of ``PATCH
        /settings/email`` given beside it is tried instead of the saved value, with the
        same checks (a new host, port, security or user name needs ``smtp_password`` while
        one is stored; without it the saved password is used), and nothing is saved.

        ``detail`` is an SMTP reply (its code and at most 200 printable characters), a
        fixed reason, or, for anything that is not an SMTP server (refused, silent, TLS
        failed, another protocol), always the same words after the same fixed time.
        """
        changes = {k: v for k, v in args.items() if k != "to"}
        return services().settings.send_test_email(current_actor(), args["to"], changes)
