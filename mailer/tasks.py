"""Celery tasks that deliver outbox messages, and the plain-dict form of a notice.

Owns the task names (stable: queued tasks and beat schedules outlive deployments) and
the retry policy. Tasks know messages only by id; the delivery ledger
(:mod:`mailer.delivery`) says what to send and records what happened.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from gateway.notifier import (
    InvitationNotice,
    PasswordResetNotice,
    notice_from_payload,
    reset_notice_from_payload,
)
from mailer.celery_app import (
    MAX_ATTEMPTS,
    RETRY_BACKOFF,
    RETRY_BACKOFF_MAX,
    SWEEP_AGE,  # noqa: F401 - re-exported with the other defaults
    celery_app,
    current_policy,
)
from mailer.delivery import DeliveryLedger, Outgoing, current_ledger
from mailer.messages import PASSWORD_RESET, render_notice, stable_message_id
from mailer.transport import (
    OutboxTransport,
    PermanentDeliveryError,
    TransientDeliveryError,
    transport_from_config,
)

logger = logging.getLogger("ringfence.mailer")

# The retry and sweep timing comes from the settings (mailer.celery_app.DeliveryPolicy);
# the constants imported above are their defaults.
MAX_RETRIES = MAX_ATTEMPTS - 1


def backoff(retries: int, base: float = RETRY_BACKOFF, maximum: float = RETRY_BACKOFF_MAX) -> float:
    """Seconds to wait before retry ``retries + 1``: ``base`` doubled per retry, capped
    at ``maximum``, jittered."""
    ceiling = min(maximum, base * 2**retries)
    # "Equal jitter": random within the upper half. Full jitter could draw ~0 s and
    # knock again at once on a server that is greylisting us; some jitter still keeps
    # the retries of a burst of invitations from arriving together.
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - not for security


def _notice(outgoing: Outgoing) -> InvitationNotice | PasswordResetNotice:
    if outgoing.kind == PASSWORD_RESET:
        return reset_notice_from_payload(outgoing.payload)
    return notice_from_payload(outgoing.payload)


def _describe(outgoing: Outgoing, notice: InvitationNotice | PasswordResetNotice | None) -> str:
    if notice is None:
        return f"Message {outgoing.message_id} ({outgoing.kind})"
    if isinstance(notice, PasswordResetNotice):
        return f"Password reset for user {notice.user_id} (message {outgoing.message_id})"
    what = "Reminder for invitation" if outgoing.kind == "reminder" else "Invitation"
    return f"{what} {notice.invitation_id} for {notice.to_address} (message {outgoing.message_id})"


# max_retries is only the default: each retry passes the configured policy's own.
@celery_app.task(bind=True, name="ringfence.deliver_message", max_retries=MAX_RETRIES)
def deliver_message(self: Any, message_id: int) -> dict[str, Any]:
    """Claim, render and send outbox message ``message_id``, and record the outcome;
    ``{"status": "sent"|"failed"|"skipped", ...}`` (a retry is scheduled by raising)."""
    ledger = current_ledger()
    outgoing = ledger.claim(message_id)
    if outgoing is None:
        # Sent, failed for good, or being sent by another task: a redelivered or swept
        # task must not send the same attempt twice.
        logger.info("Message %s: already sent or being sent; skipped", message_id)
        return {"status": "skipped"}
    policy = current_policy()
    # Retries scheduled by this task and attempts started by the sweep both count, so
    # that a message failing over and over stops after max_attempts either way.
    attempt = max(self.request.retries + 1, outgoing.attempt)
    out_of_attempts = attempt >= policy.max_attempts
    notice: InvitationNotice | PasswordResetNotice | None = None
    recorded: list[str] = []

    def accepted(detail: str) -> None:
        # Recorded before QUIT: a worker that dies after the server took the message
        # (during QUIT, or before the answer below) must not leave it to be sent again.
        try:
            ledger.record_sent(message_id, detail)
            recorded.append(detail)
        except Exception:
            logger.exception("Message %s: sent, but not recorded yet", message_id)

    try:
        notice = _notice(outgoing)
        message = render_notice(outgoing.kind, notice, str(outgoing.transport["mail_from"]))
        # The same Message-ID on every attempt, so a mail system can collapse the copy
        # that an ambiguous failure (the worker died between DATA and our record) resends.
        stable_message_id(message, outgoing.message_id, outgoing.payload)
        transport = transport_from_config(outgoing.transport)
        with claim_renewed(ledger, message_id, policy.claim_lease):
            detail = transport.send(message, on_accepted=accepted)
    except PermanentDeliveryError as exc:
        # Retrying cannot help, and raising would only add a traceback (and, when eager,
        # an exception in the request that created the invitation).
        ledger.record_failure(message_id, str(exc), final=True)
        logger.error("%s: delivery failed: %s", _describe(outgoing, notice), exc)
        return {"status": "failed", "reason": str(exc)}
    except TransientDeliveryError as exc:
        if self.request.is_eager or out_of_attempts:
            # Eager retries would run at once, back-off ignored, in the caller's thread:
            # several attempts of up to smtp_timeout each, for the same outcome.
            ledger.record_failure(message_id, str(exc), final=True)
            logger.error(
                "%s: delivery failed, not retried (%s): %s",
                _describe(outgoing, notice),
                "no worker"
                if self.request.is_eager
                else f"attempt {attempt} of {policy.max_attempts}",
                exc,
            )
            return {"status": "failed", "reason": str(exc)}
        ledger.record_failure(message_id, str(exc), final=False)
        countdown = backoff(attempt - 1, policy.retry_backoff, policy.retry_backoff_max)
        logger.warning(
            "%s: delivery deferred (attempt %d of %d, next in %.1f s): %s",
            _describe(outgoing, notice),
            attempt,
            policy.max_attempts,
            countdown,
            exc,
        )
        # retry() raises; called directly (no worker) it re-raises exc instead.
        raise self.retry(exc=exc, countdown=countdown, max_retries=policy.max_attempts - 1) from exc
    except Exception as exc:
        # A bug or a broken payload, not a delivery outcome: recorded, and raised so that
        # it shows (in the worker log, or the caller's when eager). The sweep tries again
        # later, up to max_attempts.
        ledger.record_failure(
            message_id, f"unexpected error: {type(exc).__name__}: {exc}", final=out_of_attempts
        )
        raise
    if isinstance(transport, OutboxTransport) and isinstance(notice, InvitationNotice):
        # Without SMTP nobody receives the email, so the log is how the admin gets the
        # link. Over SMTP the link stays out of the logs: it is a bearer credential.
        # Reset links never go to the log: whoever reads it could take over the account.
        logger.info("%s: accept link %s", _describe(outgoing, notice), notice.accept_url)
    if not recorded:
        ledger.record_sent(message_id, detail)
    logger.info("%s: %s", _describe(outgoing, notice), detail)
    return {"status": "sent", "detail": detail}


@contextmanager
def claim_renewed(ledger: DeliveryLedger, message_id: int, lease: float) -> Iterator[None]:
    """Renew the claim on ``message_id`` every third of its ``lease`` while the block
    runs (a slow SMTP server must not look like a dead worker, whose message the sweep
    takes over and sends again)."""
    done = threading.Event()

    def renew() -> None:
        while not done.wait(lease / 3):
            try:
                ledger.renew(message_id)
            except Exception:  # the next renewal, or the outcome, will tell
                logger.warning("Message %s: could not renew its claim", message_id)

    renewer = threading.Thread(target=renew, name=f"renew-claim-{message_id}", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        done.set()
        renewer.join()


def _deliver_each(message_ids: Iterable[int], why: str) -> int:
    """Start ``deliver_message`` for each id; how many were started."""
    started = 0
    for message_id in message_ids:
        try:
            deliver_message.delay(message_id)
        except Exception:
            logger.exception("Message %s (%s): could not deliver or queue it", message_id, why)
            if not celery_app.conf.task_always_eager:
                # Publishing failed, so the broker is away: the next sweep tries again.
                break
            continue  # eager: that one message failed, the others may not
        started += 1
    return started


@celery_app.task(name="ringfence.sweep_unsent")
def sweep_unsent() -> int:
    """Requeue messages whose task was lost (e.g. the broker was down at commit time);
    how many were requeued."""
    older_than = current_policy().sweep_after
    count = _deliver_each(current_ledger().unsent(older_than_seconds=older_than), "sweep")
    if count:
        logger.warning("Sweep: requeued %d message(s) whose delivery was lost", count)
    return count


@celery_app.task(name="ringfence.send_reminders")
def send_reminders() -> int:
    """Queue and deliver reminders for invitations pending too long; how many."""
    count = _deliver_each(current_ledger().queue_reminders(), "reminder")
    if count:
        logger.info("Reminders: queued %d reminder email(s)", count)
    return count


@celery_app.task(name="ringfence.housekeeping")
def housekeeping() -> dict[str, Any]:
    """The gateway's periodic upkeep, through its ledger when it offers one (audit
    retention, expired invitations' audit events); what was done."""
    run = getattr(current_ledger(), "housekeeping", None)
    done: dict[str, Any] = run() if callable(run) else {}
    if any(done.values()):
        logger.info("Housekeeping: %s", done)
    return done
