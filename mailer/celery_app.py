"""The Celery application and how :class:`gateway.config.Settings` configures it.

Owns the single ``celery_app`` instance, its delivery guarantees (late acks: a task lost
with its worker is delivered again) and the periodic tasks run by beat. What to send, and
through which transport, comes from the delivery ledger (:mod:`mailer.delivery`), and
the retry and sweep timing from the :class:`DeliveryPolicy` that
:func:`mailer.configure.configure_celery` puts in the app's configuration, so the tasks
never read ``Settings`` or the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celery import Celery

from gateway.config import Settings

# Names are stable: a beat schedule file and queued messages outlive deployments.
SWEEP_SCHEDULE = "ringfence-sweep-unsent"
REMINDER_SCHEDULE = "ringfence-send-reminders"
SWEEP_INTERVAL = 60.0  # seconds
REMINDER_INTERVAL = 3600.0
# The gateway's own upkeep: audit retention (archive old events) and expiry events.
HOUSEKEEPING_SCHEDULE = "ringfence-housekeeping"
HOUSEKEEPING_INTERVAL = 3600.0
STREAMS_SCHEDULE = "ringfence-deliver-streams"
STREAMS_INTERVAL = 5.0
# Seconds a broker connection may take to open, and, when publishing from the web
# process, a command to be answered. Redis' default for both is to wait forever, so a
# broker that accepts connections but answers nothing (frozen, failing over, a half-open
# connection) would hold the request that committed an invitation for ever, although
# the sweep covers a publish that failed. A worker keeps waiting for answers: a timed-out
# ack there leaves its consumer stalled long after the broker is back.
BROKER_SOCKET_TIMEOUT = 5.0
PUBLISHER_TRANSPORT_OPTIONS = {
    "socket_connect_timeout": BROKER_SOCKET_TIMEOUT,
    "socket_timeout": BROKER_SOCKET_TIMEOUT,
}
WORKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": BROKER_SOCKET_TIMEOUT}
# Where configure_celery keeps the DeliveryPolicy: the tasks read it from the app's
# configuration, which a prefork worker's children inherit, not from Settings.
DELIVERY_POLICY_KEY = "ringfence_delivery_policy"

# Exponential back-off in seconds: RETRY_BACKOFF, twice that, four times... each capped
# at RETRY_BACKOFF_MAX. A factor of 1 s would spend all retries within ~30 s, shorter
# than a typical SMTP outage or greylisting delay; with 30 s they spread over 8-15 min.
# (The largest countdown must stay below the broker's visibility timeout, 1 h on Redis.)
RETRY_BACKOFF = 30.0
RETRY_BACKOFF_MAX = 600.0
MAX_ATTEMPTS = 6
# A queued message still unsent after this long lost its task (the broker was away when
# its transaction committed, or the task vanished with its worker); the sweep requeues it.
SWEEP_AGE = 60.0
# A worker renews its claim on a message every third of this while it sends.
CLAIM_LEASE = 60.0
# A worker whose consumer is connected stamps its row this often (mailer.worker).
HEARTBEAT = 10.0


@dataclass(frozen=True)
class DeliveryPolicy:
    """How the tasks retry and sweep; the defaults are the documented settings'."""

    retry_backoff: float = RETRY_BACKOFF  # seconds before the first retry (at most)
    retry_backoff_max: float = RETRY_BACKOFF_MAX  # cap of each back-off
    max_attempts: int = MAX_ATTEMPTS  # first attempt included
    sweep_after: float = SWEEP_AGE  # age at which the sweep requeues a queued message
    claim_lease: float = CLAIM_LEASE  # seconds a send's claim lasts unless renewed
    heartbeat: float = HEARTBEAT  # seconds between a consuming worker's stamps


def beat_schedule(sweep_interval: float = SWEEP_INTERVAL) -> dict[str, Any]:
    """The periodic tasks run by beat, the sweep every ``sweep_interval`` seconds."""
    return housekeeping_schedule() | {
        SWEEP_SCHEDULE: {
            "task": "ringfence.sweep_unsent",
            "schedule": sweep_interval,
            # A sweep nobody ran in time is superseded by the next one; without expiry
            # a worker back from an outage would run every missed sweep in a row.
            "options": {"expires": sweep_interval},
        },
        REMINDER_SCHEDULE: {
            "task": "ringfence.send_reminders",
            "schedule": REMINDER_INTERVAL,
            "options": {"expires": REMINDER_INTERVAL},
        },
        HOUSEKEEPING_SCHEDULE: {
            "task": "ringfence.housekeeping",
            "schedule": HOUSEKEEPING_INTERVAL,
            "options": {"expires": HOUSEKEEPING_INTERVAL},
        },
        # Event streams: what a lost wake-up left, and retries whose back-off is over.
        STREAMS_SCHEDULE: {
            "task": "ringfence.deliver_streams",
            "schedule": STREAMS_INTERVAL,
            "options": {"expires": STREAMS_INTERVAL},
        },
    }


# Upkeep (mailer.housekeeping): ended time-limited grants, review deadlines, periodic
# reviews. Decisions deny at a grant's end whatever the interval (gateway.engine.expiry); the
# task only makes it durable, so once a minute is plenty.
EXPIRE_SCHEDULE = "ringfence-expire-grants"
CLOSE_REVIEWS_SCHEDULE = "ringfence-close-due-reviews"
START_REVIEW_SCHEDULE = "ringfence-start-due-review"
RECHECK_DOMAINS_SCHEDULE = "ringfence-recheck-domains"
EXPIRE_INTERVAL = 60.0
CLOSE_REVIEWS_INTERVAL = 300.0
START_REVIEW_INTERVAL = 3600.0
# Each verified domain is looked up again every RINGFENCE_SSO_DOMAIN_RECHECK_HOURS; the
# task runs hourly and takes the ones due (gateway.services.sso_domains).
RECHECK_DOMAINS_INTERVAL = 3600.0
# Remembered browsers stop skipping the second step at once when they end (the check is
# at sign-in); the task only deletes their rows.
FORGET_DEVICES_SCHEDULE = "ringfence-forget-ended-devices"
FORGET_DEVICES_INTERVAL = 3600.0


def housekeeping_schedule() -> dict[str, Any]:
    """The beat entries of the upkeep tasks (part of :func:`beat_schedule`)."""
    return {
        name: {"task": task, "schedule": interval, "options": {"expires": interval}}
        for name, task, interval in (
            (EXPIRE_SCHEDULE, "ringfence.expire_grants", EXPIRE_INTERVAL),
            (CLOSE_REVIEWS_SCHEDULE, "ringfence.close_due_reviews", CLOSE_REVIEWS_INTERVAL),
            (START_REVIEW_SCHEDULE, "ringfence.start_due_review", START_REVIEW_INTERVAL),
            (RECHECK_DOMAINS_SCHEDULE, "ringfence.recheck_domains", RECHECK_DOMAINS_INTERVAL),
            (FORGET_DEVICES_SCHEDULE, "ringfence.forget_ended_devices", FORGET_DEVICES_INTERVAL),
        )
    }


celery_app = Celery("ringfence")
celery_app.conf.update(
    # Task arguments are plain values by design; refusing pickle keeps a compromised
    # broker from becoming code execution on the worker.
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    broker_connection_retry_on_startup=True,
    # Acknowledge after the task ran, and hand a task back when its worker dies mid-way:
    # a redelivered deliver_message is harmless because the ledger's claim lets each
    # attempt send at most once. One task per worker process at a time, so a slow SMTP
    # server does not hold other messages prefetched behind it.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_transport_options=dict(PUBLISHER_TRANSPORT_OPTIONS),
    beat_schedule=beat_schedule(),
)


def mail_config(settings: Settings) -> dict[str, Any]:
    """The mail transport configuration of ``settings`` as a plain, JSON-friendly dict
    (the shape :func:`mailer.transport.transport_from_config` and ``Outgoing.transport``
    use)."""
    return {
        "smtp_host": settings.smtp_host,
        "smtp_port": settings.smtp_port,
        "smtp_security": settings.smtp_security,
        "smtp_username": settings.smtp_username,
        "smtp_password": settings.smtp_password,
        "smtp_timeout": settings.smtp_timeout,
        "mail_from": settings.mail_from,
        "outbox_dir": str(settings.outbox_path),
    }


def delivery_policy(settings: Settings) -> DeliveryPolicy:
    """The retry and sweep timing of ``settings``."""
    return DeliveryPolicy(
        retry_backoff=max(0.0, float(settings.mail_retry_backoff_seconds)),
        retry_backoff_max=max(0.0, float(settings.mail_retry_backoff_max_seconds)),
        # At least the first attempt, whatever the setting says.
        max_attempts=max(1, int(settings.mail_max_attempts)),
        sweep_after=max(0.0, float(settings.outbox_sweep_after_seconds)),
        claim_lease=max(0.1, float(settings.mail_claim_lease_seconds)),
        heartbeat=max(0.1, float(settings.mail_worker_heartbeat_seconds)),
    )


def current_policy() -> DeliveryPolicy:
    """The policy ``configure_celery`` set, or the defaults if it has not run."""
    policy = celery_app.conf.get(DELIVERY_POLICY_KEY)
    return policy if isinstance(policy, DeliveryPolicy) else DeliveryPolicy()


def reset_connections() -> None:
    """Forget the broker connection pools, so that the next publish uses the current
    ``broker_url`` (they are built once, on first use, for the URL of that moment)."""
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
