"""Bad input on the client port of a real node: oversized claims, server-only packets, hostile streams, slow
clients, silent connections past the connection limit. The node keeps serving everyone else."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.hostile_client import Latencies, percentile, rss_bytes, timed_round
from taskflux.wire import client_protocol as wire
from taskflux.wire.primitives import I32, I64
from tests.support.cluster import REPO, LocalCluster, NodeProcess, wait_until
from tests.support.raw_client import HANDSHAKE, RawConnection

pytestmark = pytest.mark.timeout(180)

MAX_CONNECTIONS = 20
MAX_PAYLOAD = 16 * 1024 * 1024
# Generous bounds for a loaded 2-core machine; the targets (p99 < 50 ms) are measured by scripts/hostile_client.py.
ROUND_DEADLINE = 2.0
CLOSE_DEADLINE = 5.0


@contextlib.contextmanager
def node(root: Path, **options: str) -> Iterator[NodeProcess]:
    with LocalCluster(1, root, **options).running() as cluster:
        first = cluster.nodes[0]
        conn = RawConnection(first.client_address)
        for queue in ("probe", "hostile"):
            assert conn.command(wire.CreateQueueCommand(queue)) == wire.Ok()
        conn.close()
        yield first


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node with a small connection limit and the default handshake timeout (5 s)."""
    with node(tmp_path_factory.mktemp("limits"), tcp_adapter_max_connections=str(MAX_CONNECTIONS)) as first:
        yield first


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the node closes ``sock`` within ``seconds`` (reading and discarding what it sends)."""
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except TimeoutError:
        return False
    except OSError:
        return True  # reset: closed as well
    return False


def probe(address: str, rounds: int) -> Latencies:
    latencies = Latencies()
    for _ in range(rounds):
        timed_round(address, "probe", latencies, timeout=ROUND_DEADLINE * 5)
    return latencies


def assert_served(latencies: Latencies, rounds: int) -> None:
    assert latencies.failures == [], latencies.failures
    assert len(latencies.enqueue) == rounds
    worst = max(h + e for h, e in zip(latencies.handshake, latencies.enqueue, strict=True))
    p99 = [percentile(values, 0.99) * 1000 for values in (latencies.handshake, latencies.enqueue)]
    assert worst < ROUND_DEADLINE, (
        f"slowest handshake + enqueue: {worst * 1000:.0f} ms; p99 handshake {p99[0]:.0f} ms, enqueue {p99[1]:.0f} ms"
    )


# --- hostile streams ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("mode", "closed_by_node"), [
    ("metadata-claim", True),  # 6D claiming a million 60 kB endpoints: refused at once, again on every reconnect
    ("ignored-stream", False),  # 6D packets of 1000 tiny endpoints, under the limit: parsed, ignored, kept open
    ("tiny-packets", False),  # one-byte packets a client has no reason to send, as fast as they go
])
def test_a_hostile_stream_does_not_keep_others_from_handshaking_and_enqueuing(
    limited: NodeProcess, mode: str, closed_by_node: bool
) -> None:
    seconds = 8.0
    assert limited.process is not None
    pid = limited.process.pid
    hostile = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "hostile_client.py"), "--stream", mode,
         "--address", limited.client_address, "--seconds", str(seconds)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        time.sleep(1.0)  # the stream is under way (and the old decoder's work was growing)
        baseline = rss_bytes(pid)
        latencies = probe(limited.client_address, 20)
        growth = rss_bytes(pid) - baseline
        out, _ = hostile.communicate(timeout=seconds + 30)
    finally:
        hostile.kill()
        hostile.wait(10)
    assert_served(latencies, 20)
    sent, closed = map(int, out.split())
    assert sent > 1_000_000, f"the hostile process sent only {sent} bytes"
    assert (closed > 0) == closed_by_node, closed
    assert growth < 2 * wire.client_packet_limit(MAX_PAYLOAD), f"the node grew by {growth / 2**20:.0f} MiB"
    assert limited.running


@pytest.mark.parametrize(("header", "logged"), [
    (bytes.fromhex("6D 00000001") + I32.pack(60_000), "packet 0x6d needs 60009 bytes or more, over the limit of 4096"),
    (bytes.fromhex("65 00000000") + I32.pack(5_000), "packet 0x65 needs 5009 bytes or more, over the limit of 4096"),
    (bytes.fromhex("63 6C 00000001 00 00000000 00000001") + I32.pack(10_000), "packet 0x63 needs 10019 bytes"),
    (bytes.fromhex("43 45 01 71") + I64.pack(1) + I32.pack(MAX_PAYLOAD + 1), "payload length 16777217 exceeds"),
], ids=["metadata-endpoint", "error-message", "queue-list-metadata", "enqueue-payload"])
def test_an_oversized_claim_is_refused_at_once(limited: NodeProcess, header: bytes, logged: str) -> None:
    conn = RawConnection(limited.client_address)
    conn.send(header)
    assert closed_within(conn.sock, CLOSE_DEADLINE), "the node waits for the body of a packet it cannot accept"
    conn.close()
    wait_until(lambda: logged in limited.log(), 5, f"the log line {logged!r}")


def test_server_packets_under_their_limit_are_ignored_and_the_connection_stays_open(limited: NodeProcess) -> None:
    conn = RawConnection(limited.client_address)
    ignored = [
        wire.ClusterMetadataResponse(("127.0.0.1:1",) * 200, 0, 0),
        wire.CommandResponse(wire.CountResponse(1)),
        wire.ErrorResponse(1, "x" * 1000),
        wire.AuthorizationResponse(),
        wire.BootstrapResponse(False, "no"),
        wire.Ok(),
        wire.NotLeader(2),
    ]
    conn.send(b"".join(wire.encode(packet) for packet in ignored))
    assert isinstance(conn.request(wire.ClusterMetadataRequest()), wire.ClusterMetadataResponse)
    assert conn.enqueue("probe", 1, b"after the ignored packets") == wire.Ok()
    conn.close()


def test_a_slow_client_is_served_and_others_meanwhile(limited: NodeProcess) -> None:
    slow = RawConnection(limited.client_address)
    packet = wire.encode(wire.CommandRequest(wire.EnqueueCommand("probe", 5, b"s" * 4000)))
    for i in range(0, len(packet), 100):  # 41 pieces over about 2 s
        slow.send(packet[i : i + 100])
        assert_served(probe(limited.client_address, 1), 1)
        time.sleep(0.05)
    assert slow.read() == wire.Ok()
    assert slow.request(wire.Ack()) == wire.Ok()
    slow.close()


# --- connections that never complete the handshake ----------------------------------------------------------------

def test_silent_connections_past_the_limit_do_not_lock_out_real_clients(limited: NodeProcess) -> None:
    address = ("127.0.0.1", limited.client_port)
    silent = [socket.create_connection(address, timeout=5) for _ in range(3 * MAX_CONNECTIONS)]
    try:
        assert_served(probe(limited.client_address, 3), 3)
        # The oldest silent connections made room (the handshake timeout, 5 s, has not passed yet).
        assert closed_within(silent[0], CLOSE_DEADLINE)
        wait_until(lambda: "had not completed its handshake" in limited.log(), 5, "the eviction's log line")
    finally:
        for sock in silent:
            sock.close()


def test_a_thousand_idle_connections_do_not_lock_out_real_clients(limited: NodeProcess) -> None:
    silent = []
    try:
        for _ in range(1000):
            silent.append(socket.create_connection(("127.0.0.1", limited.client_port), timeout=5))
        assert_served(probe(limited.client_address, 3), 3)
    finally:
        for sock in silent:
            sock.close()


def test_at_the_limit_a_new_connection_is_refused_when_every_one_has_completed_its_handshake(
    tmp_path: Path,
) -> None:
    with node(tmp_path, tcp_adapter_max_connections=str(MAX_CONNECTIONS)) as first:
        served = [RawConnection(first.client_address) for _ in range(MAX_CONNECTIONS)]
        try:
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", first.client_port), timeout=5) as refused:
                # Closed at once: neither left in the backlog nor held until the handshake timeout (5 s).
                assert closed_within(refused, 3.0), "a connection past the limit waited instead of closing"
            assert time.monotonic() - started < 3.0
            wait_until(lambda: "all have completed their handshake" in first.log(), 5, "the refusal's log line")
            served.pop().close()
            wait_until(lambda: probe(first.client_address, 1).failures == [], 10, "a free slot to be used")
        finally:
            for conn in served:
                conn.close()


def test_a_connection_that_does_not_complete_its_handshake_is_closed_after_the_handshake_timeout(
    tmp_path: Path,
) -> None:
    with node(tmp_path, tcp_adapter_handshake_timeout="1s", tcp_adapter_idle_timeout="60s") as first:
        with socket.create_connection(("127.0.0.1", first.client_port), timeout=5) as silent, \
                socket.create_connection(("127.0.0.1", first.client_port), timeout=5) as halfway:
            halfway.sendall(HANDSHAKE[:3])  # authorization, then a third of the bootstrap request
            assert halfway.recv(2) == bytes.fromhex("6101")
            started = time.monotonic()
            assert closed_within(silent, CLOSE_DEADLINE)
            assert closed_within(halfway, CLOSE_DEADLINE)
            assert 0.5 < time.monotonic() - started < CLOSE_DEADLINE
        wait_until(lambda: "no handshake within 1 s" in first.log(), 5, "the log line")
        assert_served(probe(first.client_address, 1), 1)
