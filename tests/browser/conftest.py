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


# One Chromium (and Playwright driver) for the browser tests a worker runs one after
# another, closed after the last of them: Playwright's sync API keeps an asyncio loop
# running in the main thread while it is open, and the tests a worker runs after the
# browser tests (asyncio.run in the SDK's) cannot start one of their own. A launch with
# its driver is 0.75 s of CPU; the suite's ordering (HEAVY_TESTS) gives each worker its
# browser tests in a row, so a run launches one per worker, where one per file made 14.
# Each test still has browser contexts of its own (cookies, storage, pages), as before.
_OPEN: list[tuple[Any, Any]] = []  # (Playwright, Browser) while one is open


@pytest.fixture
def chromium() -> Any:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("no system Chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    if not _OPEN:
        playwright = sync_api.sync_playwright().start()
        try:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except BaseException:
            playwright.stop()
            raise
        _OPEN.append((playwright, browser))
    return _OPEN[0][1]


def _close_chromium() -> None:
    if _OPEN:
        playwright, browser = _OPEN.pop()
        try:
            browser.close()
        finally:
            playwright.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """After a browser test's own teardown: Chromium closes unless the next test of this
    worker is a browser test too (this conftest's hooks see only the tests below it)."""
    try:
        return (yield)
    finally:
        if nextitem is None or "chromium" not in getattr(nextitem, "fixturenames", ()):
            _close_chromium()


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
