"""Work that must not happen on the request: run after the answer, in a small pool of
threads, with services around a database session of its own.

For answers that must not depend on what the work finds (a password reset request for
an address answers the same, and as fast, whether or not it has an account). Work lost
in a crash loses nothing that matters: it wrote nothing yet, or its email is committed in
the outbox, where the sweep finds it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from gateway.services import Services
from gateway.web.state import state

log = logging.getLogger("ringfence")

# Bounded: a burst of requests queues here instead of starting a thread each.
_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ringfence-after-answer")


def after_answer(work: Callable[[Services], None], what: str) -> None:
    """Run ``work`` with fresh services once this request no longer waits for it."""
    gateway = state()

    def run() -> None:
        session = gateway.session_factory()
        try:
            work(
                Services(
                    session, gateway.engine, gateway.notifier, gateway.settings, gateway.throttle
                )
            )
        except Exception:
            log.exception("%s failed", what)
        finally:
            session.close()

    _pool.submit(run)
