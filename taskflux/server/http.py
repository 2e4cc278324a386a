"""The HTTP listener: gevent's WSGI server running the node's Bottle application (REST, health, metrics)."""

from __future__ import annotations

import _socket
import logging
import os
import socket
from typing import Any

from gevent.pool import Pool
from gevent.pywsgi import LoggingLogAdapter, WSGIHandler, WSGIServer

from taskflux.config import format_endpoint

logger = logging.getLogger("taskflux.http")

MAX_HTTP_CONNECTIONS = 1024
IDLE_TIMEOUT_SECONDS = 60.0  # a connection that sends nothing (no request line, no body) for this long is closed


SOCKET_KEY = "taskflux.socket"  # the WSGI environ's entry for the client's socket


class _Handler(WSGIHandler):  # type: ignore[misc]
    """Hands the application the client's socket, to ask whether the client is still there."""

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        environ[SOCKET_KEY] = self.socket
        return environ


def client_gone(environ: dict[str, Any]) -> bool:
    """Whether the client of this request closed its connection (without reading or waiting: a peek at
    the socket through a duplicate of its descriptor, so that gevent's socket does not wait)."""
    sock = environ.get(SOCKET_KEY)
    if sock is None:
        return False
    try:
        probe = _socket.socket(fileno=os.dup(sock.fileno()))
    except OSError:
        return True
    try:
        return probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False  # nothing to read: still connected
    except OSError:
        return True
    finally:
        probe.close()


class _TunedWSGIServer(WSGIServer):
    """Every connection gets TCP_NODELAY and an idle timeout, every request its socket in the environ.

    Without TCP_NODELAY a response written in two parts waits for the client's delayed ACK (40 ms on Linux)
    whenever the client, too, sends its request in two parts. Without a timeout, connections that never
    send a request would hold the pool's places for ever (a long-polling dequeue is not affected: it waits
    on the node, not on the socket).
    """

    handler_class = _Handler

    def handle(self, sock: socket.socket, address: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(IDLE_TIMEOUT_SECONDS)
        super().handle(sock, address)


class HttpServer:
    """Serves a WSGI application on ``address``; one greenlet per connection, keep-alive, no access log
    (one line per request would drown the significant events)."""

    def __init__(self, app: Any, address: tuple[str, int], max_connections: int = MAX_HTTP_CONNECTIONS) -> None:
        self._pool = Pool(max_connections)
        # What the WSGI server itself reports is a client's doing (a malformed request, a dropped
        # connection): INFO, like the binary protocol's protocol errors.
        self._server = _TunedWSGIServer(address, app, spawn=self._pool, log=None,
                                        error_log=LoggingLogAdapter(logger, logging.INFO))

    def connections(self) -> int:
        """Open client connections (keep-alive ones included)."""
        return len(self._pool)

    @property
    def address(self) -> str:
        return format_endpoint(self._server.server_host, self._server.server_port)

    def start(self) -> None:
        self._server.start()

    def stop_accepting(self) -> None:
        self._server.close()

    def stop(self, timeout: float) -> None:
        """Let requests in progress finish for up to ``timeout`` seconds, then close every connection."""
        self._server.stop(timeout=timeout)
