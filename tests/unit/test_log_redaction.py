"""Secrets in URLs (invitation and reset tokens, SSO codes) never reach the request logs."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from gateway.cli.server import ACCESS_LOG_FORMAT
from gateway.web.accept_page import install_log_redaction


@pytest.fixture
def logged() -> Iterator[tuple[io.StringIO, logging.Logger, logging.Logger]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    install_log_redaction()
    loggers = logging.getLogger("granian.access"), logging.getLogger("werkzeug")
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield stream, *loggers
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_the_servers_access_log_is_formatted_and_redacted(
    logged: tuple[io.StringIO, logging.Logger, logging.Logger],
) -> None:
    stream, access, _ = logged
    # As granian logs a request: ringfence serve's format and one mapping of atoms.
    atoms = {"addr": "127.0.0.1", "method": "GET", "path": "/invite/s3cr3t-t0ken"}
    atoms |= {"protocol": "HTTP/1.1", "status": 200, "dt_ms": 1.25}
    access.info(ACCESS_LOG_FORMAT, atoms)
    access.info('"%(path)s"', {"path": "/auth/sso/callback?state=x&code=c0de"})
    assert stream.getvalue().splitlines() == [
        '127.0.0.1 - "GET /invite/[redacted] HTTP/1.1" 200 1.2ms',
        '"/auth/sso/callback?state=x&code=[redacted]"',
    ]


def test_werkzeugs_request_log_is_redacted(
    logged: tuple[io.StringIO, logging.Logger, logging.Logger],
) -> None:
    stream, _, werkzeug = logged
    werkzeug.info('%s - - "%s" %s -', "127.0.0.1", "POST /reset/r3set-t0ken HTTP/1.1", "200")
    assert stream.getvalue() == '127.0.0.1 - - "POST /reset/[redacted] HTTP/1.1" 200 -\n'
