"""A local multi-replica cluster for tests and the benchmarks (propagation, chaos): a
private ``redis-server``, TCP proxies (:mod:`tests.tcp_proxy`) in front of it and of
PostgreSQL, gateway replicas as separate ``ringfence serve`` processes (granian, as
``deploy/local-cluster.sh`` starts them) on loopback ports, and a mail worker
(``ringfence worker``) as a child process.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sqlalchemy import make_url

from gateway.config import PROJECT_ROOT, Settings
from tests.helpers import ADMIN_EMAIL, run_cli
from tests.tcp_proxy import TcpProxy

REDIS_SERVER = shutil.which("redis-server")
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(probe: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    """The first truthy result of ``probe``, polled every 20 ms for ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


class RedisServer:
    """``redis-server`` on a port of its own, without persistence: a restart (``stop``,
    then ``start`` again, on the same port) loses every queued task, as a broker outage
    may."""

    def __init__(self, directory: Path) -> None:
        assert REDIS_SERVER is not None, "redis-server is not installed"
        self.directory = directory
        self.port = free_port()
        self.log_path = directory / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        assert self.process is None, "already running"
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *(str(REDIS_SERVER), "--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--dir", str(self.directory)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(self._answers, f"redis-server on port {self.port}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log()}") from None
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.process.returncode}\n{self.log()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def freeze(self) -> None:
        """Stop the server without closing anything: connections open, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """Die at once, as a crash does (nothing is written: it keeps no data anyway)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGCONT)  # in case it was frozen
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def log(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- redis-server log ---\n{text[-2000:]}"


def settings_env(settings: Settings) -> dict[str, str]:
    """Every setting of ``settings`` as the ``RINGFENCE_*`` variable that sets it."""
    env: dict[str, str] = {}
    for name in Settings.__dataclass_fields__:
        value = getattr(settings, name)
        if value is not None:
            env[f"RINGFENCE_{name.upper()}"] = str(value)
    return env


def through_proxy(database_url: str, proxy: TcpProxy) -> str:
    """``database_url`` pointing at ``proxy`` instead of the server."""
    url = make_url(database_url).set(host="127.0.0.1", port=proxy.port)
    return url.render_as_string(hide_password=False)


class Replica:
    """One gateway replica: ``ringfence serve`` (granian, as deployed) as a child process."""

    def __init__(self, name: str, settings: Settings, log_dir: Path, **env: str) -> None:
        self.name = name
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"replica-{name}.log"
        self.extra_env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> Replica:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RINGFENCE_")}
        env.update(settings_env(self.settings))
        env.update(
            RINGFENCE_HOST="127.0.0.1",
            RINGFENCE_PORT=str(self.port),
            RINGFENCE_ACCESS_LOG="",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve"],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends the workers too
            )
        if wait:
            self.wait_ready()
        return self

    def ready(self) -> dict[str, Any] | None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"replica {self.name} exited\n{self.log()}")
        try:
            response = httpx.get(f"{self.url}/readyz", timeout=5)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None  # type: ignore[no-any-return]

    def watcher(self) -> str | None:
        """The watcher's state as ``/readyz`` reports it, or None when it did not answer
        200 in time: on a loaded machine that is a "not yet" for the caller's wait, not
        an error (a CI run once failed on ``None["watcher"]``)."""
        state = self.ready()
        return None if state is None else state.get("watcher")

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        try:
            return wait_until(self.ready, f"replica {self.name} ready", timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log()}") from None

    def client(self, token: str | None = None, timeout: float = 10.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def stop(self) -> None:
        if self.process is None:
            return
        group = self.process.pid  # the group this replica leads (start_new_session)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        # A worker that outlived its master (it should not) goes with the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        self.process = None

    def log(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- replica {self.name} log ---\n{text[-4000:]}"


# The beat's ticks and the empty sweeps, which every half second would bury the rest of
# a worker's output.
_SWEEP_CHATTER = re.compile(
    r"Sending due task ringfence-sweep-unsent|ringfence\.sweep_unsent\[[^\]]+\] "
    r"(received|succeeded in \S+ 0$)"
)


class Worker:
    """``ringfence worker --concurrency 1 --beat`` as a child process, output to a file."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RINGFENCE_")}
        env.update(settings_env(self.settings))
        env["PYTHONUNBUFFERED"] = "1"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "worker", "--concurrency", "1", "--beat"],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group, so that teardown stops the pool's children too.
                start_new_session=True,
            )
        return self

    def ready_count(self) -> int:
        """How many times a worker has said it is ready in this log (a restart appends)."""
        return self.output().count(" ready.")

    def wait_ready(self, timeout: float = 30.0, after: int = 0) -> None:
        """Until the worker says it is ready (for the ``after+1``-th time in its log)."""

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the worker exited with {self.process.returncode}\n{self.log()}"
                )
            return self.ready_count() > after

        try:
            wait_until(ready, "the worker to be ready", timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log()}") from None

    def begin_stop(self) -> None:
        """Ask for a warm shutdown (finish the task at hand, then exit)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)

    def kill(self) -> None:
        """Die at once, mid-task if it has one (SIGKILL to the whole group)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.begin_stop()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log(self, tail: int = 6000) -> str:
        lines = [line for line in self.output().splitlines() if not _SWEEP_CHATTER.search(line)]
        return "--- worker output ---\n" + "\n".join(lines)[-tail:]


OPS = "ops@example.com"


@dataclass
class Cluster:
    """Two replicas on one PostgreSQL schema through ``db_proxy``, change notices on a
    private Redis through ``redis_proxy``; ``token`` is the super admin's (signed in on A),
    ``ops_id`` a second super admin's id."""

    a: Replica
    b: Replica
    redis: RedisServer
    redis_proxy: TcpProxy
    db_proxy: TcpProxy
    settings: Settings  # as the replicas see them (through the proxies)
    token: str
    ops_id: int

    @property
    def replicas(self) -> tuple[Replica, Replica]:
        return (self.a, self.b)

    def admin(self, replica: Replica) -> httpx.Client:
        return replica.client(self.token)

    def check(self, replica: Replica, subject: str = OPS, **headers: str) -> httpx.Response:
        with replica.client() as client:
            return client.post(
                "/v1/check",
                json={
                    "subject": subject,
                    "workspace": "acme",
                    "resource": "users",
                    "action": "read",
                },
                headers=headers,
            )

    def set_ops_active(self, replica: Replica, active: bool) -> int:
        """Deactivate or reactivate ops through ``replica``'s admin API; the revision."""
        verb = "reactivate" if active else "deactivate"
        with self.admin(replica) as admin:
            response = admin.post(f"/users/{self.ops_id}/{verb}")
        assert response.status_code == 200, response.text
        return int(response.headers["X-Ringfence-Revision"])


def start_cluster(
    settings: Settings,
    admin_password: str,
    directory: Path,
    started: list[Any],
    poll_seconds: float = 1.0,
    wait_ms: int = 200,
    with_broker: bool = False,
    **overrides: Any,
) -> Cluster:
    """Start a :class:`Cluster` on the database of ``settings`` (set up by ``ringfence
    init``, whose super admin password is ``admin_password``) with workspace ``acme``;
    everything started is appended to ``started``, for :func:`stop_all`. ``overrides``
    are settings of the replicas; ``with_broker``: the Redis is their mail broker too."""
    created = run_cli(settings, "create-admin", "--email", OPS, "--name", "Ops")
    assert created.exit_code == 0, created.output
    redis_server = RedisServer(directory / "redis").start()
    started.append(redis_server)
    redis_proxy = TcpProxy("127.0.0.1", redis_server.port)
    started.append(redis_proxy)
    url = settings.database_url
    db_proxy = TcpProxy(make_url(url).host or "127.0.0.1", make_url(url).port or 5432)
    started.append(db_proxy)
    replica_settings = replace(
        settings,
        database_url=through_proxy(url, db_proxy),
        watcher_url=f"redis://127.0.0.1:{redis_proxy.port}/0",
        broker_url=(
            f"redis://127.0.0.1:{redis_proxy.port}/1" if with_broker else settings.broker_url
        ),
        revision_poll_seconds=poll_seconds,
        min_revision_wait_ms=wait_ms,
        # Most checks come from loopback without a service token; tests of tokens
        # through an outage check with them too (remembered ones keep working).
        decisions_allow_loopback=True,
        **overrides,
    )
    a = Replica("a", replica_settings, directory / "logs")
    b = Replica("b", replica_settings, directory / "logs")
    started.extend([a, b])
    for replica in (a, b):
        replica.start(wait=False)
    for replica in (a, b):
        replica.wait_ready()
        wait_until(lambda r=replica: r.watcher() == "connected", "watcher")  # type: ignore[misc]
    with a.client() as anonymous:
        login = anonymous.post(
            "/auth/login", json={"email": ADMIN_EMAIL, "password": admin_password}
        )
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    with a.client(token) as admin:
        created_ws = admin.post("/workspaces", json={"slug": "acme", "name": "Acme"})
        assert created_ws.status_code == 201, created_ws.text
        users = admin.get("/users", params={"q": "ops"}).json()
    [ops] = [u for u in users if u["email"] == OPS]
    # B has heard of all this (the workspace, ops' grants) before anyone asks it.
    committed = (a.ready() or {})["revision"]
    wait_until(lambda: (b.ready() or {}).get("revision", -1) >= committed, "B to catch up with A")
    return Cluster(a, b, redis_server, redis_proxy, db_proxy, replica_settings, token, ops["id"])


def stop_all(started: list[Any]) -> None:
    """Stop what :func:`start_cluster` (or a caller) started, newest first."""
    for thing in reversed(started):
        if isinstance(thing, TcpProxy):
            thing.close()
        else:
            thing.stop()
