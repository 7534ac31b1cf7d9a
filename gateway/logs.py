"""Log format (``RINGFENCE_LOG_FORMAT``: ``text`` or ``json``) and the request id on
every log record.

The request id is the one :func:`request_id` gives a request (the client's
``X-Request-ID`` or a new one); it is defined here, below the HTTP layer, so that the
mail worker can use this module without importing the web code.
:class:`gateway.notifier` implementations pass it to the mail tasks as a Celery header
(:data:`REQUEST_ID_HEADER`), so a worker's lines about an email carry the id of the
request that queued it.
"""

from __future__ import annotations

import json
import logging
import random
from datetime import UTC, datetime
from typing import Any

from flask import g, has_request_context, request

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMATS = ("text", "json")
REQUEST_ID_HEADER = "ringfence_request_id"


def request_id() -> str:
    """The id of the Flask request being answered (kept on ``g`` once chosen)."""
    if "request_id" not in g:
        g.request_id = request_id_from(request.headers.get("X-Request-ID", ""))
    return str(g.request_id)


def request_id_from(incoming: str) -> str:
    """The caller's ``X-Request-ID`` (printable, at most 100 characters), else a new one."""
    if incoming and incoming.isprintable():
        return incoming[:100]
    # Unique, not secret: the random module's generator (reseeded in every forked
    # worker) took 1.6 µs here, where uuid4, which reads the kernel's random source each
    # time, took 21 µs of every single check.
    return f"{random.getrandbits(128):032x}"


def _task_request_id(task: Any) -> str | None:
    request = task.request
    # A worker puts custom message headers on the request; an eager run keeps them in
    # request.headers.
    found = getattr(request, REQUEST_ID_HEADER, None)
    if found is None:
        found = (getattr(request, "headers", None) or {}).get(REQUEST_ID_HEADER)
    return str(found) if found else None


def current_request_id() -> str | None:
    """Inside a Celery task, the id of the request that queued it (its header; None if
    it came with none), even when the task runs eagerly within that request; else the
    id of the Flask request being answered; else None."""
    from celery._state import get_current_task

    task = get_current_task()
    if task is not None:
        return _task_request_id(task)
    if has_request_context():
        return request_id()
    return None


class RequestIdFilter(logging.Filter):
    """Puts ``request_id`` on every record a handler emits (None outside requests/tasks)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def use_format(logger: logging.Logger, log_format: str) -> None:
    """With ``json``, every handler of ``logger`` writes JSON lines with the request id."""
    if log_format != "json":
        return
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter())
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())


def configure_logging(level: str, log_format: str) -> None:
    """The process's logging: a stderr handler on the root logger unless one is set up
    already (a test runner's, say), in ``log_format``."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"RINGFENCE_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}")
    logging.basicConfig(level=level, format=TEXT_FORMAT)
    use_format(logging.getLogger(), log_format)
