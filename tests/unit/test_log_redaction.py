"""Secrets in URLs (invitation and reset tokens, SSO codes) never reach the request logs."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from gateway.web.accept_page import install_log_redaction


@pytest.fixture
def logged() -> Iterator[tuple[io.StringIO, logging.Logger, logging.Logger]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    install_log_redaction()
    loggers = logging.getLogger("gunicorn.access"), logging.getLogger("werkzeug")
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield stream, *loggers
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_gunicorns_access_log_is_formatted_and_redacted(
    logged: tuple[io.StringIO, logging.Logger, logging.Logger],
) -> None:
    stream, access, _ = logged
    # As gunicorn's glogging.Logger.access logs: its format and one mapping of atoms.
    atoms = {"h": "127.0.0.1", "r": "GET /invite/s3cr3t-t0ken HTTP/1.1", "s": "200", "B": 29}
    access.info('%(h)s "%(r)s" %(s)s %(B)s', atoms)
    access.info('"%(r)s"', {"r": "GET /auth/sso/callback?state=x&code=c0de HTTP/1.1"})
    assert stream.getvalue().splitlines() == [
        '127.0.0.1 "GET /invite/[redacted] HTTP/1.1" 200 29',
        '"GET /auth/sso/callback?state=x&code=[redacted] HTTP/1.1"',
    ]


def test_werkzeugs_request_log_is_redacted(
    logged: tuple[io.StringIO, logging.Logger, logging.Logger],
) -> None:
    stream, _, werkzeug = logged
    werkzeug.info('%s - - "%s" %s -', "127.0.0.1", "POST /reset/r3set-t0ken HTTP/1.1", "200")
    assert stream.getvalue() == '127.0.0.1 - - "POST /reset/[redacted] HTTP/1.1" 200 -\n'
