"""Helpers for tests: the live server client, the CLI, the outbox, and the admin and
decision API calls the functional tests share."""

from __future__ import annotations

import functools
import os
import re
import shutil
import socket
import threading
import time
import unittest.mock
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import httpx
import yaml
from click.testing import CliRunner
from flask import Flask
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

from gateway.config import PROJECT_ROOT, Settings
from gateway.db.models import Invitation, utcnow
from gateway.db.session import make_engine
from gateway.web.state import gateway_state
from tests.smtp_support import free_port

ADMIN_EMAIL = "admin@example.com"
PASSWORD = "a long enough password"
PROBLEM = "urn:ringfence:problem:"
# The product's roles plus the AuthZEN interop scenarios' (todo, api-gateway,
# certification, search, idp) and their refinements: for the tests that need those roles
# (``@pytest.mark.policies_dir(AUTHZEN_POLICIES)``); installations never apply them.
AUTHZEN_POLICIES = PROJECT_ROOT / "tests" / "conformance" / "authzen" / "policies"
# Weak: a server (its app, engine, everything a test built) is gone with its test. Held
# here for ever, they piled up by the hundred in a worker, and every full garbage
# collection walked them all (the suite's gen-2 collections, and 2-4 s at its end).
_LIVE_SERVERS: weakref.WeakValueDictionary[str, LiveServer] = weakref.WeakValueDictionary()


def cli_env(settings: Settings) -> dict[str, str]:
    """The environment that makes the real ``ringfence`` command use ``settings``."""
    return {
        "RINGFENCE_INSTANCE_DIR": str(settings.instance_dir),
        "RINGFENCE_DATABASE_URL": settings.database_url,
        "RINGFENCE_SECRET_KEY": settings.secret_key,
        "RINGFENCE_ADMIN_EMAIL": settings.admin_email,
        "RINGFENCE_ADMIN_NAME": settings.admin_name,
        "RINGFENCE_POLICIES_DIR": str(settings.policies_dir),
        "RINGFENCE_PASSWORD_HASH_PROFILE": settings.password_hash_profile,
    }


def run_cli(settings: Settings, *args: str, input: str | None = None) -> Any:
    from gateway.cli.main import main

    return CliRunner().invoke(main, list(args), env=cli_env(settings), input=input)


def edited_policies(settings: Settings, tmp_path: Path, edit: Any, name: str = "candidate") -> Path:
    """A copy of ``settings``' policy folder with ``edit(roles)`` done to roles.yaml: a
    candidate policy for ``ringfence policy plan`` or ``replay``."""
    folder = tmp_path / name
    shutil.copytree(settings.policies_dir, folder)
    roles_file = folder / "roles.yaml"
    data = yaml.safe_load(roles_file.read_text())
    edit(data["roles"])
    roles_file.write_text(yaml.safe_dump(data, sort_keys=False))
    return folder


def close_app(app: Flask) -> None:
    """Stop what a test's gateway runs beside requests: its revision poller would outlive
    the test (and its database), and its pooled connections would be held until garbage
    collection (on a long run, up to PostgreSQL's "too many clients")."""
    gateway_state(app).close()


# The server the suite's in-process gateways run under: granian, as `ringfence serve`
# deploys it (issue 22), unless RINGFENCE_TEST_SERVER=werkzeug asks for the old one.
TEST_SERVER = os.environ.get("RINGFENCE_TEST_SERVER", "granian")


class GranianThread:
    """granian serving a WSGI app from a thread of this process, so a test can still
    reach into the app it serves (its state, clocks, hooks). granian runs its workers as
    threads only on free-threaded Python and has no public embedding for WSGI: this
    drives one worker the way its threaded server does (granian.server.mt), which ties
    the helper to granian's internals; tests/unit/test_deploy.py's pin check and any
    test here fail at once if they change. Starting takes about 1.5 ms, stopping 0.5."""

    def __init__(self, app: Any, port: int) -> None:
        from granian.constants import Interfaces, RuntimeModes
        from granian.server import common
        from granian.server.mt import MTServer

        from gateway.cli.server import ACCESS_LOG_FORMAT

        self.server_port = port or free_port()
        # A server configures the process's logging (dictConfig, which closes every
        # handler, the test runner's among them): not the suite's. Its access log, in
        # ringfence serve's format, goes to the granian.access logger like any other.
        with unittest.mock.patch.object(common, "configure_logging"):
            self._server = MTServer(
                "tests:app",  # only named in granian's messages: the app is passed below
                address="127.0.0.1",
                port=self.server_port,
                interface=Interfaces.WSGI,
                blocking_threads=8,
                websockets=False,
                log_access=True,
                log_access_format=ACCESS_LOG_FORMAT,
                runtime_mode=RuntimeModes.st,
            )
        self._server._init_shared_socket()
        self._worker = self._server._spawn_worker(0, MTServer._spawn_wsgi_worker, app)
        self._worker.inner.daemon = True

    def start(self) -> None:
        self._worker.inner.start()
        deadline = time.monotonic() + 10
        while True:  # listening once a connection is accepted
            try:
                socket.create_connection(("127.0.0.1", self.server_port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or not self._worker.inner.is_alive():
                    raise
                time.sleep(0.0005)

    def stop(self) -> None:
        self._worker.terminate()
        self._worker.inner.join(timeout=5)


@contextmanager
def serving(app: Any, port: int = 0) -> Iterator[Any]:
    """``app`` (any WSGI app) on a real HTTP socket on loopback, in a thread, until the
    block ends; its port is ``.server_port``. Under granian (TEST_SERVER), else under
    Werkzeug's threaded server, whose serve loop looks for the end every 20 ms (the
    standard library's 500 ms would cost every test that ends a server a quarter of a
    second)."""
    if TEST_SERVER == "granian":
        granian = GranianThread(app, port)
        granian.start()
        try:
            yield granian
        finally:
            granian.stop()
        return
    httpd = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=lambda: httpd.serve_forever(poll_interval=0.02))
    thread.daemon = True
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        thread.join(timeout=5)


@dataclass
class LiveServer:
    url: str
    app: Flask
    settings: Settings
    admin_password: str

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def login(self, email: str, password: str) -> httpx.Client:
        with self.client() as anonymous:
            response = anonymous.post("/auth/login", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        return self.client(response.json()["access_token"])

    def admin(self) -> httpx.Client:
        return self.login(ADMIN_EMAIL, self.admin_password)

    def __post_init__(self) -> None:
        # post_check gets only a client: it finds its server (and token) by the URL.
        _LIVE_SERVERS[self.url] = self


def outbox_messages(settings: Settings) -> list[Any]:
    """The emails written to the outbox folder, oldest first (parsed objects shared
    between calls: read them, do not change them)."""
    messages = []
    for path in sorted(settings.outbox_path.glob("*.eml")):
        found = path.stat()
        messages.append(_parsed_mail(str(path), found.st_ino, found.st_size, found.st_mtime_ns))
    return messages


# The email package's parser is slow (3% of the invitation tests' CPU), and tests read
# the outbox again and again, every message each time: a message is parsed once, by its
# file (path, inode, size, modification time: a file written again is parsed again).
@functools.lru_cache(maxsize=512)
def _parsed_mail(path: str, inode: int, size: int, modified_ns: int) -> Any:
    return message_from_bytes(Path(path).read_bytes(), policy=policy.default)


def full_width(text: str, keep: str = "") -> str:
    """``text`` in full-width forms (U+FF01-U+FF5E: ``john`` as it looks in CJK text),
    but for the characters in ``keep``: look-alike spellings of an address."""
    return "".join(c if c in keep or not "!" <= c <= "~" else chr(ord(c) + 0xFEE0) for c in text)


def accept_token(message: Any) -> str:
    """The invitation token from the accept link in an email's text part."""
    body = message.get_body(preferencelist=("plain",)).get_content()
    match = re.search(r"/invite/([A-Za-z0-9_\-%]+)", body)
    assert match, body
    return match.group(1)


# -- the admin API ----------------------------------------------------------------------


def create_workspaces(admin: httpx.Client, *slugs: str) -> None:
    """Create each workspace, named after its slug; each must be created (201)."""
    for slug in slugs:
        response = admin.post("/workspaces", json={"slug": slug, "name": slug.title()})
        assert response.status_code == 201, response.text


def post_invitation(
    client: httpx.Client, email: str, roles: list[tuple[str, str]], name: str = "Some One"
) -> httpx.Response:
    """``POST /invitations`` for ``email`` with ``roles`` as (workspace, role) pairs."""
    return client.post(
        "/invitations",
        json={
            "email": email,
            "name": name,
            "roles": [{"workspace": w, "role": r} for w, r in roles],
        },
    )


def invite(
    admin: httpx.Client, email: str, roles: list[tuple[str, str]], name: str = "Some One"
) -> dict[str, Any]:
    """:func:`post_invitation`, which must succeed (201); the invitation."""
    response = post_invitation(admin, email, roles, name)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def user_id_of(admin: httpx.Client, email: str) -> int:
    """The id of the one person with ``email`` whom ``admin`` can see (invitations do
    not name their person before acceptance)."""
    matches = [u for u in admin.get("/users", params={"q": email}).json() if u["email"] == email]
    assert len(matches) == 1, matches
    return matches[0]["id"]  # type: ignore[no-any-return]


def accept_invitation(server: LiveServer, token: str, password: str = PASSWORD) -> httpx.Response:
    """``POST /invitations/accept`` with ``token`` and ``password``, signed in as nobody."""
    with server.client() as anonymous:
        return anonymous.post("/invitations/accept", json={"token": token, "password": password})


def onboard(
    server: LiveServer,
    admin: httpx.Client,
    email: str,
    name: str,
    roles: list[tuple[str, str]],
) -> int:
    """Invite ``email`` with ``roles`` and accept with the emailed link; the user id."""
    sent_before = len(outbox_messages(server.settings))
    invite(admin, email, roles, name)
    [message] = outbox_messages(server.settings)[sent_before:]
    response = accept_invitation(server, accept_token(message))
    assert response.status_code == 200, response.text
    return response.json()["id"]  # type: ignore[no-any-return]


def invite_and_accept(
    server: LiveServer,
    admin: httpx.Client,
    email: str,
    name: str,
    roles: list[tuple[str, str]],
) -> tuple[int, httpx.Client]:
    """:func:`onboard`, then sign in: the user id and a client signed in as them."""
    return onboard(server, admin, email, name, roles), server.login(email, PASSWORD)


def set_invitation_expiry(server: LiveServer, invitation_id: int, delta: timedelta) -> None:
    """Move an invitation's expiry (setup only: waiting a week is not a test)."""
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with Session(db) as session, session.begin():
            invitation = session.get(Invitation, invitation_id)
            assert invitation is not None
            invitation.expires_at = utcnow() + delta
    finally:
        db.dispose()


# -- decisions and refusals -------------------------------------------------------------


def post_decision(
    server: LiveServer | httpx.Client,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    *,
    content: bytes | None = None,
) -> httpx.Response:
    """``POST`` a decision request (``/v1/check``, ``/access/v1/...``) as JSON, or
    ``content`` as it is: the one place tests ask for decisions, so the credentials
    decision callers need are added here (a service token with ``decisions:check``;
    ``headers`` may override it)."""
    live = (
        server
        if isinstance(server, LiveServer)
        else _LIVE_SERVERS[str(server.base_url).rstrip("/")]
    )
    headers = {**decision_headers(live), **(headers or {})}
    client = server.client() if isinstance(server, LiveServer) else server
    try:
        if content is not None:
            return client.post(path, content=content, headers=headers)
        return client.post(path, json=body, headers=headers)
    finally:
        if client is not server:
            client.close()


def post_check(
    client: httpx.Client, subject: str, workspace: str, resource: str, action: str
) -> httpx.Response:
    """``POST /v1/check`` with the four fields, which must answer (200); the response."""
    response = post_decision(
        client,
        "/v1/check",
        {"subject": subject, "workspace": workspace, "resource": resource, "action": action},
    )
    assert response.status_code == 200, response.text
    return response


def allowed(
    server: LiveServer,
    subject: str,
    workspace: str,
    action: str = "read",
    resource: str = "documents",
) -> bool:
    """Whether ``POST /v1/check`` allows ``subject`` ``action`` on ``resource`` in ``workspace``."""
    with server.client() as anonymous:
        response = post_check(anonymous, subject, workspace, resource, action)
    return response.json()["allowed"]  # type: ignore[no-any-return]


def assert_problem(
    response: httpx.Response, status: int, type_: str, detail: str | None = None
) -> dict[str, Any]:
    """The response is a problem document of ``status`` and ``type_``; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == PROBLEM + type_, problem
    assert problem["status"] == status
    assert isinstance(problem["title"], str) and problem["title"]
    if detail is not None:
        assert detail.lower() in problem["detail"].lower(), problem
    return problem  # type: ignore[no-any-return]


# -- OAuth clients of services ------------------------------------------------------------


def create_client(settings: Settings, *scopes: str, name: str = "test service") -> tuple[str, str]:
    """A new OAuth client made with the real ``ringfence client create``: (id, secret)."""
    args = [arg for scope in scopes for arg in ("--scope", scope)]
    result = run_cli(settings, "client", "create", "--name", name, *args)
    assert result.exit_code == 0, (result.output, result.exception)
    client_id = re.search(r"client_id:\s+(\S+)", result.output)
    secret = re.search(r"client_secret:\s+(\S+)", result.output)
    assert client_id and secret, result.output
    return client_id.group(1), secret.group(1)


def client_token(server: LiveServer, client_id: str, secret: str, scope: str | None = None) -> str:
    """An access token from ``POST /oauth/token`` (client credentials, HTTP Basic)."""
    with server.client() as anonymous:
        response = anonymous.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", **({"scope": scope} if scope else {})},
            auth=(client_id, secret),
        )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]  # type: ignore[no-any-return]


_DECISION_TOKENS: dict[tuple[str, str], str] = {}


def decision_client(server: LiveServer) -> httpx.Client:
    """A client of ``server`` that sends :func:`decision_headers` with every request."""
    return httpx.Client(base_url=server.url, headers=decision_headers(server), timeout=30)


def decision_headers(server: LiveServer) -> dict[str, str]:
    """``{"Authorization": "Bearer ..."}`` for a client with ``decisions:check``, made once
    per server (keyed by URL and instance folder: ports are reused between tests)."""
    key = (server.url, str(server.settings.instance_dir))
    if key not in _DECISION_TOKENS:
        client_id, secret = create_client(server.settings, "decisions:check", name="decisions")
        _DECISION_TOKENS[key] = client_token(server, client_id, secret)
    return {"Authorization": f"Bearer {_DECISION_TOKENS[key]}"}


def sign_token(server: LiveServer, claims: dict[str, Any], audience: str, ttl: int) -> str:
    """A token signed with the server's current signing key, claims as given (setup for
    refusal tests: an expired token cannot be had by waiting)."""
    from gateway.identity.signing import KeyRing

    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with Session(db) as session:
            return KeyRing(session, server.settings).sign(claims, audience, ttl)
    finally:
        db.dispose()
