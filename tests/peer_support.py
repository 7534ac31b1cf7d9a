"""TCP services on loopback that are not SMTP servers (an SSH daemon's banner, an HTTP
server's answer, an FTP server that greets with 220, one that says nothing), for tests
of what the test email shows of a peer."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SSH_BANNER = b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13.5 internal-bastion\r\n"
HTTP_ANSWER = (
    b"HTTP/1.1 400 Bad Request\r\nServer: internal-admin/4.2\r\n"
    b"Content-Length: 22\r\n\r\nX-Internal-Token: abc1\r\n"
)
# An FTP server greets like an SMTP server, then refuses EHLO and HELO.
FTP_GREETING = b"220 files.internal ProFTPD ready\r\n"
FTP_ANSWER = b"500 Unknown command\r\n"


class TcpPeer:
    """Sends ``banner`` to each client that connects and ``answer`` to whatever it
    receives; keeps what it received. Safe to read from another thread once closed."""

    def __init__(self, banner: bytes = b"", answer: bytes = b"") -> None:
        self.banner, self.answer = banner, answer
        self.received = bytearray()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(15)
            try:
                if self.banner:
                    conn.sendall(self.banner)
                while data := conn.recv(4096):
                    with self._lock:
                        self.received += data
                    if self.answer:
                        conn.sendall(self.answer)
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()


@contextmanager
def tcp_peer(banner: bytes = b"", answer: bytes = b"") -> Iterator[TcpPeer]:
    """A :class:`TcpPeer` while the block runs."""
    peer = TcpPeer(banner, answer)
    try:
        yield peer
    finally:
        peer.close()


@contextmanager
def refused_port() -> Iterator[int]:
    """A port bound but not listening: connections are refused, and nobody else can take
    the port while the block runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])
