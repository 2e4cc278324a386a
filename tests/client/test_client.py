"""The client library against scripted fake nodes on loopback: handshake, every operation, leader discovery and
NotLeader following, reconnection, deadlines, and the rule that a possibly executed write is never retried."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from taskflux.client import (
    ClusterMetadata,
    HandshakeRefused,
    InvalidPriorityRange,
    InvalidQueueName,
    MaxPayloadSizeExceeded,
    MaxQueueSizeExceeded,
    OutcomeUnknown,
    PolicyViolation,
    PriorityOutOfRange,
    PriorityRangeNotSpecified,
    QueueAlreadyExists,
    QueueDoesNotExist,
    QueueSummary,
    ServerError,
    TaskFluxClient,
    TaskFluxConnectionError,
    TaskFluxProtocolError,
    TaskFluxTimeoutError,
    UnknownPriorityQueueCode,
)
from taskflux.client.connection import parse_endpoint
from taskflux.client.errors import ERROR_CLASSES, POLICY_CLASSES, server_error
from taskflux.domain.errors import ErrorCode, Implementation, PolicyCode
from taskflux.wire.client_protocol import (
    CountCommand,
    CreateQueueCommand,
    DeleteQueueCommand,
    DequeueCommand,
    EnqueueCommand,
)
from tests.client.fake_node import FakeCluster, FakeNode, wait_until

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    fake = FakeCluster()
    yield fake
    fake.close()


@pytest.fixture
def node(cluster: FakeCluster) -> FakeNode:
    return cluster.add_node()


@pytest.fixture
def client(node: FakeNode) -> Iterator[TaskFluxClient]:
    with TaskFluxClient([node.endpoint], timeout=3.0) as c:
        yield c


def free_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- handshake and basic operations -----------------------------------------------------------------------------

def test_handshake_bytes_then_metadata(client: TaskFluxClient, node: FakeNode) -> None:
    assert client.count() == 0
    assert bytes(node.raw[0]) == bytes.fromhex("414E 42 00000001 00000001 00000000")  # 1.1, refused by a 1.0 node
    assert bytes(node.raw[1][:15]) == bytes.fromhex("414E 42 00000001 00000000 00000000")
    assert node.raw[1][15] == 0x4D  # leader discovery: ClusterMetadataRequest
    assert bytes(node.raw[1][16:]) == bytes.fromhex("43 43 00")


def test_version_refused(node: FakeNode) -> None:
    node.refuse_version = True
    with TaskFluxClient([node.endpoint], timeout=2.0) as c, pytest.raises(HandshakeRefused, match="version"):
        c.count()


def test_enqueue_dequeue_ack(client: TaskFluxClient, node: FakeNode) -> None:
    client.enqueue("", 5, b"hello")
    client.enqueue("", 1, b"urgent")
    assert client.count("") == 2
    record = client.dequeue("")
    assert record is not None
    assert (record.id, record.priority, record.payload, record.queue) == (2, 1, b"urgent", "")
    assert client.count() == 1  # handed out, not counted
    record.ack()
    assert record.settled
    assert client.count() == 1
    second = client.dequeue()
    assert second is not None and second.payload == b"hello"
    second.nack()
    assert client.count() == 1
    assert client.dequeue() is not None  # left unsettled: the server puts it back when the connection closes


def test_several_records_held_at_once(client: TaskFluxClient) -> None:
    for i in range(3):
        client.enqueue("", i, str(i).encode())
    records = [client.dequeue() for _ in range(3)]
    assert [r.payload for r in records if r is not None] == [b"0", b"1", b"2"]
    assert client.count() == 0
    for record in records:
        assert record is not None
        record.nack()
    assert client.count() == 3


def test_dequeue_empty_returns_none(client: TaskFluxClient) -> None:
    assert client.dequeue() is None
    assert client.dequeue("", wait=0.05) is None


def test_dequeue_waits_for_an_enqueue(client: TaskFluxClient, node: FakeNode) -> None:
    result: list[object] = []

    def consumer() -> None:
        with TaskFluxClient([node.endpoint], timeout=3.0) as other:
            result.append(other.dequeue("", wait=5.0))

    thread = threading.Thread(target=consumer)
    thread.start()
    wait_until(lambda: node.waiters == 1)
    client.enqueue("", 7, b"late")
    thread.join(10)
    record = result[0]
    assert record is not None and record.payload == b"late"  # type: ignore[attr-defined]


def test_consume_acks_on_success_and_nacks_on_error(client: TaskFluxClient) -> None:
    client.enqueue("", 1, b"a")
    with client.consume() as record:
        assert record is not None and record.payload == b"a"
    assert client.count() == 0
    assert client.dequeue() is None

    client.enqueue("", 1, b"b")
    with pytest.raises(RuntimeError), client.consume() as record:
        assert record is not None
        raise RuntimeError("processing failed")
    assert client.count() == 1

    with client.consume() as record:
        assert record is not None and record.payload == b"b"
    with client.consume(wait=0.01) as record:
        assert record is None


def test_double_ack_is_refused(client: TaskFluxClient) -> None:
    client.enqueue("", 1, b"a")
    record = client.dequeue()
    assert record is not None
    record.ack()
    with pytest.raises(Exception, match="already acked"):
        record.ack()


def test_create_list_delete(client: TaskFluxClient) -> None:
    client.create_queue("jobs", "h4", max_queue_size=100)
    client.create_queue("ranged", Implementation.QA, max_payload_size=65536, priority_range=(-10, 10))
    client.enqueue("jobs", 3, b"x")
    queues = {q.name: q for q in client.list_queues()}
    assert queues["jobs"] == QueueSummary("jobs", 1, 100, None, None, {"max-queue-size": "100"})
    assert queues["ranged"] == QueueSummary(
        "ranged", 0, None, 65536, (-10, 10), {"max-payload-size": "65536", "priority-range": "-10 10"}
    )
    assert queues[""].count == 0
    client.delete_queue("jobs")
    assert "jobs" not in {q.name for q in client.list_queues()}


def test_create_sends_the_spec_bytes(client: TaskFluxClient, node: FakeNode) -> None:
    client.create_queue("jobs", max_queue_size=100)
    assert bytes.fromhex("43 51 04 6A6F6273 00000001 00000064 FFFFFFFF 00") in bytes(node.raw[-1])


# --- errors -----------------------------------------------------------------------------------------------------

def test_business_errors(client: TaskFluxClient) -> None:
    with pytest.raises(QueueDoesNotExist):
        client.count("missing")
    with pytest.raises(QueueDoesNotExist):
        client.enqueue("missing", 1, b"")
    with pytest.raises(QueueDoesNotExist):
        client.dequeue("missing")
    with pytest.raises(QueueDoesNotExist):
        client.delete_queue("missing")
    with pytest.raises(QueueAlreadyExists):
        client.create_queue("")
    with pytest.raises(InvalidQueueName):
        client.enqueue("has space", 1, b"")
    with pytest.raises(InvalidQueueName):
        client.create_queue("bad name")
    with pytest.raises(PriorityRangeNotSpecified):
        client.create_queue("q", "qa")
    with pytest.raises(InvalidPriorityRange):
        client.create_queue("q", priority_range=(5, 1))


def test_local_refusals_send_nothing(client: TaskFluxClient, node: FakeNode) -> None:
    with pytest.raises(InvalidQueueName):
        client.count("x" * 256)
    with pytest.raises(InvalidQueueName):
        client.count("ключ")
    with pytest.raises(ValueError):
        client.enqueue("", 2**63, b"")
    with pytest.raises(TypeError):
        client.enqueue("", 1, "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="h4"):
        client.create_queue("q", "heap")
    small = TaskFluxClient([node.endpoint], max_payload_bytes=4)
    with pytest.raises(ValueError, match="max_payload_bytes=4"):
        small.enqueue("", 1, b"12345")
    small.close()
    assert node.commands() == []


def test_policy_violations_carry_the_limit(client: TaskFluxClient) -> None:
    client.create_queue("small", max_queue_size=1, max_payload_size=3, priority_range=(0, 9))
    with pytest.raises(PriorityOutOfRange) as out_of_range:
        client.enqueue("small", 10, b"")
    assert out_of_range.value.priority_range == (0, 9)
    with pytest.raises(MaxPayloadSizeExceeded) as too_big:
        client.enqueue("small", 1, b"four")
    assert too_big.value.max_payload_size == 3
    client.enqueue("small", 1, b"ok")
    with pytest.raises(MaxQueueSizeExceeded) as full:
        client.enqueue("small", 1, b"no")
    assert full.value.max_queue_size == 1
    assert isinstance(full.value, PolicyViolation)
    assert "full" in str(full.value)


def test_error_tables_cover_every_code() -> None:
    assert set(ERROR_CLASSES) == set(ErrorCode)
    assert set(POLICY_CLASSES) == set(PolicyCode)
    assert isinstance(server_error(8), UnknownPriorityQueueCode)
    unknown = server_error(42, "new")
    assert type(unknown) is ServerError and unknown.code == 42 and "new" in str(unknown)


def test_endpoint_parsing() -> None:
    assert parse_endpoint("localhost:2602") == ("localhost", 2602)
    assert parse_endpoint("[::1]:2602") == ("::1", 2602)
    for bad in ("localhost", ":2602", "host:0", "host:x", "::1:2602", "host:70000"):
        with pytest.raises(ValueError):
            parse_endpoint(bad)
    with pytest.raises(ValueError):
        TaskFluxClient([])
    with pytest.raises(ValueError):
        TaskFluxClient(["nohost"])


# --- leader discovery and NotLeader -----------------------------------------------------------------------------

def test_discovers_the_leader_through_metadata(cluster: FakeCluster) -> None:
    follower, leader = cluster.add_node(), cluster.add_node()
    cluster.leader_id = 1
    with TaskFluxClient([follower.endpoint], timeout=3.0) as c:
        c.enqueue("", 1, b"x")
        assert follower.commands() == []
        assert len(leader.commands(EnqueueCommand)) == 1
        assert c.cluster_metadata() == ClusterMetadata((follower.endpoint, leader.endpoint), 1, 1)


def test_follows_not_leader_after_a_leader_change(cluster: FakeCluster) -> None:
    first, second = cluster.add_node(), cluster.add_node()
    with TaskFluxClient([first.endpoint, second.endpoint], timeout=3.0) as c:
        assert c.count() == 0
        cluster.leader_id = 1
        assert c.count() == 0
        assert len(first.commands(CountCommand)) == 2  # the second answered NotLeader(1)
        assert len(second.commands(CountCommand)) == 1


def test_enqueue_refused_after_the_ack_by_a_follower_is_retried_on_the_leader(cluster: FakeCluster) -> None:
    first, second = cluster.add_node(), cluster.add_node()
    first.not_leader_after_ack = True
    with TaskFluxClient([first.endpoint, second.endpoint], timeout=3.0) as c:
        c.count()
        cluster.leader_id = 1
        c.enqueue("", 4, b"once")
        assert len(first.commands(EnqueueCommand)) == 1
        assert len(second.commands(EnqueueCommand)) == 1
        assert c.count() == 1


def test_metadata_endpoints_unusable_falls_back_to_configured(cluster: FakeCluster) -> None:
    follower, leader = cluster.add_node(), cluster.add_node()
    cluster.leader_id = 1
    cluster.reported_endpoints = ["127.0.0.1:1", "bogus endpoint"]
    with TaskFluxClient([follower.endpoint, leader.endpoint], timeout=3.0) as c:
        assert c.count() == 0
        assert len(leader.commands(CountCommand)) == 1


def test_waits_for_an_election(cluster: FakeCluster) -> None:
    node = cluster.add_node()
    cluster.leader_id = None
    with TaskFluxClient([node.endpoint], timeout=5.0) as c:
        result: list[int] = []
        thread = threading.Thread(target=lambda: result.append(c.count()))
        thread.start()
        wait_until(lambda: node.connections >= 2)  # it is asking again
        cluster.leader_id = 0
        thread.join(10)
        assert result == [0]


def test_no_leader_at_all_times_out(cluster: FakeCluster) -> None:
    node = cluster.add_node()
    cluster.leader_id = None
    start = time.monotonic()
    with TaskFluxClient([node.endpoint], timeout=0.5) as c, pytest.raises(TaskFluxTimeoutError, match="no leader"):
        c.count()
    assert time.monotonic() - start < 3.0


# --- connection failures, reconnection, deadlines ---------------------------------------------------------------

def test_unreachable_cluster_raises_connection_error_within_the_deadline() -> None:
    start = time.monotonic()
    with TaskFluxClient([f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"], timeout=0.5) as c, \
            pytest.raises(TaskFluxConnectionError, match="no leader reachable"):
        c.count()
    assert time.monotonic() - start < 3.0


def test_reconnects_after_a_dropped_connection(client: TaskFluxClient, node: FakeNode) -> None:
    assert client.count() == 0
    node.drop_connections()
    assert client.count() == 0
    assert node.connections == 3  # the first 1.1 handshake (refused by this 1.0 node), then one each


def test_create_after_the_server_closed_the_idle_connection_is_not_ambiguous(
    client: TaskFluxClient, node: FakeNode
) -> None:
    client.count()
    node.drop_connections()
    wait_until(lambda: not node._open)
    client.create_queue("fresh")  # the dead connection is noticed before the request is sent
    assert len(node.commands(CreateQueueCommand)) == 1


def test_a_stalled_node_times_out(client: TaskFluxClient, node: FakeNode) -> None:
    client.count()
    node.stall = True
    client.timeout = 0.5
    start = time.monotonic()
    with pytest.raises(TaskFluxTimeoutError):
        client.count()
    elapsed = time.monotonic() - start
    assert 0.45 < elapsed < 3.0


def test_dequeue_deadline_includes_the_wait(client: TaskFluxClient, node: FakeNode) -> None:
    client.timeout = 0.3
    assert client.dequeue("", wait=0.6) is None  # the server waits 0.6 s > timeout: still no timeout error


def test_connection_lost_before_the_request_is_read_is_retried(client: TaskFluxClient, node: FakeNode) -> None:
    node.drop_on_command = EnqueueCommand
    client.enqueue("", 1, b"x")
    assert len(node.commands(EnqueueCommand)) == 2
    assert client.count() == 1


def test_reads_are_retried_when_the_answer_is_lost(client: TaskFluxClient, node: FakeNode) -> None:
    node.drop_before_answer = CountCommand
    assert client.count() == 0
    assert len(node.commands(CountCommand)) == 2


def test_unacked_record_comes_back_when_its_connection_breaks(client: TaskFluxClient, node: FakeNode) -> None:
    client.enqueue("", 1, b"x")
    record = client.dequeue()
    assert record is not None
    node.drop_connections()  # the record's connection breaks before its ack: the server puts it back
    wait_until(lambda: client.count() == 1)
    node.drop_on_command = DequeueCommand  # a dequeue whose request is lost is simply retried
    again = client.dequeue()
    assert again is not None and again.id == record.id
    again.ack()
    assert len(node.commands(DequeueCommand)) == 3


# --- no blind retries -------------------------------------------------------------------------------------------

def test_enqueue_whose_final_answer_is_lost_is_outcome_unknown(client: TaskFluxClient, node: FakeNode) -> None:
    node.drop_after_ack = True
    with pytest.raises(OutcomeUnknown, match="may or may not"):
        client.enqueue("", 1, b"maybe")
    assert len(node.commands(EnqueueCommand)) == 1  # not retried
    assert client.count() == 1  # here it did take effect


def test_enqueue_timing_out_after_the_ack_is_outcome_unknown(client: TaskFluxClient, node: FakeNode) -> None:
    client.timeout = 0.5
    node.silent_after_ack = True
    with pytest.raises(OutcomeUnknown, match="timed out"):
        client.enqueue("", 1, b"slow")
    assert len(node.commands(EnqueueCommand)) == 1


def test_create_whose_answer_is_lost_is_outcome_unknown(client: TaskFluxClient, node: FakeNode) -> None:
    node.drop_before_answer = CreateQueueCommand
    with pytest.raises(OutcomeUnknown):
        client.create_queue("maybe")
    assert len(node.commands(CreateQueueCommand)) == 1


def test_delete_whose_answer_is_lost_is_outcome_unknown(client: TaskFluxClient, node: FakeNode) -> None:
    client.create_queue("gone")
    node.drop_before_answer = DeleteQueueCommand
    with pytest.raises(OutcomeUnknown):
        client.delete_queue("gone")
    assert len(node.commands(DeleteQueueCommand)) == 1


def test_ack_whose_answer_is_lost_is_outcome_unknown(client: TaskFluxClient, node: FakeNode) -> None:
    client.enqueue("", 1, b"x")
    record = client.dequeue()
    assert record is not None
    node.stall = True
    with pytest.raises(OutcomeUnknown):
        record.ack(timeout=0.3)


def test_create_refused_after_a_deposed_leader_executed_it_is_outcome_unknown(cluster: FakeCluster) -> None:
    first, second = cluster.add_node(), cluster.add_node()
    first.lose_leadership_on = (CreateQueueCommand, 1)
    with TaskFluxClient([first.endpoint, second.endpoint], timeout=3.0) as c:
        with pytest.raises(OutcomeUnknown, match="earlier attempt"):
            c.create_queue("q")
        assert len(second.commands(CreateQueueCommand)) == 1
        with pytest.raises(QueueAlreadyExists):  # a plain conflict stays a plain conflict
            c.create_queue("q")


def test_delete_after_not_leader_is_retried_on_the_new_leader(cluster: FakeCluster) -> None:
    first, second = cluster.add_node(), cluster.add_node()
    with TaskFluxClient([first.endpoint, second.endpoint], timeout=3.0) as c:
        c.create_queue("q")
        cluster.leader_id = 1
        c.delete_queue("q")  # NotLeader from the first node before executing: retried, no ambiguity
        assert len(second.commands(DeleteQueueCommand)) == 1


def test_an_answer_that_makes_no_sense_closes_the_connection(client: TaskFluxClient, node: FakeNode) -> None:
    client.count()
    node.answer_count_wrongly = True  # the second count gets an empty dequeue answer, the third Ok
    with pytest.raises(TaskFluxProtocolError, match="unexpected response"):
        client.count()
    with pytest.raises(TaskFluxProtocolError, match="unexpected answer"):
        client.count()
    node.answer_count_wrongly = False
    assert client.count() == 0
    assert node.connections == 4  # a confused connection is never reused (the first one: 1.1, refused)


def test_cluster_metadata_is_answered_without_a_leader(cluster: FakeCluster) -> None:
    node = cluster.add_node()
    cluster.leader_id = None
    with TaskFluxClient([node.endpoint], timeout=3.0) as c:
        assert c.cluster_metadata() == ClusterMetadata((node.endpoint,), None, 0)
        node.drop_connections()
        assert c.cluster_metadata().responding_id == 0  # reconnects
