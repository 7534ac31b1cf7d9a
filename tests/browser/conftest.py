"""Fixtures for browser tests: the system's Chromium driven by Playwright (never a
downloaded browser), and a live gateway whose public URL is its real address and whose
mail goes to a real SMTP server on loopback, so emailed links can be opened as they are."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from gateway.config import Settings
from tests.helpers import LiveServer, serving
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


# Per module, not per session: Playwright's sync API keeps an asyncio loop running in
# the main thread while it is open, and the tests a worker runs after the browser tests
# (asyncio.run in the SDK's) cannot start one of their own. A launch is about a second.
@pytest.fixture(scope="module")
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


@pytest.fixture(scope="session")
def axe() -> str:
    """axe-core's script (tests/browser/a11y.py), as ``make`` installed it."""
    from tests.browser.a11y import AXE

    if not AXE.exists():
        pytest.skip("no axe-core (make installs it: npm ci --prefix tests/browser)")
    return AXE.read_text()


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
    with serving(app, port):
        yield LiveServer(settings.public_url, app, settings, admin_password)


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
