"""The Celery application and how :class:`gateway.config.Settings` configures it.

Owns the single ``celery_app`` instance; the mail transport settings travel with it
(``conf.ringfence_mail``) so tasks never need to read ``Settings`` or the environment.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from gateway.config import Settings

celery_app = Celery("ringfence")
# Task arguments are plain values by design; refusing pickle keeps a compromised broker
# from becoming code execution on the worker.
celery_app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    broker_connection_retry_on_startup=True,
)


def mail_config(settings: Settings) -> dict[str, Any]:
    """The mail transport configuration as a plain, JSON-friendly dict."""
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
        # Embedded default: no broker to run, tasks run in the caller's thread.
        celery_app.conf.update(
            broker_url="memory://",  # never used while eager; avoids a "no hostname" warning
            task_always_eager=True,
            task_eager_propagates=True,
        )
    celery_app.conf.ringfence_mail = mail_config(settings)
    return celery_app
