"""The floor of ``make bench-http``: a WSGI app that reads the request and answers a
constant decision, nothing else. Served by a server with the settings Ringfence gets
from it, its requests per second are the most that server gives any Python app on this
machine: what a Ringfence endpoint reaches is measured against it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

ANSWER = b'{"allowed":true,"reason":"allowed by policy","revision":1}\n'
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(ANSWER)))]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    start_response("200 OK", HEADERS)
    return [ANSWER]
