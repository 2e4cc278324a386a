"""A whole node in this process (main.Server on free loopback ports) and a WSGI caller for its REST app."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import gevent
import pytest

from taskflux.config import load_config
from taskflux.server.main import Server
from tests.support.cluster import HeldPorts


def wait_until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        gevent.sleep(0.01)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Wsgi:
    """Calls a WSGI application directly (no sockets)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, method: str, path: str | bytes, body: bytes | str | dict[str, Any] | list[Any] | None = None,
                 content_type: str | None = None, query: str = "", headers: dict[str, str] | None = None) -> Answer:
        if isinstance(body, dict | list):
            data = json.dumps(body).encode()
            content_type = content_type or "application/json"
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = body or b""
        environ = {
            # As a server hands it over: the path's bytes (UTF-8 here) decoded as Latin-1.
            "REQUEST_METHOD": method,
            "PATH_INFO": (path if isinstance(path, bytes) else path.encode("utf-8")).decode("latin-1"),
            "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(data), "wsgi.errors": io.StringIO(), "wsgi.version": (1, 0),
            "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False,
            "CONTENT_LENGTH": str(len(data)), "HTTP_HOST": "127.0.0.1",
        }
        if content_type is not None:
            environ["CONTENT_TYPE"] = content_type
        for name, value in (headers or {}).items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        started: dict[str, Any] = {}

        def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: object = None) -> None:
            started["status"] = int(status.split()[0])
            started["headers"] = dict(response_headers)

        chunks = self.app(environ, start_response)
        try:
            payload = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        return Answer(started["status"], started["headers"], payload)


def queue_path(name: str, suffix: str = "") -> str:
    """The PATH_INFO a server sees for a queue's resource (already percent-decoded)."""
    return f"/api/v1/queues/{name}{suffix}"


def quoted(name: str) -> str:
    return quote(name, safe="")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    held = HeldPorts(3)
    cluster_port, client_port, http_port = held.ports
    held.release()
    config = load_config([
        "--cluster-peers", f"127.0.0.1:{cluster_port}", "--tcp-adapter-listen-host", "127.0.0.1",
        "--tcp-adapter-listen-port", str(client_port), "--http-listen-address", f"127.0.0.1:{http_port}",
        "--grpc-enabled", "false", "--data-directory", str(tmp_path / "data"), "--log-level", "warning",
        "--max-payload-size", "64KiB", "--raft-election-timeout", "100ms", "--raft-tick-interval", "10ms",
        "--raft-heartbeat-interval", "20ms",
    ], {})
    node_server = Server(config)
    node_server.leases._sweep_interval = 0.02  # expire test leases promptly
    node_server.start()
    # Leading, and its term's first entry applied (before that, commit and applied index are still 0).
    wait_until(lambda: node_server.node.is_leader and node_server.node.applied_index >= 1)
    yield node_server
    node_server.stop()


@pytest.fixture
def api(server: Server) -> Wsgi:
    return Wsgi(server.rest.app)
