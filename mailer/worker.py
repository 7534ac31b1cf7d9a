"""Running the Celery worker (and beat) that delivers email.

Two ways in, same wiring: ``ringfence worker [--beat]`` calls :func:`run_worker` with the
gateway's delivery ledger; ``celery -A mailer.worker worker -B`` builds ``app`` from the
``RINGFENCE_*`` settings and takes the ledger from the ``ringfence.delivery_ledger``
entry point, since ``mailer`` does not import the gateway's services itself.
"""

from __future__ import annotations

import logging
import threading
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from celery import Celery, bootsteps
from celery.signals import after_setup_logger, after_setup_task_logger

from gateway.config import Settings, load_settings
from gateway.logs import use_format
from mailer.celery_app import current_policy
from mailer.configure import configure_celery
from mailer.delivery import DeliveryLedger, current_ledger, install_ledger

# A factory ``(settings: Settings) -> DeliveryLedger``, registered by the package that
# owns the outbox table, e.g. in its pyproject.toml:
#   [project.entry-points."ringfence.delivery_ledger"]
#   default = "gateway.services.delivery:ledger_for_worker"
LEDGER_ENTRY_POINT_GROUP = "ringfence.delivery_ledger"
BEAT_SCHEDULE_FILE = "celerybeat-schedule"


def prepare_worker(settings: Settings, ledger: DeliveryLedger) -> Celery:
    """``celery_app`` configured for ``settings``, with ``ledger`` installed for its tasks."""
    if not settings.broker_url:
        # Without a broker every task runs eagerly in the web process; a worker would
        # silently fall back to Celery's default AMQP URL and wait for nothing.
        raise SystemExit("RINGFENCE_BROKER_URL must be set to run a Celery worker")
    if settings.outbox_sweep_interval_seconds <= 0:
        # Beat would run the sweep back to back, as fast as it can.
        raise SystemExit("RINGFENCE_OUTBOX_SWEEP_INTERVAL_SECONDS must be more than 0")
    app = configure_celery(settings, worker=True)
    install_ledger(ledger)
    if Heartbeat not in app.steps["consumer"]:
        app.steps["consumer"].add(Heartbeat)
    _log_in_format(settings.log_format)
    return app


class Heartbeat(bootsteps.StartStopStep):
    """Stamps this worker's row (``ledger.worker_seen``) every policy ``heartbeat``
    seconds while its consumer is connected to the broker. A consumer that loses the
    broker is stopped and started again by Celery, and so is this step: the stamps stop
    while nothing is consumed, and ``/readyz`` shows it (``mail_workers_consuming``)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._stop: threading.Event | None = None

    def start(self, parent: Any) -> None:
        self._stop = stop = threading.Event()
        name, interval = str(parent.hostname), current_policy().heartbeat

        def beat() -> None:
            while True:
                try:
                    current_ledger().worker_seen(name)
                except Exception:  # the database is away: the next stamp will tell
                    logging.getLogger("ringfence.mailer").warning("heartbeat not recorded")
                if stop.wait(interval):
                    return

        threading.Thread(target=beat, name="ringfence-heartbeat", daemon=True).start()

    def stop(self, parent: Any) -> None:
        if self._stop is not None:
            self._stop.set()

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)
        try:
            current_ledger().worker_gone(str(parent.hostname))
        except Exception:  # its stamps simply grow old
            logging.getLogger("ringfence.mailer").warning("worker's row not removed")


def _log_in_format(log_format: str) -> None:
    """The worker sets its loggers up itself: JSON lines (with the request id that queued
    the task) once it has, if ``RINGFENCE_LOG_FORMAT=json``."""

    def apply(logger: logging.Logger, **_: Any) -> None:
        use_format(logger, log_format)

    after_setup_logger.connect(apply, weak=False)
    after_setup_task_logger.connect(apply, weak=False)


def worker_argv(settings: Settings, concurrency: int = 2, beat: bool = False) -> list[str]:
    """The ``celery worker`` arguments :func:`run_worker` starts with."""
    argv = ["worker", "--loglevel", settings.log_level, "--concurrency", str(concurrency)]
    if beat:
        # Beat remembers when each periodic task last ran; in the instance folder rather
        # than wherever the worker happened to be started.
        schedule = settings.instance_dir / BEAT_SCHEDULE_FILE
        argv += ["-B", "--schedule", str(schedule)]
    return argv


def run_worker(
    settings: Settings, ledger: DeliveryLedger, concurrency: int = 2, beat: bool = False
) -> None:
    """Run a worker delivering email with ``ledger`` until it is stopped; with ``beat``,
    also the periodic sweep and reminders (run beat in exactly one worker)."""
    app = prepare_worker(settings, ledger)
    if beat:
        settings.instance_dir.mkdir(parents=True, exist_ok=True)
    # Not app.worker_main(): it runs Celery's command line in click's non-standalone
    # mode and drops the status, so a worker that stopped on an unrecoverable error (a
    # broker gone for good, say) exited 0, and a supervisor that restarts on failure left
    # mail stopped. In standalone mode the worker's status becomes the process's.
    from celery.bin.celery import celery as celery_command

    celery_command.params[0].default = app  # the --app option, as app.start() sets it
    celery_command.main(args=worker_argv(settings, concurrency, beat), standalone_mode=True)


def _ledger_from_entry_point(settings: Settings) -> DeliveryLedger:
    found = list(entry_points(group=LEDGER_ENTRY_POINT_GROUP))
    if len(found) != 1:
        names = ", ".join(sorted(ep.value for ep in found)) or "none"
        raise SystemExit(
            f"celery -A mailer.worker needs exactly one {LEDGER_ENTRY_POINT_GROUP!r} entry "
            f"point (found: {names}); or run `ringfence worker`"
        )
    factory = found[0].load()
    ledger: DeliveryLedger = factory(settings)
    return ledger


@cache
def _app_from_environment() -> Celery:
    settings = load_settings()
    if not settings.broker_url:
        raise SystemExit("RINGFENCE_BROKER_URL must be set to run a Celery worker")
    return prepare_worker(settings, _ledger_from_entry_point(settings))


def __getattr__(name: str) -> Any:
    # ``celery -A mailer.worker`` looks up ``app``; building it lazily keeps importing
    # this module (for run_worker) free of reading the environment.
    if name == "app":
        return _app_from_environment()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
