"""Peer links without a timer per message: a peer that stops reading loses its link, a quiet link stays."""

from __future__ import annotations

import socket
import time

import gevent
import pytest
from gevent.server import StreamServer

from taskflux.raft.messages import AppendEntries
from taskflux.raft.types import Entry
from taskflux.server.peers import PeerNetwork
from taskflux.wire.cluster_protocol import FrameDecoder, Hello, encode_frame

pytestmark = pytest.mark.timeout(60)


def wait_until(condition, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        gevent.sleep(0.02)


class SilentPeer:
    """Node 1 of 2: answers the handshake, then never reads another byte."""

    def __init__(self) -> None:
        self.connections = 0
        self.server = StreamServer(("127.0.0.1", 0), self.handle)
        self.server.start()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.server.server_port)

    def handle(self, sock: socket.socket, _address: object) -> None:
        self.connections += 1
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        decoder = FrameDecoder()
        while decoder.next_frame() is None:
            decoder.feed(sock.recv(65536))
        sock.sendall(encode_frame(Hello(cluster_size=2, node_id=1, client_endpoint="127.0.0.1:1")))
        gevent.sleep(60)  # holds the connection open without reading


def test_a_peer_that_stops_reading_loses_its_link_and_is_redialled() -> None:
    silent = SilentPeer()
    network = PeerNetwork(0, [("127.0.0.1", 1), silent.address], ("127.0.0.1", 0), "127.0.0.1:2", lambda m: None,
                          timeout=0.5)
    network.start()
    try:
        wait_until(lambda: network.connected[1])
        big = (Entry(1, 1, b"x" * (1 << 20)),)
        for _ in range(64):  # far more than the socket buffers hold
            network.send(AppendEntries(0, 1, 1, 0, 0, big, 0))
        wait_until(lambda: not network.connected[1])  # the watchdog dropped the stuck link
        wait_until(lambda: silent.connections >= 2)  # and the send loop dialled again
    finally:
        network.stop()
        silent.server.stop()
