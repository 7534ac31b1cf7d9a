"""Serving the gateway over HTTP: granian (WSGI), one app built before the workers fork.

Why granian: measured side by side with gunicorn (gthread) on the same machine, worker
settings and data (``make bench-http``, bench/http_results.md), its Rust HTTP layer
answers ``POST /v1/check`` several times faster and takes the connection handling off
the interpreter's lock, so a worker's Python time goes to decisions.

How a replica runs (``ringfence serve``, the Dockerfile's command):

- The app is built once, in the main process, before any worker exists (what gunicorn
  called ``preload_app``): the policy and the engine are in memory before a worker
  serves, and the workers, forked from it, share those pages. ``gc.freeze()`` keeps the
  collector from touching (and so copying) them afterwards.
- Each worker, once forked, starts its own background threads and database pool
  (``GatewayState.restart_after_fork``): threads and pooled connections do not survive
  ``fork``. ``sync.START_THREADS_AFTER_FORK`` keeps the main process from starting any.
- When a worker stops (a reload, a shutdown) it writes what it holds (the decision log,
  the activity recorder, sampled decision events) through ``GatewayState.close``: the
  workers are ``multiprocessing`` children, which end without running ``atexit``.
- ``kill -HUP <main pid>`` reloads gracefully: a new worker starts on the same listening
  socket, then the old one is stopped and finishes the requests it has (up to
  ``graceful_timeout`` seconds). Before that, the old workers are told (``SIGUSR1``) to
  drain: every answer they still give says ``Connection: close``, so the clients' kept
  alive connections move to a new worker while the old one still answers, instead of
  being cut when it stops (a request written into a connection as it closes fails). Like
  gunicorn's preload, a HUP does not load new code: for an upgrade, replace the replica
  (rolling update).
- The access log (granian's ``granian.access`` logger) goes through the same redaction
  of invitation, reset and SSO secrets as every request log.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing.process
import multiprocessing.util
import os
import signal
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from flask import Flask

from gateway.replication import sync
from gateway.web.accept_page import install_log_redaction
from gateway.web.state import gateway_state

# One line per request, as gunicorn's default did: who, what, the answer, how long.
ACCESS_LOG_FORMAT = '%(addr)s - "%(method)s %(path)s %(protocol)s" %(status)d %(dt_ms).1fms'


@dataclass(frozen=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    # Threads running Python per worker: requests that wait (the database, a slow
    # client's body) do not hold up the others.
    threads: int = 8
    access_log: bool = True
    log_level: str = "info"
    # Seconds a stopping worker gets to finish its requests.
    graceful_timeout: int = 30


class Draining:
    """The WSGI app of a worker, which once told to drain (``SIGUSR1``, sent by the main
    process when a reload begins) closes each connection after its answer."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.draining = False

    def drain(self, _signum: int = 0, _frame: FrameType | None = None) -> None:
        self.draining = True

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if not self.draining:
            return self.app(environ, start_response)

        def closing(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            headers = [(k, v) for k, v in headers if k.lower() != "connection"]
            return start_response(status, [*headers, ("Connection", "close")], *exc_info)

        return self.app(environ, closing)


def worker_app(app: Flask) -> Draining:
    """What each forked worker serves: the app built in the main process, with this
    worker's own threads and pool started, its state written when it ends, and told to
    drain by ``SIGUSR1``."""
    # Change notices are applied on a background thread while request threads keep the
    # GIL busy; a shorter switch interval (default 5 ms) lets it in sooner, which is
    # what keeps propagation in milliseconds under load.
    sys.setswitchinterval(0.001)
    install_log_redaction()  # granian configured this worker's loggers again
    state = gateway_state(app)
    state.restart_after_fork()
    # Run by multiprocessing when the worker process ends (atexit is not, in its children).
    multiprocessing.util.Finalize(None, state.close, exitpriority=10)
    served = Draining(app)
    signal.signal(signal.SIGUSR1, served.drain)
    return served


def serve(build_app: Callable[[], Flask], options: ServerOptions) -> None:
    """Build the app, then serve it with ``options.workers`` forked granian workers
    until the process is told to stop (TERM, INT)."""
    from granian import Granian
    from granian.constants import Interfaces
    from granian.log import LogLevels

    sync.START_THREADS_AFTER_FORK = True
    install_log_redaction()
    app = build_app()
    # The app (the engine: millions of objects at scale) is built and none of it is
    # garbage: frozen, the collector never walks it again, and the forked workers keep
    # sharing its memory pages instead of copying them when the collector touches them.
    gc.collect()
    gc.freeze()

    def load(_target: Any) -> Draining:
        return worker_app(app)

    server = Granian(
        # Only named in granian's own messages: the app is the one built above.
        "gateway.app:create_app",
        address=options.host,
        port=options.port,
        interface=Interfaces.WSGI,
        workers=options.workers,
        blocking_threads=options.threads,
        # granian's backpressure is left at its default (the backlog): it bounds the
        # connections a worker holds, not its requests, so set to the threads, eight
        # kept-alive connections sending batches took every place and single checks on
        # other connections waited for them to close (0 answered in 6 s; bench-http's
        # checks-under-batches row).
        websockets=False,
        log_level=LogLevels(options.log_level.lower()),
        log_access=options.access_log,
        log_access_format=ACCESS_LOG_FORMAT,
        workers_kill_timeout=options.graceful_timeout,
        respawn_failed_workers=True,
    )

    # granian warns whenever a worker may run more Python threads than 2 x cores + 1;
    # here they mostly wait on the database, which is why there are eight.
    logging.getLogger("_granian").addFilter(
        lambda record: not record.getMessage().startswith("Configuration allows spawning")
    )

    @server.on_reload
    def drain_old_workers() -> None:
        # Runs in the main process before any new worker is forked: the workers alive
        # now are all old ones.
        for worker in server.wrks:
            process = worker.inner
            if isinstance(process, multiprocessing.process.BaseProcess) and process.pid:
                os.kill(process.pid, signal.SIGUSR1)

    server.serve(target_loader=load)
