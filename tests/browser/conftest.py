"""Fixtures for browser tests: the system's Chromium driven by Playwright (never a
downloaded browser), and a live gateway whose public URL is its real address and whose
mail goes to a real SMTP server on loopback, so emailed links can be opened as they are."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from gateway.config import Settings
from tests.helpers import LiveServer
from tests.smtp_support import Mailbox, free_port, running_smtp

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("no system Chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    # SQLite only: the console's PostgreSQL behaviour is covered by the functional tests.
    return f"sqlite:///{tmp_path / 'ringfence.db'}"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    with running_smtp(box) as port:
        yield box, port


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def settings(settings: Settings, mailbox: tuple[Mailbox, int], port: int) -> Settings:
    return replace(
        settings,
        public_url=f"http://127.0.0.1:{port}",
        smtp_host="127.0.0.1",
        smtp_port=mailbox[1],
        smtp_security="none",
        mail_from="Ringfence <ringfence@example.com>",
    )


@pytest.fixture
def server(app: Flask, settings: Settings, admin_password: str, port: int) -> Iterator[LiveServer]:
    """The gateway on the port its public URL names."""
    httpd = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield LiveServer(settings.public_url, app, settings, admin_password)
    finally:
        httpd.shutdown()
        thread.join(timeout=5)


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
