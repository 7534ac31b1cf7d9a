"""The :class:`gateway.notifier.Notifier` that queues email through Celery.

Owns the boundary rule that notifying never fails the caller: by the time a service
calls it, the invitation is committed, and an email problem must not turn that into
an error response.
"""

from __future__ import annotations

import logging

from gateway.notifier import InvitationNotice
from mailer.tasks import invitation_payload, send_invitation_email

logger = logging.getLogger("ringfence.mailer")


class CeleryNotifier:
    """Queues one Celery task per notice (runs it in place when Celery is eager)."""

    def invitation_created(self, notice: InvitationNotice) -> None:
        """Queue the invitation email for ``notice``; failures are logged, never raised."""
        try:
            send_invitation_email.delay(invitation_payload(notice))
        except Exception:
            # Eager mode propagates task errors here; with a broker, publishing can
            # fail when it is down. Either way the invitation itself stands.
            logger.exception(
                "Invitation %s for %s: could not send or queue the email",
                notice.invitation_id,
                notice.to_address,
            )
