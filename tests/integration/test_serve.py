"""`ringfence serve` as deployed (granian, gateway.cli.server): a graceful reload (HUP)
while requests keep coming drops none of them, and the access log of the real server
redacts invitation tokens. The replicas' tests (tests/integration/test_replicas.py) and
the worker's last write (test_workspace_activity) run under the same server."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import psutil
import pytest

from gateway.config import Settings
from tests.cluster import Replica, wait_until


def worker_pids(replica: Replica) -> set[int]:
    assert replica.process is not None
    return {child.pid for child in psutil.Process(replica.process.pid).children()}


# Server behaviour, the same on either database: SQLite only keeps the test short.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_reload_replaces_the_worker_without_dropping_a_request(
    settings: Settings, admin_password: str, tmp_path: Path
) -> None:
    replica = Replica(
        "a",
        replace(settings, decisions_allow_loopback=True),
        tmp_path / "logs",
        RINGFENCE_ACCESS_LOG="-",
    )
    replica.start()
    answers: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    check = {"subject": "nobody@example.com", "workspace": "x", "resource": "d", "action": "r"}

    def ask() -> None:
        with replica.client(timeout=15) as client:
            while not stop.is_set():
                try:
                    answers.append(client.post("/v1/check", json=check).status_code)
                    answers.append(client.get("/healthz").status_code)
                except httpx.HTTPError as error:
                    errors.append(error)

    try:
        with replica.client() as client:
            assert client.get("/invite/s3cr3t-t0ken").status_code == 410
        before = wait_until(lambda: worker_pids(replica), "a worker", 10)
        askers = [threading.Thread(target=ask) for _ in range(4)]
        for asker in askers:
            asker.start()
        wait_until(lambda: len(answers) > 20, "answers before the reload", 10)
        assert replica.process is not None
        os.kill(replica.process.pid, signal.SIGHUP)
        # granian starts the new worker, waits its respawn interval (3.5 s), then stops
        # the old one, which finishes what it has: the seconds this test needs.
        after = wait_until(
            lambda: (pids := worker_pids(replica)) and not pids & before and pids,
            "the old worker replaced",
            30,
        )
        answered_after_reload = len(answers)
        time.sleep(0.5)
    finally:
        stop.set()
        for asker in askers:
            asker.join(20)
        replica.stop()
        log = replica.log_path.read_text()
    assert len(after) == 1 and len(answers) > answered_after_reload
    assert errors == [], log
    assert set(answers) == {200}, log
    assert "GET /invite/[redacted] HTTP/1.1" in log and "s3cr3t" not in log


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_single_checks_are_answered_while_kept_alive_connections_send_batches(
    settings: Settings, admin_password: str, tmp_path: Path
) -> None:
    """Eight clients keep their connections busy with batches of evaluations, more than
    the worker has threads; a check on a connection of its own is still answered. (With
    granian's backpressure set to the threads, it bounds connections: no check was
    answered until a batch connection closed.)"""
    replica = Replica("a", replace(settings, decisions_allow_loopback=True), tmp_path / "logs")
    replica.start()
    item = {
        "subject": {"type": "user", "id": "nobody@example.com"},
        "action": {"name": "read"},
        "resource": {"type": "documents", "id": "1", "properties": {"workspace": "x"}},
    }
    batch = {"evaluations": [item] * 100}
    stop = threading.Event()
    sent: list[int] = []

    def send_batches() -> None:
        with replica.client(timeout=15) as client:
            while not stop.is_set():
                sent.append(client.post("/access/v1/evaluations", json=batch).status_code)

    senders = [threading.Thread(target=send_batches) for _ in range(8)]
    try:
        for sender in senders:
            sender.start()
        wait_until(lambda: len(sent) > 16, "batches flowing", 10)
        check = {"subject": "nobody@example.com", "workspace": "x", "resource": "d", "action": "r"}
        answered = []
        for _ in range(5):
            with replica.client(timeout=5) as client:  # a new connection each time
                answered.append(client.post("/v1/check", json=check).status_code)
    finally:
        stop.set()
        for sender in senders:
            sender.join(20)
        replica.stop()
    assert answered == [200] * 5 and set(sent) == {200}
