"""The TLS client context every outbound connection of the mailer uses: SMTP (STARTTLS
or implicit TLS) and the event streams' webhooks and syslog."""

from __future__ import annotations

import ssl
from functools import cache


@cache
def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """The system's trust, and ``ca_file``'s, made once per process: loading the system's
    store takes ~0.1 s, longer than a delivery. A context is safe to share between
    connections and threads once made; nothing here changes it afterwards."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context
