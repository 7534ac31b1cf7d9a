"""A local multi-replica cluster for tests and the propagation benchmark: a private
``redis-server``, TCP proxies (:mod:`tests.tcp_proxy`) in front of it and of PostgreSQL,
and gateway replicas as separate gunicorn processes (``deploy/gunicorn.conf.py``, as
``deploy/local-cluster.sh`` starts them) on loopback ports.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sqlalchemy import make_url

from gateway.config import PROJECT_ROOT, Settings
from tests.tcp_proxy import TcpProxy

REDIS_SERVER = shutil.which("redis-server")
GUNICORN_CONF = PROJECT_ROOT / "deploy" / "gunicorn.conf.py"
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
    """``redis-server`` on a port of its own, without persistence."""

    def __init__(self, directory: Path) -> None:
        assert REDIS_SERVER is not None, "redis-server is not installed"
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *(str(REDIS_SERVER), "--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--dir", str(self.directory)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._answers, f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


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
    """One gateway replica: gunicorn with ``deploy/gunicorn.conf.py`` as a child process."""

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
            **self.extra_env,
        )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF)],
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
