"""The final answer of a binary-protocol write, written by the node loop while the session reads on."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskflux.server.peers import PeerNetwork
from taskflux.server.tcp import ClientPortSettings, ClientServer
from taskflux.wire import client_protocol as wire
from tests.metrics.helpers import start_node, wait_until
from tests.support.raw_client import RawConnection
from tests.support.stalls import stall_appends

pytestmark = pytest.mark.timeout(60)

IDLE_TIMEOUT = 0.5


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ClientServer, object]]:
    node, storage = start_node(tmp_path / "data", None)
    peers = PeerNetwork(0, [("127.0.0.1", 5000)], ("127.0.0.1", 0), "127.0.0.1:1", lambda message: None)
    clients = ClientServer(node, peers, ClientPortSettings("127.0.0.1", 0, idle_timeout=IDLE_TIMEOUT))
    clients.start()
    wait_until(lambda: node.is_leader)
    yield clients, storage
    clients.stop(timeout=1.0)
    node.stop()
    storage.close()


def test_a_commit_slower_than_the_idle_timeout_is_answered_and_the_idle_timeout_then_applies(
    served: tuple[ClientServer, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the server owes the answer, the client owes nothing: the idle timeout starts once it is written."""
    clients, storage = served
    conn = RawConnection(clients.address)
    assert conn.command(wire.EnqueueCommand("", 1, b"slow")) == wire.Ok()
    stall_appends(storage, 3 * IDLE_TIMEOUT, monkeypatch)  # type: ignore[arg-type]
    conn.send_packet(wire.Ack())
    assert conn.read() == wire.Ok()  # not closed as idle while the commit took three idle timeouts
    answered = time.monotonic()
    wait_until(conn.is_closed_by_server, timeout=5 * IDLE_TIMEOUT)  # then the client's own idleness counts
    assert time.monotonic() - answered >= IDLE_TIMEOUT * 0.8


def test_an_answer_larger_than_the_socket_buffers_arrives_whole(served: tuple[ClientServer, object]) -> None:
    """A dequeue answer the socket cannot take in one send (6 MiB to a client with a small receive buffer):
    the session writes the rest as the client reads, and the record arrives byte for byte."""
    clients, _ = served
    payload = bytes(range(256)) * (6 * 4096)  # 6 MiB
    producer = RawConnection(clients.address)
    assert producer.enqueue("", 1, payload) == wire.Ok()
    consumer = RawConnection(clients.address)
    consumer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    answer = consumer.command(wire.DequeueCommand("", 0))
    assert isinstance(answer, wire.CommandResponse) and isinstance(answer.response, wire.DequeueResponse)
    assert answer.response.record is not None and answer.response.record.payload == payload
    assert consumer.request(wire.Ack()) == wire.Ok()
