"""Receivers of event streams for the tests, on loopback, with TLS: a webhook endpoint
that verifies each request with the ``standardwebhooks`` library itself, and an RFC 5425
syslog listener. Their certificate is made at test time (``cryptography``) for
``localhost`` and 127.0.0.1; the gateway trusts it through ``RINGFENCE_STREAM_CA_FILE``."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class TlsFiles:
    cert: Path  # also the CA file: self-signed
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_tls_files(folder: Path) -> TlsFiles:
    """A self-signed certificate for localhost and 127.0.0.1 (a P-256 key: quick)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(folder / "receiver.pem", folder / "receiver.key")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


@dataclass
class WebhookReceiver:
    """What the receiver saw. ``secrets``: the signing secrets it accepts (a request
    verified by none is answered 401 and not kept); ``answers``: statuses to give the
    next requests, then 200."""

    url: str = ""
    secrets: list[str] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    verified_by: list[list[int]] = field(default_factory=list)  # indexes of secrets
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ids(self) -> list[int]:
        with self.lock:
            return [event["auditid"] for event in self.events]

    def handle(self, body: bytes, headers: dict[str, str]) -> int:
        with self.lock:
            if self.answers:
                return self.answers.pop(0)
            verified = []
            for index, secret in enumerate(self.secrets):
                try:
                    Webhook(secret).verify(body, headers)
                except WebhookVerificationError:
                    continue
                verified.append(index)
            if not verified:
                self.refused += 1
                return 401
            self.events.append(json.loads(body))
            self.headers.append(headers)
            self.verified_by.append(verified)
            return 204


@contextmanager
def webhook_receiver(tls: TlsFiles) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real endpoint

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = receiver.handle(body, {k: v for k, v in self.headers.items()})
            self.send_response(status)
            if status in (301, 302, 307, 308):
                self.send_header("Location", "https://127.0.0.1:1/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.socket = tls.server_context().wrap_socket(httpd.socket, server_side=True)
    receiver.url = f"https://localhost:{httpd.server_address[1]}/hooks/ringfence"
    thread = threading.Thread(target=lambda: httpd.serve_forever(poll_interval=0.02))
    thread.daemon = True
    thread.start()
    try:
        yield receiver
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@dataclass
class SyslogReceiver:
    """RFC 5425 frames (``LEN SP MSG``) received over TLS, as text, in arrival order."""

    address: str = ""
    messages: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self) -> list[str]:
        with self.lock:
            return list(self.messages)


@contextmanager
def syslog_receiver(tls: TlsFiles) -> Iterator[SyslogReceiver]:
    receiver = SyslogReceiver()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    receiver.address = f"localhost:{listener.getsockname()[1]}"
    context = tls.server_context()
    stop = threading.Event()

    def read_frames(conn: ssl.SSLSocket) -> None:
        buffer = b""
        with conn:
            while True:
                try:
                    chunk = conn.recv(65536)
                except (OSError, ssl.SSLError):
                    return
                if not chunk:
                    return
                buffer += chunk
                while b" " in buffer:
                    length, _, rest = buffer.partition(b" ")
                    if len(rest) < int(length):
                        break
                    with receiver.lock:
                        receiver.messages.append(rest[: int(length)].decode())
                    buffer = rest[int(length) :]

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            raw.settimeout(5)
            try:
                conn = context.wrap_socket(raw, server_side=True)
            except (OSError, ssl.SSLError):
                raw.close()
                continue
            threading.Thread(target=read_frames, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
