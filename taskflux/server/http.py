"""The HTTP listener: gevent's WSGI server running the node's Bottle application (REST, health, metrics).

Its connections are places in a ``ConnectionTable``: a client owes the server its first request within
``FIRST_REQUEST_SECONDS`` of connecting, the next one within ``IDLE_TIMEOUT_SECONDS`` of an answer, a request
body within ``BODY_SECONDS``; at ``max_connections`` a new connection takes the place of the one that waited
longest for its client (one that never sent a request first), and is refused with a 503 only when every
connection is being served. Silent, slow or half-open connections therefore cannot lock real clients out.
"""

from __future__ import annotations

import _socket
import contextlib
import functools
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

from gevent.pool import Pool
from gevent.pywsgi import WSGIHandler, WSGIServer

from taskflux.config import format_endpoint
from taskflux.server.connections import Connection, ConnectionTable, ThrottledLog, shut_down

logger = logging.getLogger("taskflux.http")

MAX_HTTP_CONNECTIONS = 1024
FIRST_REQUEST_SECONDS = 10.0  # a new connection's first request (line and headers) must arrive within this
IDLE_TIMEOUT_SECONDS = 60.0  # the next request on a keep-alive connection, and any single socket operation
BODY_SECONDS = 30.0  # a request body must arrive within this once the headers are in
_BUSY = b'{"error": {"reason": "busy", "message": "every connection is being served; retry shortly"}}'
REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n"
           b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY), _BUSY))

SOCKET_KEY = "taskflux.socket"  # the WSGI environ's entry for the client's socket
CONNECTION_KEY = "taskflux.connection"  # and for its place in the connection table


class _Handler(WSGIHandler):  # type: ignore[misc]
    """Keeps the connection's place up to date (waiting for a request, or being served) and hands the
    application the client's socket, to ask whether the client is still there."""

    connection: Connection

    def read_requestline(self) -> str:
        if self.connection.requests == 0:
            self.connection.wait_for_client(FIRST_REQUEST_SECONDS, "first request")
        else:
            self.connection.wait_for_client(IDLE_TIMEOUT_SECONDS, "next request")
        line: str = super().read_requestline()
        return line

    def read_request(self, raw_requestline: str) -> bool:
        complete: bool = super().read_request(raw_requestline)  # the headers are in once it returns
        self.connection.requests += 1
        self.connection.serving()
        return complete

    def run_application(self) -> None:
        super().run_application()
        body = self.wsgi_input
        if body is not None and (body.position < (body.content_length or 0)
                                 or (body.chunked_input and body.chunk_length != 0)):
            # The application answered without reading the whole body (it refused it as too large, or the
            # route takes none): close the connection instead of reading the rest to discard it, which
            # could be gigabytes, or never end.
            self.close_connection = True
            body.content_length, body.chunked_input = body.position, False

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        environ[SOCKET_KEY] = self.socket
        environ[CONNECTION_KEY] = self.connection
        return environ


@contextlib.contextmanager
def reading_body(environ: dict[str, Any]) -> Iterator[None]:
    """While the application reads the request body, the client owes it: ``BODY_SECONDS`` at most."""
    connection: Connection | None = environ.get(CONNECTION_KEY)
    if connection is None:
        yield
        return
    connection.wait_for_client(BODY_SECONDS, "request body")
    try:
        yield
    finally:
        connection.serving()


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


class _ClientErrorLog:
    """The WSGI server's error log (it writes lines to a file-like object): one log line per interval."""

    def __init__(self) -> None:
        self._log = ThrottledLog(logger, logging.INFO)

    def write(self, message: str) -> None:
        self._log("%s", message.rstrip())

    def flush(self) -> None:
        pass


class _TunedWSGIServer(WSGIServer):
    """Every connection gets a place in the table (or a 503), TCP_NODELAY and a timeout per socket operation.

    Without TCP_NODELAY a response written in two parts waits for the client's delayed ACK (40 ms on Linux)
    whenever the client, too, sends its request in two parts. The table's deadlines apply only while the
    server waits for the client: a long-polling dequeue waits on the node and is not affected.
    """

    handler_class = _Handler

    def __init__(self, *args: Any, table: ConnectionTable, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.table = table

    def handle(self, sock: socket.socket, address: Any) -> None:
        connection = self.table.admit(format_endpoint(address[0], address[1]), functools.partial(shut_down, sock))
        if connection is None:
            with contextlib.suppress(OSError):
                sock.send(REFUSED, socket.MSG_DONTWAIT)
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(IDLE_TIMEOUT_SECONDS)
            handler = self.handler_class(sock, address, self)
            handler.connection = connection
            handler.handle()
        except OSError:
            pass  # the client is gone, or its connection was closed here (deadline, eviction)
        finally:
            self.table.remove(connection)


class HttpServer:
    """Serves a WSGI application on ``address``; one greenlet per connection, keep-alive, no access log
    (one line per request would drown the significant events)."""

    def __init__(self, app: Any, address: tuple[str, int], max_connections: int = MAX_HTTP_CONNECTIONS) -> None:
        # The table bounds the connections; the pool only keeps their greenlets (a refused connection's
        # greenlet ends at once, an evicted one's as soon as it sees its socket shut down).
        self._pool = Pool()
        self.table = ConnectionTable(max_connections, "HTTP", logger)
        # What the WSGI server itself reports is a client's doing (a malformed request, a dropped
        # connection): INFO, like the binary protocol's protocol errors, and throttled, so that a flood of
        # garbage costs neither the log nor the node's time.
        self._server = _TunedWSGIServer(address, app, spawn=self._pool, log=None,
                                        error_log=_ClientErrorLog(), table=self.table)

    def connections(self) -> int:
        """Open client connections (keep-alive ones included)."""
        return len(self.table)

    @property
    def address(self) -> str:
        return format_endpoint(self._server.server_host, self._server.server_port)

    def start(self) -> None:
        self._server.start()
        self.table.start()

    def stop_accepting(self) -> None:
        self._server.close()

    def stop(self, timeout: float) -> None:
        """Let requests in progress finish for up to ``timeout`` seconds, then close every connection."""
        self._server.stop(timeout=timeout)
        self.table.stop()
