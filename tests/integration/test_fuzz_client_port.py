"""Fuzzing the client port of a real node: malformed packets on many connections while another client
keeps enqueuing and dequeuing. The node must keep serving, and the steady client must never fail."""

from __future__ import annotations

import socket
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskflux.wire import client_protocol as wire
from tests.support.cluster import NodeProcess
from tests.support.raw_client import HANDSHAKE, RawConnection

pytestmark = pytest.mark.timeout(300)

VALID_REQUESTS = [
    wire.encode(wire.CommandRequest(wire.EnqueueCommand("fuzz", 3, b"payload"))),
    wire.encode(wire.CommandRequest(wire.DequeueCommand("fuzz", 5))),
    wire.encode(wire.CommandRequest(wire.CountCommand("fuzz"))),
    wire.encode(wire.CommandRequest(wire.CreateQueueCommand("fz", 2, 5, 5, (0, 9)))),
    wire.encode(wire.CommandRequest(wire.DeleteQueueCommand("fz"))),
    wire.encode(wire.CommandRequest(wire.ListQueuesCommand())),
    wire.encode(wire.ClusterMetadataRequest()),
    bytes.fromhex("4B"),
    bytes.fromhex("4E"),
]


@st.composite
def hostile_streams(draw: st.DrawFn) -> bytes:
    """A valid handshake (usually) followed by mutated, truncated, spliced or random packets."""
    parts = [HANDSHAKE] if draw(st.integers(0, 9)) else []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["mutate", "truncate", "random", "valid", "huge-length"]))
        base = bytearray(draw(st.sampled_from(VALID_REQUESTS)))
        if kind == "mutate":
            for _ in range(draw(st.integers(1, 3))):
                base[draw(st.integers(0, len(base) - 1))] = draw(st.integers(0, 255))
        elif kind == "truncate":
            base = base[: draw(st.integers(0, len(base)))]
        elif kind == "random":
            base = bytearray(draw(st.binary(min_size=1, max_size=40)))
        elif kind == "huge-length":
            base = bytearray(bytes.fromhex("43 45 00 0000000000000000") + draw(st.binary(min_size=4, max_size=4)))
        parts.append(bytes(base))
    return b"".join(parts)


class SteadyClient(threading.Thread):
    """Enqueues and dequeues with acks in a loop; any failure is kept for the test to report."""

    def __init__(self, node: NodeProcess) -> None:
        super().__init__(daemon=True)
        self.conn = RawConnection(node.client_address)
        self.stop = threading.Event()
        self.rounds = 0
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                assert self.conn.enqueue("steady", 1, b"%d" % self.rounds) == wire.Ok()
                answer = self.conn.dequeue("steady")
                assert answer == wire.CommandResponse(wire.DequeueResponse(
                    wire.Record(self.rounds + 1, 1, b"%d" % self.rounds))), answer
                self.rounds += 1
        except BaseException as error:  # reported by the test
            self.failure = error


def send_hostile(node: NodeProcess, stream: bytes) -> None:
    with socket.create_connection(("127.0.0.1", node.client_port), timeout=5) as sock:
        sock.settimeout(0.3)
        try:
            sock.sendall(stream)
            while sock.recv(65536):
                pass
        except OSError:
            pass  # closed by the server, reset, or still waiting for more bytes: all fine


@pytest.fixture(scope="module")
def steady(single_node: NodeProcess):
    conn = RawConnection(single_node.client_address)
    assert conn.command(wire.CreateQueueCommand("steady")) == wire.Ok()
    assert conn.command(wire.CreateQueueCommand("fuzz")) == wire.Ok()
    client = SteadyClient(single_node)
    client.start()
    yield client
    client.stop.set()
    client.join(10)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(stream=hostile_streams())
def test_hostile_bytes_never_disturb_other_clients(single_node: NodeProcess, steady: SteadyClient,
                                                    stream: bytes) -> None:
    send_hostile(single_node, stream)
    assert single_node.running, single_node.log()[-2000:]
    assert steady.failure is None, repr(steady.failure)


def test_the_steady_client_made_progress_throughout(single_node: NodeProcess, steady: SteadyClient) -> None:
    rounds = steady.rounds
    send_hostile(single_node, HANDSHAKE + b"\xff")
    assert steady.failure is None
    assert rounds > 0
    assert single_node.running


@pytest.mark.parametrize("garbage", [b"\x00" * 64, HANDSHAKE, b"\xff\xff\xff\xff\x00\x00\x00\x00\x01" + b"x" * 32,
                                     b"TFXC" + bytes(range(40))])
def test_garbage_on_the_cluster_port_closes_that_connection_only(single_node: NodeProcess, garbage: bytes) -> None:
    with socket.create_connection(("127.0.0.1", single_node.cluster_port), timeout=5) as sock:
        sock.sendall(garbage)
        sock.settimeout(5)
        try:
            while sock.recv(65536):
                pass
        except TimeoutError:
            pytest.fail("the node kept a connection that sent garbage open")
        except OSError:
            pass  # reset by the node: just as good as a close
    conn = RawConnection(single_node.client_address)
    assert isinstance(conn.request(wire.ClusterMetadataRequest()), wire.ClusterMetadataResponse)
    assert single_node.running
