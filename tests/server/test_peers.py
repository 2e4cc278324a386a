"""Peer links without a timer per message: a peer that stops reading loses its link, a quiet link stays.
The cluster port facing strangers (a small Hello only, within a deadline, a bounded number of them), twins
and nodes of another cluster."""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from pathlib import Path

import gevent
import pytest
from gevent.server import StreamServer

from taskflux.raft.messages import AppendEntries, Heartbeat
from taskflux.raft.types import Entry
from taskflux.server import peers
from taskflux.server.membership import Membership
from taskflux.server.peers import PeerNetwork
from taskflux.storage.identity import IdentityFile
from taskflux.wire.cluster_protocol import HEADER_SIZE, FrameDecoder, FrameType, Hello, encode_frame

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


def test_the_watchdog_announces_the_close_of_a_stuck_link_before_it_drops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []

    def shut_down(sock: socket.socket) -> None:
        events.append("shut down")
        sock.shutdown(socket.SHUT_RDWR)

    monkeypatch.setattr(peers, "shut_down", shut_down)
    silent = SilentPeer()
    network = PeerNetwork(0, [("127.0.0.1", 1), silent.address], ("127.0.0.1", 0), "127.0.0.1:2", lambda m: None,
                          timeout=0.5, closing_link=lambda peer: events.append(f"closing {peer}"))
    network.start()
    try:
        wait_until(lambda: network.connected[1])
        big = (Entry(1, 1, b"x" * (1 << 20)),)
        for _ in range(64):
            network.send(AppendEntries(0, 1, 1, 0, 0, big, 0))
        wait_until(lambda: "shut down" in events)
        assert events[:2] == ["closing 1", "shut down"]
    finally:
        network.stop()
        silent.server.stop()


class RefusingPeer:
    """Node 1 of 2 that answers every Hello as node 0 (so node 0 refuses it and closes the link), and notes
    when it sees a link end."""

    def __init__(self) -> None:
        self.ended = 0
        self.server = StreamServer(("127.0.0.1", 0), self.handle)
        self.server.start()

    def handle(self, sock: socket.socket, _address: object) -> None:
        decoder = FrameDecoder()
        while decoder.next_frame() is None:
            decoder.feed(sock.recv(65536))
        sock.sendall(encode_frame(Hello(cluster_size=2, node_id=0, client_endpoint="127.0.0.1:1")))
        with contextlib.suppress(OSError):
            while sock.recv(65536):
                pass
        self.ended += 1


def test_every_close_of_a_dialled_link_is_announced_before_the_peer_can_see_it() -> None:
    """The announcement (the node ends its lease there) comes first: the peer, given time to run, has not
    seen the link end yet."""
    refusing = RefusingPeer()
    seen_at_announcement: list[int] = []

    def closing(peer: int) -> None:
        gevent.sleep(0.1)  # lets the peer's greenlet read an end that came first
        seen_at_announcement.append(refusing.ended)

    network = PeerNetwork(0, [("127.0.0.1", 1), ("127.0.0.1", refusing.server.server_port)], ("127.0.0.1", 0),
                          "127.0.0.1:2", lambda m: None, timeout=2, closing_link=closing)
    network.start()
    try:
        wait_until(lambda: refusing.ended >= 2)
        assert seen_at_announcement[:2] == [0, 1]
    finally:
        network.stop()
        refusing.server.stop()


def test_a_link_closed_by_the_peer_is_reported_and_one_this_node_ends_is_not() -> None:
    listener = Listener()
    try:
        sock, hello = listener.handshake(1)
        assert hello is not None
        sock.close()  # the peer's process ends the link (a crash closes it the same way)
        wait_until(lambda: listener.closed_by_peers == [1])
        sock, hello = listener.handshake(1)
        assert hello is not None
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # a reset
        wait_until(lambda: listener.closed_by_peers == [1, 1])
        sock, hello = listener.handshake(2)
        assert hello is not None
        sock.sendall(encode_frame(Heartbeat(1, 0, 1, 0)))  # claims to be node 1: this node closes the link
        assert closed_within(sock, 10) is not None
        sock.close()
        sock, hello = listener.handshake(2)  # the link was closed and unregistered all the same
        assert hello is not None
        sock.close()
        wait_until(lambda: listener.closed_by_peers == [1, 1, 2])
    finally:
        listener.stop()


# --- the cluster port facing strangers, twins and other clusters ---------------------------------------


class Listener:
    """Node 0 of 3 listening on a free port; it dials nobody reachable (ports 1 and 2 refuse)."""

    def __init__(self, tmp_path: Path | None = None, timeout: float = 10.0, max_pending: int = 64,
                 cluster_id: str = "") -> None:
        self.delivered: list[object] = []
        self.closed_by_peers: list[int] = []
        membership = None
        if tmp_path is not None:
            membership = Membership(IdentityFile(str(tmp_path), 0, cluster_id, empty=False))
        self.network = PeerNetwork(0, [("127.0.0.1", 0), ("127.0.0.1", 1), ("127.0.0.1", 2)], ("127.0.0.1", 0),
                                   "127.0.0.1:9", self.delivered.append, timeout=timeout, max_pending=max_pending,
                                   membership=membership, peer_closed=self.closed_by_peers.append)
        self.network.start()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.network.listen_port)

    def dial(self) -> socket.socket:
        return socket.create_connection(self.address, timeout=10)

    def handshake(self, node_id: int, cluster_id: str = "") -> tuple[socket.socket, Hello | None]:
        """Dial as ``node_id``; the answer's Hello, or None when the listener closed the connection."""
        sock = self.dial()
        sock.sendall(encode_frame(Hello(cluster_size=3, node_id=node_id, client_endpoint="127.0.0.1:1",
                                        cluster_id=cluster_id)))
        decoder = FrameDecoder(handshake=True)
        while (frame := decoder.next_frame()) is None:
            data = sock.recv(4096)
            if not data:
                return sock, None
            decoder.feed(data)
        assert isinstance(frame, Hello)
        return sock, frame

    def stop(self) -> None:
        self.network.stop()


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the peer closed ``sock`` (reading and dropping what it sends), None if it did not."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return None
    except OSError:
        pass
    return time.monotonic() - started


@pytest.mark.parametrize(
    "first_bytes",
    [
        struct.pack(">IIB", 100_000, 0, FrameType.HELLO),  # a Hello claiming 100 kB: no Hello is that big
        encode_frame(Heartbeat(1, 0, 1, 0))[:HEADER_SIZE],  # anything but a Hello first
    ],
    ids=["oversized-hello", "not-a-hello"],
)
def test_before_the_handshake_a_frame_is_refused_from_its_header(first_bytes: bytes) -> None:
    listener = Listener(timeout=10)
    try:
        sock = listener.dial()
        sock.sendall(first_bytes)
        elapsed = closed_within(sock, 5)
        assert elapsed is not None and elapsed < 2  # at once, not after the 10 s handshake deadline
    finally:
        listener.stop()


def test_the_handshake_deadline_holds_against_a_trickle_and_a_half_sent_hello() -> None:
    """A per-read timeout would let a byte every 0.3 s hold the connection for ever; the deadline is total."""
    listener = Listener(timeout=1.0)
    try:
        hello = encode_frame(Hello(cluster_size=3, node_id=1, client_endpoint="127.0.0.1:1"))
        trickle = listener.dial()
        half_open = listener.dial()
        half_open.sendall(hello[: len(hello) // 2])  # then silence, the connection left open
        started = time.monotonic()
        trickle.setblocking(False)
        closed = False
        for byte in hello[:-1]:
            try:
                trickle.send(bytes([byte]))
            except OSError:
                closed = True
                break
            gevent.sleep(0.3)
            if time.monotonic() - started > 6:
                break
        assert closed or closed_within(trickle, 1) is not None
        assert time.monotonic() - started < 4
        assert closed_within(half_open, 2) is not None
    finally:
        listener.stop()


def test_at_most_max_pending_strangers_are_held_and_a_peer_still_gets_in() -> None:
    listener = Listener(timeout=30, max_pending=16)
    strangers = []
    try:
        for _ in range(200):
            strangers.append(listener.dial())
        # The oldest are closed as new ones come: a flood costs at most 16 sockets.
        wait_until(lambda: sum(closed_within(sock, 0.001) is None for sock in strangers) <= 16)
        sock, answer = listener.handshake(1)  # a peer dialling during the flood gets in at once
        assert answer is not None and answer.node_id == 0
        sock.sendall(encode_frame(Heartbeat(1, 0, 1, 0)))
        wait_until(lambda: listener.delivered == [Heartbeat(1, 0, 1, 0)])
        sock.close()
    finally:
        for sock in strangers:
            sock.close()
        listener.stop()


def test_a_second_link_claiming_a_connected_node_id_is_refused_and_the_first_kept() -> None:
    listener = Listener()
    try:
        first, answer = listener.handshake(1)
        assert answer is not None
        twin, refused = listener.handshake(1)
        assert refused is None  # closed without an answer
        first.sendall(encode_frame(Heartbeat(1, 0, 1, 0)))
        wait_until(lambda: listener.delivered == [Heartbeat(1, 0, 1, 0)])
        first.close()  # once the first link is gone, the id is free again (a restarted peer)
        wait_until(lambda: 1 not in listener.network._inbound)
        again, answer = listener.handshake(1)
        assert answer is not None
        for sock in (twin, again):
            sock.close()
    finally:
        listener.stop()


def test_a_hello_with_the_listeners_own_id_is_refused() -> None:
    listener = Listener()
    try:
        _, answer = listener.handshake(0)
        assert answer is None
    finally:
        listener.stop()


def test_a_node_of_another_cluster_is_refused_and_an_unknown_cluster_id_is_learned(tmp_path: Path,
                                                                                  caplog: pytest.LogCaptureFixture
                                                                                  ) -> None:
    (tmp_path / "tmp").mkdir()
    listener = Listener(tmp_path, cluster_id="blue")
    try:
        _, answer = listener.handshake(1, cluster_id="green")
        assert answer is None
        assert "peer node 1 belongs to cluster green, this node 0 to cluster blue" in caplog.text
        sock, answer = listener.handshake(2, cluster_id="blue")
        assert answer is not None and answer.cluster_id == "blue"
        sock.close()
    finally:
        listener.stop()
    unknown = tmp_path / "unknown"
    (unknown / "tmp").mkdir(parents=True)
    listener = Listener(unknown)  # no cluster id yet: it takes the first one a peer shows
    try:
        sock, answer = listener.handshake(1, cluster_id="blue")
        assert answer is not None and answer.cluster_id == "blue"  # learned before it answers
        assert IdentityFile(str(unknown), 0, "", empty=False).cluster_id == "blue"
        sock.close()
    finally:
        listener.stop()
