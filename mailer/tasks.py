"""Celery tasks that send email, and the plain-dict form of their arguments.

Owns the task names (stable: queued messages outlive deployments) and the retry policy.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, fields
from typing import Any

from gateway.notifier import InvitationNotice
from mailer.celery_app import celery_app
from mailer.messages import render_invitation
from mailer.transport import (
    OutboxTransport,
    PermanentDeliveryError,
    TransientDeliveryError,
    transport_from_config,
)

logger = logging.getLogger("ringfence.mailer")

# Exponential back-off factor in seconds. Celery's retry_backoff=True means a factor of
# 1 s, so five retries would all be spent within ~30 s, shorter than a typical SMTP
# outage or greylisting delay; with 30 s they spread over up to ~15 min (full jitter,
# each delay capped at RETRY_BACKOFF_MAX).
RETRY_BACKOFF = 30
RETRY_BACKOFF_MAX = 600
MAX_RETRIES = 5

_NOTICE_FIELDS = tuple(f.name for f in fields(InvitationNotice))


def invitation_payload(notice: InvitationNotice) -> dict[str, Any]:
    """``notice`` as the JSON-safe dict the task takes (grants as ``[workspace, role]`` lists)."""
    payload = asdict(notice)
    payload["grants"] = [[workspace, role] for workspace, role in notice.grants]
    return payload


def notice_from_payload(payload: dict[str, Any]) -> InvitationNotice:
    """The :class:`InvitationNotice` a task payload describes."""
    # Unknown keys are ignored so that a newer web process can add a field without
    # breaking older workers during a rolling deployment.
    values = {name: payload[name] for name in _NOTICE_FIELDS}
    values["invitation_id"] = int(values["invitation_id"])
    values["grants"] = tuple((str(workspace), str(role)) for workspace, role in values["grants"])
    return InvitationNotice(**values)


def _mail_config() -> dict[str, Any]:
    cfg = celery_app.conf.get("ringfence_mail")
    if not cfg:
        raise RuntimeError(
            "mailer is not configured: call mailer.celery_app.configure_celery(settings)"
        )
    return dict(cfg)


@celery_app.task(
    bind=True,
    name="ringfence.send_invitation_email",
    autoretry_for=(TransientDeliveryError,),
    retry_backoff=RETRY_BACKOFF,
    retry_backoff_max=RETRY_BACKOFF_MAX,
    max_retries=MAX_RETRIES,
)
def send_invitation_email(self: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Render and deliver one invitation email; ``{"status": "sent"|"failed", ...}``."""
    notice = notice_from_payload(payload)
    cfg = _mail_config()
    transport = transport_from_config(cfg)
    message = render_invitation(notice, cfg["mail_from"])
    try:
        outcome = transport.send(message)
    except PermanentDeliveryError as exc:
        # Retrying cannot help and raising would only add a traceback (and, when eager,
        # an exception in the request that created the invitation).
        logger.error(
            "Invitation %s for %s: delivery failed: %s",
            notice.invitation_id,
            notice.to_address,
            exc,
        )
        return {"status": "failed", "reason": str(exc)}
    except TransientDeliveryError as exc:
        if self.request.is_eager:
            # Eager retries run at once, back-off ignored, in the caller's thread:
            # six attempts of up to smtp_timeout each, for the same outcome.
            logger.error(
                "Invitation %s for %s: delivery failed, not retried (no worker): %s",
                notice.invitation_id,
                notice.to_address,
                exc,
            )
            return {"status": "failed", "reason": str(exc)}
        logger.warning(
            "Invitation %s for %s: delivery deferred (attempt %d of %d): %s",
            notice.invitation_id,
            notice.to_address,
            self.request.retries + 1,
            MAX_RETRIES + 1,
            exc,
        )
        raise  # autoretry_for schedules the retry with back-off
    if isinstance(transport, OutboxTransport):
        # Without SMTP nobody receives the email, so the log is how the admin gets the
        # link. Over SMTP the link stays out of the logs: it is a bearer credential.
        logger.info(
            "Invitation %s for %s: accept link %s",
            notice.invitation_id,
            notice.to_address,
            notice.accept_url,
        )
    logger.info("Invitation %s for %s: %s", notice.invitation_id, notice.to_address, outcome)
    return {"status": "sent", "detail": outcome}
