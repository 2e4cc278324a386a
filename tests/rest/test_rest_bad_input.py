"""Bad input on the HTTP port: oversized claims and bodies, wrong content types, slow heads and bodies, more
silent connections than the limit, half-open peers. Each attack runs while real clients are measured: they
keep being served (the latency bound asserted is loose for a loaded test machine; the numbers are printed)."""

from __future__ import annotations

import contextlib
import http.client
import socket
import time
from functools import partial

import gevent
import pytest

from taskflux.server import http as http_module
from taskflux.server.http import HttpServer
from taskflux.server.main import Server
from tests.rest.conftest import wait_until
from tests.support.attackers import assert_real_clients_served, attacking, idle_connections
from tests.support.proxy import FaultyProxy

pytestmark = pytest.mark.timeout(120)

REAL_REQUESTS = 100


def address(server: Server) -> tuple[str, int]:
    host, port = server.http.address.rsplit(":", 1)  # type: ignore[union-attr]
    return host, int(port)


def real_client_latencies(server: Server, requests: int = REAL_REQUESTS) -> list[float]:
    """Connect, enqueue one record, read the answer — ``requests`` times; their latencies in seconds."""
    host, port = address(server)
    seconds = []
    for i in range(requests):
        started = time.perf_counter()
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("POST", "/api/v1/queues//records?priority=1", f"real {i}".encode(),
                     {"Content-Type": "text/plain"})
        response = conn.getresponse()
        response.read()
        conn.close()
        assert response.status == 201, response.status
        seconds.append(time.perf_counter() - started)
    return seconds


def assert_served(server: Server, attack: str) -> None:
    assert_real_clients_served(partial(real_client_latencies, server), attack, "connect + enqueue")


def closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
        return True
    except TimeoutError:
        return False
    except OSError:
        return True


def test_baseline_without_an_attack(server: Server) -> None:
    assert_served(server, "no attack (baseline)")


def test_more_silent_connections_than_the_limit_do_not_lock_real_clients_out(server: Server) -> None:
    limit = http_module.MAX_HTTP_CONNECTIONS
    with idle_connections(server.http.address, limit + 100):  # type: ignore[union-attr]
        wait_until(lambda: server.http.connections() >= limit)  # type: ignore[union-attr]
        assert_served(server, f"{limit + 100} silent connections (limit {limit})")
        assert server.http.connections() <= limit  # type: ignore[union-attr]


def test_a_thousand_idle_connections_under_the_limit_cost_nobody_anything(server: Server) -> None:
    with idle_connections(server.http.address, 1000):  # type: ignore[union-attr]
        wait_until(lambda: server.http.connections() >= 1000)  # type: ignore[union-attr]
        assert_served(server, "1000 idle connections")


def test_a_connection_that_never_sends_a_request_is_closed_at_its_deadline(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_module, "FIRST_REQUEST_SECONDS", 0.5)
    with socket.create_connection(address(server), timeout=10) as silent:
        assert closed_by_server(silent, within=5)


def test_a_slow_request_head_is_closed_at_its_deadline_although_bytes_keep_coming(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_module, "FIRST_REQUEST_SECONDS", 0.5)
    head = b"GET /health/live HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 100
    with socket.create_connection(address(server), timeout=10) as slow:
        started = time.monotonic()
        with contextlib.suppress(OSError):
            for byte in head:  # one byte every 20 ms: each read is quick, the head never completes
                slow.send(bytes([byte]))
                gevent.sleep(0.02)
        assert closed_by_server(slow, within=5)
        assert time.monotonic() - started < 5


def test_a_slow_body_is_closed_at_its_deadline(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_module, "BODY_SECONDS", 0.5)
    with socket.create_connection(address(server), timeout=10) as slow:
        slow.sendall(b"POST /api/v1/queues//records?priority=1 HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: text/plain\r\nContent-Length: 1000\r\n\r\nonly a part")
        answer = b""
        with contextlib.suppress(OSError):
            answer = slow.recv(65536)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 400"), answer
        assert closed_by_server(slow, within=5)


@pytest.mark.parametrize("attack", [
    "http-oversized-claim", "http-oversized-body", "http-wrong-type", "http-garbage", "slow-drip"])
def test_real_clients_are_served_during_an_attack(server: Server, attack: str) -> None:
    with attacking(attack, server.http.address):  # type: ignore[union-attr]
        assert_served(server, attack)


def test_half_open_peers_are_closed_and_do_not_hold_places(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_module, "FIRST_REQUEST_SECONDS", 1.0)
    proxy = FaultyProxy(address(server))
    peers = [socket.create_connection(("127.0.0.1", proxy.port), timeout=10) for _ in range(50)]
    try:
        for peer in peers:
            peer.sendall(b"POST /api/v1/queues//records HTTP/1.1\r\nHost: x\r\n")  # the head, half sent
        wait_until(lambda: server.http.connections() >= 50)  # type: ignore[union-attr]
        proxy.cut()  # the peers vanish without a FIN: the node only has its deadlines to notice
        assert_served(server, "50 half-open peers")
        wait_until(lambda: server.http.connections() == 0)  # type: ignore[union-attr]
    finally:
        for peer in peers:
            peer.close()
        proxy.close()


def test_when_every_connection_is_being_served_a_new_one_is_answered_busy(server: Server) -> None:
    small = HttpServer(server.rest.app, ("127.0.0.1", 0), max_connections=2)
    small.start()
    host, port = small.address.rsplit(":", 1)
    polls = [http.client.HTTPConnection(host, int(port), timeout=20) for _ in range(2)]
    try:
        for poll in polls:  # long polls: the node is working for them, they are not evictable
            poll.request("POST", "/api/v1/queues//dequeue?wait=10s")
        wait_until(lambda: len(server.node._consumers.get("", ())) == 2)
        with socket.create_connection((host, int(port)), timeout=10) as refused:
            answer = refused.recv(65536)
        assert answer.startswith(b"HTTP/1.1 503") and b'"busy"' in answer
        assert small.table.refused == 1
    finally:
        for poll in polls:
            poll.close()
        small.stop(timeout=1)


@pytest.mark.parametrize("head", [
    b"GET /health/live HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n",  # a route that takes no body
    b"POST /api/v1/queues//records?priority=1 HTTP/1.1\r\nHost: x\r\n"  # a body refused as too large
    b"Content-Type: application/octet-stream\r\nContent-Length: 99999999999\r\n\r\n",
])
def test_an_endless_body_that_is_not_read_is_not_drained_either(server: Server, head: bytes) -> None:
    """The answer comes and the connection closes at once: the node does not read on to discard the body."""
    with socket.create_connection(address(server), timeout=10) as sender:
        sender.sendall(head)
        deadline = time.monotonic() + 5
        closed = False
        while time.monotonic() < deadline and not closed:
            try:
                sender.sendall(b"x" * 65536)
            except OSError:
                closed = True
            gevent.sleep(0)
        assert closed, "the node kept reading a body nobody wanted"
    assert real_client_latencies(server, 5)  # and serves others
