"""The SDK's tests run against the real gateway of this repository, served on loopback
(the gateway's own fixtures: a database set up by ``ringfence init``, the app, the live
server). The SDK's behaviour does not depend on the gateway's database, so they run on
SQLite only; the gateway's own tests run on PostgreSQL too."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.audit import activity
from tests.conftest import admin_password, app, init_templates, server, settings
from tests.helpers import LiveServer, create_client, create_workspaces, onboard, serving

__all__ = ["admin_password", "app", "init_templates", "server", "settings"]

JOHN = "john@example.com"
MARY = "mary@example.com"


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'ringfence.db'}"
    activity.close_all()


@dataclass
class Gateway:
    """A live gateway with workspaces acme and globex, John an editor in acme, Mary a
    viewer in acme and an admin in globex, and a service's OAuth client."""

    server: LiveServer
    admin: httpx.Client
    client_id: str
    client_secret: str
    john_id: int

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture
def gateway(server: LiveServer) -> Iterator[Gateway]:
    admin = server.admin()
    create_workspaces(admin, "acme", "globex")
    john_id = onboard(server, admin, JOHN, "John Smith", [("acme", "editor")])
    onboard(server, admin, MARY, "Mary Major", [("acme", "viewer"), ("globex", "admin")])
    client_id, secret = create_client(server.settings, "decisions:check", name="sdk test")
    yield Gateway(server, admin, client_id, secret, john_id)
    admin.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Flaky:
    """The real gateway behind a real HTTP server that answers the next ``failures``
    decision requests with a 503 problem (every one while ``down``; a proxy's HTML page
    with a 200 while ``garbled``), and counts the decision requests it gets."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.failures = 0
        self.down = False
        self.garbled = False
        self.seen = 0
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ["PATH_INFO"].startswith(("/v1/check", "/access/v1/")):
            with self.lock:
                self.seen += 1
                fail = self.down or self.failures > 0
                self.failures -= self.failures > 0
            if self.garbled:
                start_response("200 OK", [("Content-Type", "text/html")])
                return [b"<html>Welcome to the proxy</html>"]
            if fail:
                start_response(
                    "503 Service Unavailable",
                    [("Content-Type", "application/problem+json"), ("Retry-After", "0")],
                )
                return [
                    b'{"type": "urn:ringfence:problem:replica-stale", "title": "Stale",'
                    b' "status": 503}'
                ]
        return self.app(environ, start_response)


@pytest.fixture
def flaky(gateway: Gateway) -> Iterator[tuple[Flaky, str]]:
    """:class:`Flaky` in front of the gateway, served on loopback: it and its URL."""
    front = Flaky(gateway.server.app)
    with serving(front) as httpd:
        yield front, f"http://127.0.0.1:{httpd.server_port}"
