"""The fault-injecting proxy itself: forwards, black-holes when cut, forwards again when healed."""

from __future__ import annotations

import socket
import threading

import pytest

from tests.support.proxy import FaultyProxy

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def echo_server():
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()
    listener.close()


def test_forwards_then_black_holes_then_heals(echo_server) -> None:
    proxy = FaultyProxy(echo_server)
    try:
        conn = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        conn.sendall(b"ping")
        assert conn.recv(4) == b"ping"
        proxy.cut()
        conn.sendall(b"lost")
        conn.settimeout(0.3)
        with pytest.raises(TimeoutError):
            conn.recv(4)
        proxy.heal()
        conn.settimeout(5)
        assert conn.recv(4) == b""  # the connection that lived through the cut is closed
        fresh = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        fresh.sendall(b"back")
        assert fresh.recv(4) == b"back"
    finally:
        proxy.close()
