"""A small TCP proxy that a test controls: put it between a process and a server
(PostgreSQL, Redis) and :meth:`TcpProxy.cut` the link as a network failure would
(every open connection is reset and new ones are closed at once), then
:meth:`TcpProxy.restore` it; or :meth:`TcpProxy.pause` it, as a stalled link looks
(nothing is refused, nothing arrives: bytes and new connections wait), then
:meth:`TcpProxy.resume` it. Threads, no dependencies."""

from __future__ import annotations

import contextlib
import select
import socket
import threading


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        self._flowing = threading.Event()
        self._flowing.set()
        self.accepted = 0
        threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True).start()

    @property
    def is_cut(self) -> bool:
        return self._cut

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until :meth:`restore`."""
        with self._lock:
            self._cut = True
            sockets, self._open = self._open, set()
        for sock in sockets:
            _reset(sock)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def pause(self) -> None:
        """Stop forwarding, resetting nothing: bytes sent either way wait in the
        proxy's socket buffers, and new connections are accepted but go nowhere."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        self.cut()
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._flowing.wait()  # paused: the client is connected, to nothing yet
        with self._lock:
            refuse = self._cut
        if refuse:
            _reset(client)
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(client)
            return
        upstream.settimeout(None)
        with self._lock:
            if self._cut:
                _reset(client)
                _reset(upstream)
                return
            self._open |= {client, upstream}
            self.accepted += 1
        self._pump(client, upstream)

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while True:
                # Paused: nothing is read, so senders fill the buffers and then wait.
                while not self._flowing.wait(0.2):
                    if self._cut and a not in self._open:
                        return
                readable, _, _ = select.select([a, b], [], [], 0.2)
                if self._cut and a not in self._open:
                    break
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            with self._lock:
                self._open.discard(a)
                self._open.discard(b)
            _reset(a)
            _reset(b)


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a dropped link looks to both ends."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    with contextlib.suppress(OSError):
        sock.close()
