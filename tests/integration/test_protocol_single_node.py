"""Every flow and error code of the binary protocol against a real single-node server, byte for byte
where docs/client-protocol.md gives bytes."""

from __future__ import annotations

import threading

import pytest

from taskflux.wire import client_protocol as wire
from tests.support.cluster import LocalCluster, NodeProcess, wait_until
from tests.support.raw_client import RawConnection

pytestmark = pytest.mark.timeout(60)

h = bytes.fromhex


def connect(node: NodeProcess, handshake: bool = True) -> RawConnection:
    return RawConnection(node.client_address, handshake=handshake)


def exchange(conn: RawConnection, request: str, expected: str) -> None:
    conn.send(h(request))
    assert conn.read_bytes(len(h(expected))).hex() == h(expected).hex()


def create(conn: RawConnection, name: str, max_size: int = -1, qa: tuple[int, int] | None = None) -> None:
    command = wire.CreateQueueCommand(name, 2 if qa else 1, None if max_size < 0 else max_size, None, qa)
    assert conn.command(command) == wire.Ok()


def test_handshake_bytes(single_node: NodeProcess) -> None:
    conn = connect(single_node, handshake=False)
    exchange(conn, "41 4E", "61 01")
    exchange(conn, "42 00000001 00000000 00000007", "62 01")  # any 1.0.x is accepted (and 1.1.x)


@pytest.mark.parametrize("version", ["00000001 00000002 00000000", "00000002 00000000 00000000",
                                     "00000000 00000009 00000000"])
def test_an_unsupported_version_is_refused_with_a_reason_and_closed(single_node: NodeProcess, version: str) -> None:
    conn = connect(single_node, handshake=False)
    exchange(conn, "41 4E", "61 01")
    conn.send(h("42" + version))
    answer = conn.read()
    assert isinstance(answer, wire.BootstrapResponse) and not answer.success and answer.reason
    assert conn.is_closed_by_server()


@pytest.mark.parametrize("first", ["42 00000001 00000000 00000000", "4E", "6B", "43 4C", "41 58", "FF"])
def test_a_wrong_first_packet_closes_only_that_connection(single_node: NodeProcess, first: str) -> None:
    conn = connect(single_node, handshake=False)
    conn.send(h(first))
    assert conn.is_closed_by_server()
    survivor = connect(single_node)
    assert isinstance(survivor.request(wire.ClusterMetadataRequest()), wire.ClusterMetadataResponse)


def test_the_spec_examples_create_enqueue_count_dequeue(single_node: NodeProcess) -> None:
    conn = connect(single_node)
    exchange(conn, "43 51 04 6A6F6273 00000001 00000064 FFFFFFFF 00", "6B")  # heap "jobs", at most 100
    exchange(conn, "43 43 04 6A6F6273", "63 63 00000000")
    exchange(conn, "43 45 04 6A6F6273 0000000000000005 00000005 68656C6C6F", "6B")
    exchange(conn, "4B", "6B")
    exchange(conn, "43 43 04 6A6F6273", "63 63 00000001")
    exchange(conn, "43 44 04 6A6F6273 000003E8",
             "63 64 01 0000000000000001 0000000000000005 00000005 68656C6C6F")
    exchange(conn, "4B", "6B")
    exchange(conn, "43 44 04 6A6F6273 00000000", "63 64 00")  # an empty dequeue is exactly 63 64 00
    exchange(conn, "43 52 04 6A6F6273", "6B")


def test_business_errors(single_node: NodeProcess) -> None:
    conn = connect(single_node)
    missing = "05 6D697373 21"  # "miss!"
    exchange(conn, f"43 45 {missing} 0000000000000000 00000000", "6B")
    exchange(conn, "4B", "63 65 00000002 00000000")  # enqueue into a missing queue: error 2 after the Ack
    exchange(conn, f"43 43 {missing}", "63 65 00000002 00000000")
    exchange(conn, f"43 44 {missing} 00000000", "63 65 00000002 00000000")  # DEFECT fixed: error 2
    exchange(conn, f"43 52 {missing}", "63 65 00000002 00000000")
    exchange(conn, "43 51 00 00000001 FFFFFFFF FFFFFFFF 00", "63 65 00000003 00000000")  # "" exists
    exchange(conn, "43 52 00", "63 65 00000001 00000000")  # the default queue cannot be deleted


def test_invalid_names_answer_error_1_in_each_command_s_way(single_node: NodeProcess) -> None:
    conn = connect(single_node)
    bad = "03 612062"  # "a b": a space is not allowed
    exchange(conn, f"43 45 {bad} 0000000000000000 00000000", "65 00000001 00000000")  # no Ack expected
    exchange(conn, f"43 44 {bad} 00000000", "63 65 00000001 00000000")
    exchange(conn, f"43 43 {bad}", "63 65 00000001 00000000")
    exchange(conn, f"43 52 {bad}", "63 65 00000001 00000000")
    exchange(conn, f"43 51 {bad} 00000001 FFFFFFFF FFFFFFFF 00", "65 00000001 00000000")
    exchange(conn, "43 43 02 C3A9", "63 65 00000001 00000000")  # non-ASCII is refused, never rewritten


@pytest.mark.parametrize(
    ("create_body", "code"),
    [
        ("00000000 FFFFFFFE FFFFFFFB 00", 8),  # implementation first
        ("00000002 FFFFFFFE FFFFFFFB 00", 7),  # QA without a range
        ("00000001 FFFFFFFE FFFFFFFB 01 0000000000000005 0000000000000001", 4),  # min > max
        ("00000001 FFFFFFFE FFFFFFFB 00", 6),  # the spec's example: payload before size
        ("00000001 FFFFFFFE FFFFFFFF 00", 5),
    ],
)
def test_create_queue_validation_errors_in_order(single_node: NodeProcess, create_body: str, code: int) -> None:
    conn = connect(single_node)
    exchange(conn, f"43 51 03 626164 {create_body}", f"65 {code:08x} 00000000")


def test_policy_violations(single_node: NodeProcess) -> None:
    conn = connect(single_node)
    exchange(conn, "43 51 03 706f6c 00000002 00000001 00000002 01 FFFFFFFFFFFFFFF6 000000000000000A", "6B")
    exchange(conn, "43 45 03 706f6c 000000000000000B 00000000", "6B")
    exchange(conn, "4B", "63 70 00000002 FFFFFFFFFFFFFFF6 000000000000000A")  # range [-10, 10]
    exchange(conn, "43 45 03 706f6c 0000000000000000 00000003 616263", "6B")
    exchange(conn, "4B", "63 70 00000003 00000002")  # payload over 2 bytes
    exchange(conn, "43 45 03 706f6c 0000000000000000 00000002 6162", "6B")
    exchange(conn, "4B", "6B")
    exchange(conn, "43 45 03 706f6c 0000000000000000 00000000", "6B")
    exchange(conn, "4B", "63 70 00000001 00000001")  # full: the size policy is reported first


def test_nack_puts_the_record_back_at_the_end_of_its_priority(single_node: NodeProcess) -> None:
    conn = connect(single_node)
    create(conn, "nack")
    for payload in (b"a", b"b"):
        assert conn.enqueue("nack", 7, payload) == wire.Ok()
    first = conn.dequeue("nack", ack=False)
    assert first == wire.CommandResponse(wire.DequeueResponse(wire.Record(1, 7, b"a")))
    second = conn.dequeue("nack")
    assert second == wire.CommandResponse(wire.DequeueResponse(wire.Record(2, 7, b"b")))
    again = conn.dequeue("nack")
    assert again == wire.CommandResponse(wire.DequeueResponse(wire.Record(1, 7, b"a")))  # same id


def test_a_disconnect_before_the_ack_puts_the_record_back(single_node: NodeProcess) -> None:
    conn = connect(single_node)
    create(conn, "gone")
    assert conn.enqueue("gone", 1, b"x") == wire.Ok()
    taker = connect(single_node)
    assert taker.command(wire.DequeueCommand("gone", 0)) == wire.CommandResponse(
        wire.DequeueResponse(wire.Record(1, 1, b"x")))
    assert conn.command(wire.CountCommand("gone")) == wire.CommandResponse(wire.CountResponse(0))
    taker.close()
    wait_until(lambda: conn.command(wire.CountCommand("gone")) == wire.CommandResponse(wire.CountResponse(1)),
               10, "the record to come back")


def test_a_waiting_dequeue_gets_a_record_enqueued_meanwhile(single_node: NodeProcess) -> None:
    producer = connect(single_node)
    create(producer, "wait")
    consumer = connect(single_node)
    got: list[wire.Packet] = []
    waiter = threading.Thread(target=lambda: got.append(consumer.command(wire.DequeueCommand("wait", 10_000))))
    waiter.start()
    assert producer.enqueue("wait", 3, b"late") == wire.Ok()
    waiter.join(10)
    assert got == [wire.CommandResponse(wire.DequeueResponse(wire.Record(1, 3, b"late")))]
    assert consumer.request(wire.Ack()) == wire.Ok()


def test_the_largest_timeout_is_a_wait_not_a_crash(single_node: NodeProcess) -> None:
    conn = connect(single_node)
    create(conn, "maxwait")
    assert conn.enqueue("maxwait", 0, b"") == wire.Ok()
    exchange(conn, "43 44 07 6d6178776169 74 FFFFFFFF", "63 64 01 0000000000000001 0000000000000000 00000000")
    exchange(conn, "4B", "6B")


def test_known_packets_are_ignored_and_unknown_ones_close(single_node: NodeProcess) -> None:
    conn = connect(single_node)
    conn.send(h("6B 4B 4E"))  # known packets in the session loop: read and ignored
    exchange(conn, "4D", "6D 00000001 " + wire.encode(wire.ClusterMetadataResponse(
        (single_node.client_address,), 0, 0))[5:].hex())
    conn.send(h("43 5A"))  # an unknown command marker
    assert conn.is_closed_by_server()


def test_a_negative_or_huge_length_closes_only_that_connection(single_node: NodeProcess) -> None:
    for body in ("43 45 00 0000000000000000 FFFFFFFF", "43 45 00 0000000000000000 7FFFFFFF"):
        conn = connect(single_node)
        conn.send(h(body))
        assert conn.is_closed_by_server()
    assert connect(single_node).command(wire.ListQueuesCommand()) is not None


def test_the_idle_timeout_closes_and_returns_a_pending_record(single_node: NodeProcess) -> None:
    conn = connect(single_node)
    create(conn, "idle")
    assert conn.enqueue("idle", 0, b"z") == wire.Ok()
    sleeper = connect(single_node)
    response = sleeper.command(wire.DequeueCommand("idle", 0))
    assert isinstance(response, wire.CommandResponse)
    assert sleeper.is_closed_by_server()  # idle timeout of this module's node: 2 s
    assert conn.is_closed_by_server()  # the other connection was just as idle
    checker = connect(single_node)
    wait_until(lambda: checker.command(wire.CountCommand("idle")) == wire.CommandResponse(wire.CountResponse(1)),
               10, "the record to come back")


def test_list_queues_bytes(fresh_node: LocalCluster) -> None:
    conn = connect(fresh_node.nodes[0])
    create(conn, "jobs", max_size=100)
    for _ in range(2):
        assert conn.enqueue("jobs", 0, b"") == wire.Ok()
    exchange(conn, "43 4C", "63 6C 00000002 00 00000000 00000000 04 6A6F6273 00000002 00000001 0000000E "
             "6D61782D71756575652D73697A65 00000003 313030")


def test_qa_over_the_whole_int64_range(single_node: NodeProcess) -> None:
    conn = connect(single_node)
    create(conn, "wide", qa=(-(2**63), 2**63 - 1))
    for priority in (2**63 - 1, -(2**63), 0):
        assert conn.enqueue("wide", priority, b"") == wire.Ok()
    taken = [conn.dequeue("wide").response.record.priority for _ in range(3)]  # type: ignore[union-attr]
    assert taken == [-(2**63), 0, 2**63 - 1]


def test_a_client_that_sends_ahead_gets_every_answer_in_order(single_node: NodeProcess) -> None:
    """The final answer of a write is written by the node loop while the session reads on: a packet that
    arrives before that answer is handled only after it, so answers never overtake each other."""
    conn = connect(single_node)
    exchange(conn, "43 51 05 6168656164 00000001 00000002 FFFFFFFF 00", "6B")  # heap "ahead", at most 2
    enqueue_a = "43 45 05 6168656164 0000000000000001 00000001 61"
    enqueue_b = "43 45 05 6168656164 0000000000000002 00000001 62"
    count = "43 43 05 6168656164"
    exchange(conn, enqueue_a, "6B")
    exchange(conn, "4B" + enqueue_b, "6B 6B")  # a's final Ok, then b's first-phase Ok
    exchange(conn, "4B" + count, "6B 63 63 00000002")  # b's final Ok, then the count that includes it
    exchange(conn, enqueue_a, "6B")
    conn.send(h("4B" + count))  # the queue is full: a policy violation, then the count
    violation = conn.read()
    assert isinstance(violation, wire.CommandResponse) and isinstance(violation.response, wire.PolicyViolationResponse)
    assert conn.read_bytes(6).hex() == h("63 63 00000002").hex()
    dequeue = "43 44 05 6168656164 00000000"
    record_a = "63 64 01 0000000000000001 0000000000000001 00000001 61"
    exchange(conn, dequeue, record_a)
    exchange(conn, "4B" + count, "6B 63 63 00000001")  # the removal's Ok, then the count without it
