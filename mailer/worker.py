"""Entry point for a Celery worker: ``celery -A mailer.worker worker``.

Owns nothing but the wiring of ``RINGFENCE_*`` settings into ``celery_app`` for a worker
process, which is not started through the app factory.
"""

from __future__ import annotations

from gateway.config import load_settings
from mailer.celery_app import configure_celery

_settings = load_settings()
if not _settings.broker_url:
    # Without a broker every task runs eagerly in the web process; a worker would
    # silently fall back to Celery's default AMQP URL and wait for nothing.
    raise SystemExit("RINGFENCE_BROKER_URL must be set to run a Celery worker")

celery_app = configure_celery(_settings)
