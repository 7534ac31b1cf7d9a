"""Configuring the Celery application for :class:`gateway.config.Settings`.

Apart from :mod:`mailer.celery_app` (which the tasks import for ``celery_app``), so that
this module can import the task modules at the top: whoever configures the app has its
tasks registered, and no module of the mailer imports one that imports it back.
"""

from __future__ import annotations

from celery import Celery

import mailer.housekeeping
import mailer.stream_tasks
import mailer.tasks  # noqa: F401 - registers the mail tasks
from gateway.config import Settings
from mailer.celery_app import (
    DELIVERY_POLICY_KEY,
    PUBLISHER_TRANSPORT_OPTIONS,
    WORKER_TRANSPORT_OPTIONS,
    beat_schedule,
    celery_app,
    delivery_policy,
    reset_connections,
)


def configure_celery(settings: Settings, *, worker: bool = False) -> Celery:
    """Configure and return ``celery_app`` for ``settings``; eager when no broker is set.
    ``worker`` for the process that consumes tasks, else it only publishes them."""
    celery_app.conf.update(
        {
            DELIVERY_POLICY_KEY: delivery_policy(settings),
            # A publish to a broker that does not answer fails after one or two timeouts.
            "broker_transport_options": dict(
                WORKER_TRANSPORT_OPTIONS if worker else PUBLISHER_TRANSPORT_OPTIONS
            ),
            "beat_schedule": beat_schedule(float(settings.outbox_sweep_interval_seconds)),
        }
    )
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
