"""REST over real sockets (gevent's WSGI server on loopback): keep-alive, long polls, hostile bodies."""

from __future__ import annotations

import http.client
import json
import socket
import time
from typing import Any

import gevent
import pytest

from taskflux.server.main import Server

pytestmark = pytest.mark.timeout(60)


def connect(server: Server) -> http.client.HTTPConnection:
    host, port = server.http.address.rsplit(":", 1)  # type: ignore[union-attr]
    return http.client.HTTPConnection(host, int(port), timeout=10)


def request(conn: http.client.HTTPConnection, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    headers = {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn.request(method, path, data, headers)
    response = conn.getresponse()
    raw = response.read()
    return response.status, json.loads(raw) if raw else None


def test_one_keep_alive_connection_serves_many_requests(server: Server) -> None:
    conn = connect(server)
    assert request(conn, "PUT", "/api/v1/queues/kept")[0] == 201
    first_socket = conn.sock
    for i in range(50):
        assert request(conn, "POST", "/api/v1/queues/kept/records", {"priority": i % 7, "payload": f"p{i}"})[0] == 201
    taken = [request(conn, "POST", "/api/v1/queues/kept/dequeue")[1]["payload"] for _ in range(50)]
    assert sorted(taken) == sorted(f"p{i}" for i in range(50))
    assert conn.sock is first_socket  # no reconnect happened
    conn.close()


def test_a_long_poll_is_woken_by_another_connection(server: Server) -> None:
    waiting = connect(server)
    poll = gevent.spawn(request, waiting, "POST", "/api/v1/queues//dequeue?wait=10s&lease=30s")
    gevent.sleep(0.2)
    assert not poll.ready()
    other = connect(server)
    assert request(other, "POST", "/api/v1/queues//records", {"priority": 1, "payload": "wake"})[0] == 201
    status, body = poll.get(timeout=10)
    assert status == 200 and body["payload"] == "wake"
    assert request(other, "POST", f"/api/v1/leases/{body['lease']}/ack")[0] == 204


def test_a_huge_declared_body_is_refused_before_it_is_sent(server: Server) -> None:
    host, port = server.http.address.rsplit(":", 1)  # type: ignore[union-attr]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /api/v1/queues//records?priority=1 HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/octet-stream\r\nContent-Length: 10000000000\r\n\r\n")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413")
    conn = connect(server)
    assert request(conn, "GET", "/api/v1/queues/")[1]["count"] == 0  # still serving, nothing stored


def test_a_chunked_body_over_the_limit_is_refused(server: Server) -> None:
    conn = connect(server)
    chunks = (b"z" * 32 * 1024 for _ in range(4))  # 128 KiB against a 64 KiB limit
    conn.request("POST", "/api/v1/queues//records?priority=1", chunks,
                 {"Content-Type": "application/octet-stream"}, encode_chunked=True)
    assert conn.getresponse().status == 413
    assert request(connect(server), "GET", "/api/v1/queues/")[1]["count"] == 0


def test_garbage_on_the_http_port_does_not_disturb_other_clients(server: Server) -> None:
    host, port = server.http.address.rsplit(":", 1)  # type: ignore[union-attr]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"\x00\x01\x02 not http at all\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 400")
    conn = connect(server)
    assert request(conn, "GET", "/health/live") == (200, {"status": "live"})


def test_idle_connections_are_closed_but_long_polls_are_not(server: Server,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("taskflux.server.http.IDLE_TIMEOUT_SECONDS", 0.3)
    host, port = server.http.address.rsplit(":", 1)  # type: ignore[union-attr]
    with socket.create_connection((host, int(port)), timeout=10) as idle:
        poll = connect(server)
        status, _ = request(poll, "POST", "/api/v1/queues//dequeue?wait=1s")  # waits longer than the timeout
        assert status == 204
        assert idle.recv(1) == b""  # the silent connection was closed
    assert request(connect(server), "GET", "/health/live")[0] == 200


def test_a_redirect_keeps_the_query(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    from taskflux.server.node import NotLeader

    def not_leader(*_args: object) -> None:
        raise NotLeader(0)

    monkeypatch.setattr(server.rest.service, "reserve_many", not_leader)  # type: ignore[union-attr]
    conn = connect(server)
    conn.request("POST", "/api/v1/queues/jobs/dequeue?wait=10s&lease=30s")
    response = conn.getresponse()
    response.read()
    assert response.status == 421
    assert response.getheader("Location").endswith("/api/v1/queues/jobs/dequeue?wait=10s&lease=30s")


def test_a_body_shorter_than_announced_is_a_400(server: Server) -> None:
    host, port = server.http.address.rsplit(":", 1)  # type: ignore[union-attr]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /api/v1/queues//records?priority=1 HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/octet-stream\r\nContent-Length: 10\r\n\r\nabc")
        sock.shutdown(socket.SHUT_WR)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert b"incomplete_body" in answer
    assert request(connect(server), "GET", "/api/v1/queues/")[1]["count"] == 0


@pytest.mark.parametrize("mode", ["", "&lease=30s"])
def test_a_record_found_after_the_long_polling_client_left_goes_back(server: Server, mode: str) -> None:
    host, port = server.http.address.rsplit(":", 1)  # type: ignore[union-attr]
    quitter = socket.create_connection((host, int(port)), timeout=10)
    quitter.sendall(f"POST /api/v1/queues//dequeue?wait=10s{mode} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    gevent.sleep(0.2)
    quitter.close()  # gives up before anything arrives
    gevent.sleep(0.2)
    other = connect(server)
    assert request(other, "POST", "/api/v1/queues//records", {"priority": 1, "payload": "kept"})[0] == 201
    deadline = time.monotonic() + 10
    while request(other, "GET", "/api/v1/queues/")[1]["count"] != 1:  # reserved for a moment, then back
        assert time.monotonic() < deadline, "the record did not come back"
        gevent.sleep(0.02)
    assert request(other, "POST", "/api/v1/queues//dequeue")[1]["payload"] == "kept"
