"""Not the leader, commits that time out, a stopping node or server, malformed bytes, too many calls: each
gets a clear answer and the server keeps serving everyone else."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import grpc
import pytest

from tests.grpc.conftest import (
    CALL_TIMEOUT,
    GrpcServer,
    Harness,
    data,
    dequeue,
    dequeue_ack,
    enqueue_ack,
    pb,
    wait_until,
)
from tests.support.stalls import stall_appends

pytestmark = pytest.mark.timeout(60)

RECEIVED = pb.EnqueueResponse(data=pb.EnqueueResponse.EnqueueResponseData())
NOT_LEADER = pb.NotLeaderResponse(leader_id=-1)


def test_a_follower_answers_not_leader_to_every_rpc(follower: Harness) -> None:
    stub = follower.stub
    assert stub.GetCount(pb.GetCountRequest(queue="")).not_leader == NOT_LEADER
    assert stub.ListQueues(pb.ListQueuesRequest()).not_leader == NOT_LEADER
    assert stub.DeleteQueue(pb.DeleteQueueRequest(queue="q")).not_leader == NOT_LEADER
    assert stub.CreateQueue(pb.CreateQueueRequest(queue="q")).not_leader == NOT_LEADER
    enqueue = follower.enqueue_stream()
    assert enqueue.exchange(data("", 1, b"x")).not_leader == NOT_LEADER  # before the ack: safe to retry
    enqueue.send(enqueue_ack(True))  # the round ended with not_leader: a new one must start with data
    assert enqueue.status()[0] is grpc.StatusCode.FAILED_PRECONDITION
    dequeue_stream = follower.dequeue_stream()
    assert dequeue_stream.exchange(dequeue("", -1)).not_leader == NOT_LEADER
    assert dequeue_stream.exchange(dequeue("", 0)).not_leader == NOT_LEADER  # the stream goes on
    dequeue_stream.done_writing()
    assert dequeue_stream.status()[0] is grpc.StatusCode.OK


def test_invalid_names_are_reported_before_not_leader(follower: Harness) -> None:
    answer = follower.enqueue_stream().exchange(data("bad name", 1, b"x"))
    assert answer.error.code == pb.InvalidQueueName
    assert follower.stub.CreateQueue(pb.CreateQueueRequest(queue="bad name")).error.code == pb.InvalidQueueName


def queue_count(harness: Harness, name: str) -> int:
    """The queue's count read directly from the node (for when no RPC can ask)."""
    queue = harness.node.manager.get(name)
    assert queue is not None
    return queue.count


@pytest.fixture
def slow_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    harness = Harness(tmp_path, request_timeout=0.3).start()
    harness.create("q")
    harness.enqueue("q", 1, b"held")
    stall_appends(harness.storage, 0.8, monkeypatch)
    yield harness
    harness.stop()


def test_a_commit_timeout_on_a_unary_call_is_unknown_outcome_unknown(slow_commits: Harness) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        slow_commits.stub.CreateQueue(pb.CreateQueueRequest(queue="late"), timeout=CALL_TIMEOUT)
    assert raised.value.code() is grpc.StatusCode.UNKNOWN
    assert raised.value.details().startswith("outcome unknown (not committed within")


def test_a_commit_timeout_on_an_enqueue_ack_is_unknown_and_the_record_may_commit(slow_commits: Harness) -> None:
    harness = slow_commits
    stream = harness.enqueue_stream()
    assert stream.exchange(data("q", 2, b"late")) == RECEIVED
    stream.send(enqueue_ack(True))
    code, details = stream.status()
    assert code is grpc.StatusCode.UNKNOWN
    assert "may or may not take effect" in details
    wait_until(lambda: queue_count(harness, "q") == 2, what="the late record to commit anyway")


def test_a_commit_timeout_on_a_dequeue_ack_puts_the_record_back_first(slow_commits: Harness) -> None:
    stream = slow_commits.dequeue_stream()
    assert stream.exchange(dequeue("q")).success.record.payload == b"held"
    stream.send(dequeue_ack(True))
    code, details = stream.status()
    assert code is grpc.StatusCode.UNKNOWN
    assert details.startswith("outcome unknown")


def test_a_stopping_node_ends_calls_with_unavailable(harness: Harness) -> None:
    harness.node.stop()
    with pytest.raises(grpc.RpcError) as raised:
        harness.stub.GetCount(pb.GetCountRequest(queue=""), timeout=CALL_TIMEOUT)
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE  # nothing was done: safe to retry elsewhere
    assert raised.value.details() == "the node is stopping; nothing was done: retry on another node"


@pytest.fixture
def failing_disk(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> Harness:
    """The next log append fails: the node loop ends with the entries it had proposed (and, in a cluster,
    already sent to the followers) uncommitted here."""
    harness.create("q")
    harness.enqueue("q", 1, b"held")

    def broken(entries: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(harness.storage, "append", broken)
    return harness


def test_a_write_ended_by_the_node_stopping_after_proposing_is_unknown_not_retryable(failing_disk: Harness) -> None:
    stream = failing_disk.enqueue_stream()
    assert stream.exchange(data("q", 2, b"maybe")) == RECEIVED
    stream.send(enqueue_ack(True))
    code, details = stream.status()
    assert code is grpc.StatusCode.UNKNOWN, details  # not UNAVAILABLE: a retry could insert it twice
    assert details.startswith("outcome unknown (storage failed: ") and "may or may not take effect" in details


def test_an_ack_ended_by_the_node_stopping_after_proposing_is_unknown(failing_disk: Harness) -> None:
    stream = failing_disk.dequeue_stream()
    assert stream.exchange(dequeue("q")).success.record.payload == b"held"
    stream.send(dequeue_ack(True))
    code, details = stream.status()
    assert code is grpc.StatusCode.UNKNOWN, details
    assert "may or may not take effect" in details
    assert queue_count(failing_disk, "q") == 1  # put back here; a next leader may still remove it


def test_stopping_the_server_puts_back_a_record_a_stream_holds(tmp_path: Path) -> None:
    harness = Harness(tmp_path).start()
    try:
        harness.enqueue("", 1, b"held")
        stream = harness.dequeue_stream()
        assert stream.exchange(dequeue("")).success.record.payload == b"held"
        harness.server.stop(0.1)
        assert stream.status()[0] is not grpc.StatusCode.OK
        wait_until(lambda: queue_count(harness, "") == 1, what="the record to come back")
    finally:
        harness.node.stop()
        harness.storage.close()


def raw_unary(harness: Harness, method: str) -> grpc.UnaryUnaryMultiCallable:
    assert harness.channel is not None
    return harness.channel.unary_unary(f"/taskflux.TaskFluxService/{method}")  # bytes in, bytes out


@pytest.mark.parametrize("payload", [
    b"\x0a\x02\xff\xfe",  # field 1 (queue) with invalid UTF-8
    b"\xff\xff\xff\xff",  # not protobuf at all
    b"\x0a\xff\xff\xff\x7f",  # a string whose length runs far past the message
])
def test_malformed_bytes_fail_that_call_only(harness: Harness, payload: bytes) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        raw_unary(harness, "GetCount")(payload, timeout=CALL_TIMEOUT)
    assert raised.value.code() is grpc.StatusCode.INTERNAL
    assert harness.count("") == 0  # the server keeps serving


def test_an_unknown_method_is_unimplemented(harness: Harness) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        raw_unary(harness, "Purge")(b"", timeout=CALL_TIMEOUT)
    assert raised.value.code() is grpc.StatusCode.UNIMPLEMENTED


def counts(harness: Harness) -> bool:
    """True once a GetCount is served; False while it is refused for lack of a worker."""
    try:
        return harness.count("") == 0
    except grpc.RpcError as refused:
        assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        return False


def test_calls_beyond_the_worker_limit_are_refused_at_once_when_every_call_is_being_served(tmp_path: Path) -> None:
    harness = Harness(tmp_path, max_workers=2).start()
    try:
        streams = [harness.dequeue_stream() for _ in range(2)]
        for stream in streams:  # each waits on the node for a record: being served, not evictable
            stream.send(dequeue("", -1))
        wait_until(lambda: harness.waiting_consumers("") == 2, what="both streams to wait for a record")
        with pytest.raises(grpc.RpcError) as raised:
            harness.stub.GetCount(pb.GetCountRequest(queue=""), timeout=CALL_TIMEOUT)
        assert raised.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        streams[0].call.cancel()
        wait_until(lambda: counts(harness), what="the cancelled stream's worker to be free")
    finally:
        harness.stop()


def test_a_second_server_on_the_same_port_fails_to_start(harness: Harness, tmp_path: Path) -> None:
    port = harness.server.address.rsplit(":", 1)[1]
    second = GrpcServer(harness.service, harness.node, dataclasses.replace(harness.settings, listen_port=int(port)))
    with pytest.raises(OSError, match=r"cannot listen for gRPC on 127\.0\.0\.1"):
        second.start()
    second.stop(0)
