"""The Settings pages beyond saving: a test email with the settings as typed in the form,
before they are saved, and single sign-on (read-only: it is configured by the
installation's OpenID Connect settings) with a check of the identity provider.
Thin handlers over ``gateway.services.settings``, for whoever holds ``settings:write``
in every workspace, like the rest of Settings; nothing here saves anything."""

from __future__ import annotations

from typing import Any

from flask import Response, request
from marshmallow import ValidationError

from admin_api.schemas import EmailTestSchema
from console.views import _field_errors, _htmx, _render, _settings_page, bp, email_form, viewer
from gateway.errors import InvalidInput
from gateway.web.http import services

# The label of each field of the email form, for the problems listed beside the test's
# button (the page itself marks the fields when it is shown again without script).
EMAIL_LABELS = {
    "smtp_host": "SMTP host",
    "smtp_port": "SMTP port",
    "smtp_security": "Security",
    "smtp_username": "SMTP user name",
    "smtp_password": "SMTP password",
    "smtp_timeout": "Timeout (seconds)",
    "mail_from": "Sender (From)",
    "allowed_domains": "Company email domains",
    "try_to": "Send the test to",
    "_form": "Settings",
}


@bp.post("/settings/email/try")
def settings_try() -> Response:
    """Send a test email with the form's settings (the saved password where the password
    field is left empty and the server is the same), saving nothing."""
    form, changes = email_form()
    to = request.form.get("try_to", "")[:400].strip()
    form["try_to"] = to
    try:
        args = EmailTestSchema().load({**changes, "to": to})
        to_address = args.pop("to")
        outcome = services().settings.send_test_email(viewer().actor, to_address, args)
    except (ValidationError, InvalidInput) as exc:
        errors = _field_errors(exc)
        if "to" in errors:
            errors["try_to"] = errors.pop("to")
        if _htmx():
            problems = [(EMAIL_LABELS.get(k, k), " ".join(v)) for k, v in errors.items()]
            return _render("_try_outcome.html", status=422, problems=problems, outcome=None)
        return _settings_page(422, errors=errors, form=form)
    if _htmx():
        return _render("_try_outcome.html", outcome=outcome, problems=[])
    return _settings_page(form=form, try_outcome=outcome)


@bp.get("/settings/sso")
def settings_sso() -> Response:
    return _sso_page()


@bp.post("/settings/sso/check")
def settings_sso_check() -> Response:
    """Fetch the provider's discovery document now and say whether it answers."""
    outcome = services().settings.check_sso_provider(viewer().actor)
    if _htmx():
        return _render("_sso_check.html", outcome=outcome)
    return _sso_page(outcome=outcome)


def _sso_page(**context: Any) -> Response:
    sso = services().settings.sso(viewer().actor)
    context.setdefault("outcome", None)
    return _render("settings_sso.html", active="settings", sso=sso, **context)
