"""A fault-injecting TCP proxy on loopback, for partition tests between real node processes.

Each proxy forwards one listening port to one upstream address. ``cut()`` turns it into a black hole
(bytes in both directions are read and dropped, as when a network partition swallows packets, so the
ends only notice through their own timeouts); ``heal()`` closes the black-holed connections and
forwards again. Works with plain threads and under gevent monkey-patching.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class FaultyProxy:
    """127.0.0.1:<port> → ``upstream``, with a switch for a partition."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._connections: list[tuple[socket.socket, socket.socket | None]] = []
        self._cut = False
        self._closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cut(self) -> None:
        """Drop everything from now on, in both directions, without closing anything."""
        with self._lock:
            self._cut = True

    def heal(self) -> None:
        """Close the connections that lived through the cut and forward new ones again."""
        with self._lock:
            self._cut = False
            doomed, self._connections = self._connections, []
        for client, upstream in doomed:
            _close(client)
            if upstream is not None:
                _close(upstream)

    def close(self) -> None:
        self._closed = True
        _close(self._listener)
        self.heal()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        if not self._cut:
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                return
        with self._lock:
            self._connections.append((client, upstream))
        threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
        if upstream is not None:
            self._pump(upstream, client)

    def _pump(self, source: socket.socket, target: socket.socket | None) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            if self._cut or target is None:
                continue  # the black hole swallows it
            try:
                target.sendall(data)
            except OSError:
                break
        _close(source)
        if target is not None and not self._cut:
            _close(target)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
