"""The benchmark's REST client: the same put / get + ack closed loop as the binary protocol's, over HTTP.

``put`` is one committed enqueue (``POST .../records``); ``get`` is a leased dequeue plus its ack (two
requests, like the binary protocol's dequeue + Ack). One keep-alive connection per client.
"""

from __future__ import annotations

import http.client
import json
import socket
from urllib.parse import quote


class ClientError(Exception):
    """An answer the benchmark did not expect."""


class NotLeader(ClientError):
    """The node is not the leader (421) or knows none (503)."""


class RestConnection:
    """One keep-alive HTTP connection to a node's REST interface."""

    def __init__(self, address: tuple[str, int], queue: str, timeout: float) -> None:
        self.conn = http.client.HTTPConnection(address[0], address[1], timeout=timeout)
        self.conn.connect()
        # http.client writes a request with a body in two sends: without this, Nagle holds the second.
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        name = quote(queue, safe="")
        self.records = f"/api/v1/queues/{name}/records?priority="
        self.dequeue = f"/api/v1/queues/{name}/dequeue?lease=60s&wait="

    def _call(self, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
        self.conn.request("POST", path, body, headers)
        response = self.conn.getresponse()
        data = response.read()
        if response.status in (421, 503):
            raise NotLeader(data.decode(errors="replace"))
        return response.status, data

    def put(self, priority: int, payload: bytes) -> None:
        status, data = self._call(f"{self.records}{priority}", payload)
        if status != 201:
            raise ClientError(f"enqueue answered {status}: {data[:200]!r}")

    def get(self, timeout_ms: int) -> bool:
        status, data = self._call(f"{self.dequeue}{timeout_ms}ms")
        if status == 204:
            return False
        if status != 200:
            raise ClientError(f"dequeue answered {status}: {data[:200]!r}")
        token = json.loads(data)["lease"]
        status, data = self._call(f"/api/v1/leases/{token}/ack")
        if status != 204:
            raise ClientError(f"ack answered {status}: {data[:200]!r}")
        return True

    def close(self) -> None:
        self.conn.close()
