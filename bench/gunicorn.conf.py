"""gunicorn settings for a Ringfence gateway replica.

    gunicorn -c deploy/gunicorn.conf.py

Worker model: gthread, ONE worker process per replica by default and threads for
concurrency. The decision engine lives in each worker's memory, so every extra worker
is another copy to keep in sync (and metrics are per process); scale with more
replicas instead. ``preload_app`` builds the app (and loads the policy) once before
forking, so a worker never serves before the policy is in memory; each worker then
starts its own revision check and watcher threads (see ``post_worker_init``).

Graceful reload: ``kill -HUP <master>`` starts new workers and lets the old ones finish
their requests (up to ``graceful_timeout``). With ``preload_app`` a HUP does not load
new code: for an upgrade, replace the replica (rolling update) or send USR2 then
WINCH/QUIT to the old master.

Settings (environment): RINGFENCE_HOST / RINGFENCE_PORT (bind), WEB_CONCURRENCY
(workers, default 1), RINGFENCE_THREADS (threads per worker, default 8),
RINGFENCE_GRACEFUL_TIMEOUT (seconds, default 30); every other RINGFENCE_* setting is
read by the app itself.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any

from gateway.replication import sync
from gateway.web.state import gateway_state

# The app is built in the master (preload_app); its threads start in each worker.
sync.START_THREADS_AFTER_FORK = True

wsgi_app = "gateway.app:create_app()"
bind = f"{os.environ.get('RINGFENCE_HOST', '0.0.0.0')}:{os.environ.get('RINGFENCE_PORT', '8000')}"  # noqa: S104
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
threads = int(os.environ.get("RINGFENCE_THREADS", "8"))
preload_app = True
graceful_timeout = int(os.environ.get("RINGFENCE_GRACEFUL_TIMEOUT", "30"))
timeout = 30
keepalive = 5  # behind a load balancer that keeps connections open
accesslog = os.environ.get("RINGFENCE_ACCESS_LOG", "-") or None
errorlog = "-"
# Start-up logs say which revision a worker loaded; keep gunicorn's own lines terse.
loglevel = os.environ.get("RINGFENCE_LOG_LEVEL", "info").lower()


def pre_fork(server: Any, worker: Any) -> None:
    # The preloaded app holds the engine (millions of objects at scale), none of them
    # garbage: frozen, the collector never walks them again, and forked workers keep
    # sharing their memory pages instead of copying them when the collector touches them.
    gc.freeze()


def post_worker_init(worker: Any) -> None:
    # Change notices are applied on a background thread while request threads keep the
    # GIL busy; a shorter switch interval (default 5 ms) lets it in sooner, which is
    # what keeps propagation in milliseconds under load.
    sys.setswitchinterval(0.001)
    # Threads and pooled connections do not survive fork: start this worker's own.
    gateway_state(worker.wsgi).restart_after_fork()


# gunicorn >= 25's control socket has one default path per user: several replicas on
# one host would share it. Signals (HUP, TERM) are the interface we document.
control_socket_disable = True
