"""Where event streams deliver: signed webhooks, syslog over TCP+TLS, JSON Lines files.

Sampled decision events (a stream's ``decision_sample``) travel the same ways as
CloudEvents of type ``com.ringfence.decision.allow`` / ``.deny``, ids ``decision-<n>``.

Each audit event travels as a CloudEvents 1.0 JSON event (structured mode) whose
``data`` is the audit record, hash and previous hash included, so a receiver can check
the chain; ``auditid``, ``audithash`` and ``auditprevhash`` repeat them as extension
attributes. Webhooks are signed per Standard Webhooks (``webhook-id``,
``webhook-timestamp``, ``webhook-signature`` with one ``v1`` signature per valid secret).

Destinations are chosen by admins, so a connection goes only where it may: the name is
resolved once per delivery, every address it resolves to must be public (unless the
installation allows private ones), and the connection goes to that pinned address (no
second lookup for DNS rebinding to answer differently); TLS still checks the name.
Redirects are not followed, every connect and read has a timeout, and a webhook's answer
is read up to a bound.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from standardwebhooks.webhooks import Webhook

from gateway.notifier import AUDIT, DECISIONS, StreamBatch, address_problem
from mailer.tls import tls_context

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/cloudevents+json"
MAX_ANSWER = 64 * 1024  # bytes of a webhook's answer read at most
# RFC 5424: facility 13 (log audit), severity 6 (informational).
SYSLOG_PRI = 13 * 8 + 6
# An SD-ID needs an enterprise number; 32473 is the one RFC 5612 reserves for examples.
SD_ID = "ringfence@32473"


class StreamError(Exception):
    """A delivery failed; the stream retries after a back-off, then pauses."""


def cloud_event(source: str, event: dict[str, Any], lane: str = AUDIT) -> dict[str, Any]:
    """The CloudEvents 1.0 event of audit record ``event`` (or of a sampled decision
    event, ``lane`` DECISIONS)."""
    if lane == DECISIONS:
        return decision_cloud_event(source, event)
    return {
        "specversion": SPEC_VERSION,
        "id": str(event["id"]),
        "source": source,
        "type": f"com.ringfence.audit.{event['action']}",
        "time": event["at"],
        "subject": f"{event['target_type']}/{event['target_id'] or ''}",
        "datacontenttype": "application/json",
        "auditid": event["id"],
        "audithash": event["hash"],
        "auditprevhash": event["prev_hash"],
        "data": event,
    }


def decision_cloud_event(source: str, event: dict[str, Any]) -> dict[str, Any]:
    """The CloudEvents 1.0 event of a sampled decision: not an audit event (no chain),
    its id ``decision-<n>`` in the decision events' own sequence."""
    return {
        "specversion": SPEC_VERSION,
        "id": f"decision-{event['id']}",
        "source": source,
        "type": f"com.ringfence.decision.{event['decision']}",
        "time": event["at"],
        "subject": f"subject/{event['subject']}",
        "datacontenttype": "application/json",
        "decisionid": event["id"],
        "workspace": event["workspace"],
        "data": event,
    }


def message_id(batch: StreamBatch, event: dict[str, Any]) -> str:
    """The Standard Webhooks ``webhook-id`` of one event: the same at every retry."""
    if batch.lane == DECISIONS:
        return f"ringfence-{batch.stream_id}-decision-{event['id']}"
    return f"ringfence-{batch.stream_id}-{event['id']}"


def encoded(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


# -- reaching a destination ------------------------------------------------------------


def pinned_address(host: str, port: int, allow_private: bool) -> str:
    """The one address this delivery connects to: ``host`` resolved once, refused when
    any of its addresses is not public (unless ``allow_private``)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise StreamError(f"'{host}' does not resolve: {exc}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise StreamError(f"'{host}' does not resolve")
    if not allow_private:
        for address in addresses:
            problem = address_problem(address)
            if problem:
                raise StreamError(f"Refused: '{host}' resolves to {problem}")
    return addresses[0]


def connect(host: str, port: int, batch: StreamBatch, address: str) -> ssl.SSLSocket:
    """A TLS connection to ``address`` (``host`` resolved and checked once, by
    :func:`pinned_address`), its certificate checked for ``host``."""
    try:
        raw = socket.create_connection((address, port), timeout=batch.timeout)
        # http.client writes a request's headers and body apart: without this, Nagle's
        # algorithm holds the body until the receiver's delayed ACK (~40 ms a request).
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        raise StreamError(f"Cannot connect to {host}:{port} ({address}): {exc}") from exc
    try:
        return tls_context(batch.ca_file).wrap_socket(raw, server_hostname=host)
    except (OSError, ssl.SSLError) as exc:
        raw.close()
        raise StreamError(f"TLS with {host}:{port} failed: {exc}") from exc


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection that uses the socket made by :func:`connect`."""

    def __init__(self, host: str, port: int, batch: StreamBatch) -> None:
        super().__init__(host, port, timeout=batch.timeout)
        self._batch = batch
        # Once per delivery: a reconnection goes to the same address.
        self._address = pinned_address(host, port, batch.allow_private)

    def connect(self) -> None:
        self.sock = connect(self.host, self.port, self._batch, self._address)


# -- destinations ----------------------------------------------------------------------

Delivered = Callable[[int], None]  # called with each audit id once it is delivered


def deliver(batch: StreamBatch, delivered: Delivered) -> None:
    """Send the batch's events in order, calling ``delivered`` after each; StreamError
    (or an OSError) at the first that fails. No event is started once two timeouts have
    passed (the rest wait for the next claim), so a delivery ends within its claim's
    lease (gateway.services.streams.lease)."""
    send = {"webhook": _webhook, "syslog": _syslog, "file": _file}.get(batch.kind)
    if send is None:
        raise StreamError(f"Unknown kind of stream '{batch.kind}'")
    send(batch, delivered)


def _in_time(batch: StreamBatch) -> Iterator[dict[str, Any]]:
    """The batch's events, until two timeouts have passed since the first."""
    start = time.monotonic()
    for event in batch.events:
        if time.monotonic() - start > 2 * batch.timeout:
            return
        yield event


def _webhook(batch: StreamBatch, delivered: Delivered) -> None:
    if not batch.secrets:
        raise StreamError("The webhook has no signing secret")
    url = urlsplit(batch.target)
    if url.scheme != "https" or not url.hostname:
        raise StreamError("A webhook needs an https:// URL")
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    signers = [Webhook(secret) for secret in batch.secrets]
    connection = PinnedHTTPSConnection(url.hostname, url.port or 443, batch)
    try:
        for event in _in_time(batch):
            body = encoded(cloud_event(batch.source, event, batch.lane))
            webhook_id = message_id(batch, event)
            now = datetime.now(UTC)
            signature = " ".join(signer.sign(webhook_id, now, body) for signer in signers)
            headers = {
                "Content-Type": CONTENT_TYPE,
                "User-Agent": "Ringfence-EventStreams/1",
                "webhook-id": webhook_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": signature,
            }
            try:
                connection.request("POST", path, body=body, headers=headers)
                answer = connection.getresponse()
                reply = answer.read(MAX_ANSWER)
                if not answer.isclosed() and answer.length:
                    connection.close()  # more than we read: not reusable
            except (OSError, http.client.HTTPException) as exc:
                if isinstance(exc, StreamError):
                    raise
                raise StreamError(f"POST to {url.hostname}: {type(exc).__name__}: {exc}") from exc
            if 300 <= answer.status < 400:
                raise StreamError(
                    f"{url.hostname} answered {answer.status}: redirects are not followed"
                )
            if not 200 <= answer.status < 300:
                text = reply[:200].decode("utf-8", "replace")
                raise StreamError(f"{url.hostname} answered {answer.status}: {text}")
            delivered(int(event["id"]))
    finally:
        connection.close()


def syslog_line(batch: StreamBatch, event: dict[str, Any]) -> bytes:
    """One RFC 5424 message (the CloudEvent as its MSG) with RFC 5425 octet counting."""
    host = (urlsplit(batch.source).hostname or "ringfence")[:255]
    if batch.lane == DECISIONS:
        kind = f"decision.{event['decision']}"
        fields: tuple[tuple[str, Any], ...] = (
            ("decisionId", event["id"]),
            ("workspace", event["workspace"]),
        )
    else:
        kind = str(event["action"])
        fields = (
            ("auditId", event["id"]),
            ("hash", event["hash"]),
            ("prevHash", event["prev_hash"]),
        )
    action = "".join(c for c in kind if 33 <= ord(c) <= 126)[:32] or "-"
    params = " ".join(f'{name}="{_sd_escape(str(value))}"' for name, value in fields)
    header = f"<{SYSLOG_PRI}>1 {event['at']} {host} ringfence - {action} [{SD_ID} {params}] "
    message = header.encode() + encoded(cloud_event(batch.source, event, batch.lane))
    return f"{len(message)} ".encode() + message


def _sd_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _syslog(batch: StreamBatch, delivered: Delivered) -> None:
    host, _, port = batch.target.rpartition(":")
    host = host.strip("[]")
    address = pinned_address(host, int(port), batch.allow_private)
    with _closing(connect(host, int(port), batch, address)) as tls:
        for event in _in_time(batch):
            try:
                tls.sendall(syslog_line(batch, event))
            except OSError as exc:
                raise StreamError(f"syslog {batch.target}: {exc}") from exc
            delivered(int(event["id"]))


@contextmanager
def _closing(sock: ssl.SSLSocket) -> Iterator[ssl.SSLSocket]:
    try:
        yield sock
        with suppress(OSError, ValueError):
            sock.unwrap()  # close_notify: the receiver reads to the end, nothing is cut
    finally:
        sock.close()


def _file(batch: StreamBatch, delivered: Delivered) -> None:
    folder = Path(batch.file_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / batch.target
    lines = b"".join(
        encoded(cloud_event(batch.source, event, batch.lane)) + b"\n" for event in batch.events
    )
    try:
        with open(path, "ab") as out:
            out.write(lines)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise StreamError(f"Cannot write {path}: {exc}") from exc
    for event in batch.events:
        delivered(int(event["id"]))
