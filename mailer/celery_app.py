"""The Celery application and how :class:`gateway.config.Settings` configures it.

Owns the single ``celery_app`` instance, its delivery guarantees (late acks: a task lost
with its worker is delivered again) and the periodic tasks run by beat. What to send, and
through which transport, comes from the delivery ledger (:mod:`mailer.delivery`), so the
tasks never read ``Settings`` or the environment.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from gateway.config import Settings

# Names are stable: a beat schedule file and queued messages outlive deployments.
SWEEP_SCHEDULE = "ringfence-sweep-unsent"
REMINDER_SCHEDULE = "ringfence-send-reminders"
SWEEP_INTERVAL = 60.0  # seconds
REMINDER_INTERVAL = 3600.0

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
    beat_schedule={
        SWEEP_SCHEDULE: {
            "task": "ringfence.sweep_unsent",
            "schedule": SWEEP_INTERVAL,
            # A sweep nobody ran in time is superseded by the next one; without expiry
            # a worker back from an outage would run every missed sweep in a row.
            "options": {"expires": SWEEP_INTERVAL},
        },
        REMINDER_SCHEDULE: {
            "task": "ringfence.send_reminders",
            "schedule": REMINDER_INTERVAL,
            "options": {"expires": REMINDER_INTERVAL},
        },
    },
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


def reset_connections() -> None:
    """Forget the broker connection pools, so that the next publish uses the current
    ``broker_url`` (they are built once, on first use, for the URL of that moment)."""
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


def configure_celery(settings: Settings) -> Celery:
    """Configure and return ``celery_app`` for ``settings``; eager when no broker is set."""
    # Imported here, not at module top, because tasks.py imports celery_app from here;
    # importing it guarantees the tasks are registered whoever configures the app.
    import mailer.tasks  # noqa: F401

    if settings.broker_url:
        celery_app.conf.update(
            broker_url=settings.broker_url,
            task_always_eager=False,
            task_eager_propagates=False,
        )
    else:
        # Embedded default: no broker to run, tasks run in the caller's thread, and no
        # beat either (the sweep and reminders run only with a worker).
        celery_app.conf.update(
            broker_url="memory://",  # never used while eager; avoids a "no hostname" warning
            task_always_eager=True,
            task_eager_propagates=True,
        )
    reset_connections()
    return celery_app
