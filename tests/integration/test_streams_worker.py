"""Event streams delivered by the real worker (issue 24): ``ringfence worker --beat`` on a
private Redis server, the gateway over HTTP on the database both share, and an HTTPS
webhook receiver on loopback verifying each request with the ``standardwebhooks``
library. The worker is stopped while changes are written, then started again: every
event arrives, exactly once, in order."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster import REDIS_SERVER
from tests.conftest import InitTemplates
from tests.helpers import create_workspaces
from tests.integration.test_worker_redis import Stack, stack_factory
from tests.stream_support import make_tls_files, webhook_receiver

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed"),
]


@pytest.fixture
def start_stack(
    tmp_path: Path, database_url: str, init_templates: InitTemplates
) -> Iterator[Callable[..., Stack]]:
    with stack_factory(tmp_path, database_url, init_templates) as start:
        yield start


def test_events_written_while_the_worker_is_down_arrive_once_and_in_order(
    start_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    tls = make_tls_files(tmp_path / "tls")
    stack = start_stack(
        None,
        stream_allow_private_destinations=True,
        stream_ca_file=tls.cert,
        stream_retry_backoff_seconds=0.2,
        stream_retry_backoff_max_seconds=0.5,
        # A claim lasts 5 timeouts and 10 s: a delivery the stop cut short (the harness
        # stops the pool's processes too) is taken over within the wait below.
        stream_timeout_seconds=1.0,
    )
    with webhook_receiver(tls) as hook:
        made = stack.admin.post(
            "/event-streams",
            json={
                "name": "SIEM",
                "workspace": "*",
                "kind": "webhook",
                "target": hook.url,
                "event_types": ["workspace.created"],
            },
        )
        assert made.status_code == 201, made.text
        hook.secrets = [made.json()["secret"]]

        def slugs() -> list[str]:
            return [e["data"]["target_id"] for e in list(hook.events)]

        create_workspaces(stack.admin, "one", "two")
        stack.wait_for(lambda: slugs() == ["one", "two"], "the worker's first deliveries")
        stream = f"/event-streams/{made.json()['stream']['id']}"
        stack.wait_for(lambda: stack.admin.get(stream).json()["delivered"] == 2, "their record")

        ready = stack.worker.ready_count()
        stack.worker.stop()
        create_workspaces(stack.admin, "three", "four", "five")
        assert slugs() == ["one", "two"]  # nobody delivers while the worker is down
        stack.worker.start()
        stack.worker.wait_ready(after=ready)
        expected = ["one", "two", "three", "four", "five"]
        stack.wait_for(lambda: slugs() == expected, "the events written while it was down")
        ids = hook.ids()
        assert ids == sorted(set(ids)) and hook.refused == 0  # once each, in order
        assert "ringfence.deliver_streams" in stack.worker.output()
