"""The Dequeue stream: request -> record (reserved) or none, then ack (removal committed) or nack (record
back). A record held by a stream comes back whenever the stream ends without its ack: completion,
cancellation, a protocol violation, the server stopping (spec §6.4 DEFECT fixed)."""

from __future__ import annotations

import time
from pathlib import Path

import gevent
import grpc
import pytest

from tests.grpc.conftest import Harness, dequeue, dequeue_ack, pb, wait_until

pytestmark = pytest.mark.timeout(60)

NO_RECORD = pb.DequeueResponse(success=pb.DequeueResponse.DequeueResponseData())


def record_of(answer: pb.DequeueResponse) -> tuple[int, bytes]:
    assert answer.WhichOneof("result") == "success" and answer.success.HasField("record"), answer
    return answer.success.record.priority, answer.success.record.payload


def fill(harness: Harness, queue: str, *records: tuple[int, bytes]) -> None:
    for priority, payload in records:
        answer = harness.enqueue(queue, priority, payload)
        assert answer.WhichOneof("result") == "data" and not answer.data.HasField("policy_violation"), answer


def test_ack_removes_the_record_for_good(harness: Harness) -> None:
    fill(harness, "", (2, b"b"), (1, b"a"))
    stream = harness.dequeue_stream()
    assert record_of(stream.exchange(dequeue(""))) == (1, b"a")
    assert harness.count("") == 1  # a reserved record is not counted
    assert stream.exchange(dequeue_ack(True)) == NO_RECORD
    assert record_of(stream.exchange(dequeue(""))) == (2, b"b")
    assert stream.exchange(dequeue_ack(True)) == NO_RECORD
    assert stream.exchange(dequeue("")) == NO_RECORD  # empty, no wait
    stream.done_writing()
    assert stream.status()[0] is grpc.StatusCode.OK
    assert harness.count("") == 0


def test_nack_puts_the_record_back_for_the_next_consumer(harness: Harness) -> None:
    fill(harness, "", (1, b"a"))
    stream = harness.dequeue_stream()
    assert record_of(stream.exchange(dequeue(""))) == (1, b"a")
    assert stream.exchange(dequeue_ack(False)) == NO_RECORD
    assert harness.count("") == 1
    assert record_of(stream.exchange(dequeue(""))) == (1, b"a")  # the same record again
    assert stream.exchange(dequeue_ack(True)) == NO_RECORD
    stream.done_writing()
    assert stream.status()[0] is grpc.StatusCode.OK
    assert harness.count("") == 0


def test_a_timeout_without_a_record_answers_no_record_after_the_wait(harness: Harness) -> None:
    stream = harness.dequeue_stream()
    started = time.monotonic()
    assert stream.exchange(dequeue("", 200)) == NO_RECORD
    assert time.monotonic() - started >= 0.2
    stream.done_writing()
    assert stream.status()[0] is grpc.StatusCode.OK
    assert harness.waiting_consumers("") == 0


@pytest.mark.parametrize("timeout_ms", [10_000, -1])
def test_a_waiting_dequeue_is_woken_by_an_enqueue(harness: Harness, timeout_ms: int) -> None:
    stream = harness.dequeue_stream()
    stream.send(dequeue("", timeout_ms))
    wait_until(lambda: harness.waiting_consumers("") == 1, what="the dequeue to wait")
    started = time.monotonic()
    fill(harness, "", (3, b"late"))
    assert record_of(stream.receive()) == (3, b"late")
    assert time.monotonic() - started < 5
    assert stream.exchange(dequeue_ack(True)) == NO_RECORD
    stream.done_writing()
    assert stream.status()[0] is grpc.StatusCode.OK
    assert harness.count("") == 0


def test_a_waiting_dequeue_is_woken_by_a_nack_elsewhere(harness: Harness) -> None:
    fill(harness, "", (1, b"only"))
    holder, waiter = harness.dequeue_stream(), harness.dequeue_stream()
    assert record_of(holder.exchange(dequeue(""))) == (1, b"only")
    waiter.send(dequeue("", -1))
    wait_until(lambda: harness.waiting_consumers("") == 1, what="the second dequeue to wait")
    assert holder.exchange(dequeue_ack(False)) == NO_RECORD
    assert record_of(waiter.receive()) == (1, b"only")
    waiter.exchange(dequeue_ack(True))
    for stream in (holder, waiter):
        stream.done_writing()
        assert stream.status()[0] is grpc.StatusCode.OK
    assert harness.count("") == 0


def test_completing_the_stream_while_holding_a_record_puts_it_back(harness: Harness) -> None:
    fill(harness, "", (1, b"a"))
    stream = harness.dequeue_stream()
    assert record_of(stream.exchange(dequeue(""))) == (1, b"a")
    stream.done_writing()
    assert stream.status()[0] is grpc.StatusCode.OK
    wait_until(lambda: harness.count("") == 1, what="the record to come back")


def test_cancelling_the_stream_while_holding_a_record_puts_it_back(harness: Harness) -> None:
    fill(harness, "", (1, b"a"), (2, b"b"))
    stream = harness.dequeue_stream()
    assert record_of(stream.exchange(dequeue(""))) == (1, b"a")
    stream.call.cancel()
    wait_until(lambda: harness.count("") == 2, what="the record to come back")
    other = harness.dequeue_stream()
    assert record_of(other.exchange(dequeue(""))) == (1, b"a")  # back in its place by priority
    other.exchange(dequeue_ack(True))
    other.done_writing()
    assert other.status()[0] is grpc.StatusCode.OK


def test_cancelling_a_waiting_dequeue_ends_its_wait_and_takes_nothing(harness: Harness) -> None:
    stream = harness.dequeue_stream()
    stream.send(dequeue("", -1))
    wait_until(lambda: harness.waiting_consumers("") == 1, what="the dequeue to wait")
    stream.call.cancel()
    wait_until(lambda: harness.waiting_consumers("") == 0, what="the wait to end")
    fill(harness, "", (1, b"kept"))
    assert harness.count("") == 1  # not swallowed by the cancelled stream


def test_a_deadline_while_waiting_takes_nothing(harness: Harness) -> None:
    call = harness.stub.Dequeue(iter([dequeue("", -1)]), timeout=0.3)
    with pytest.raises(grpc.RpcError) as raised:
        list(call)
    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    wait_until(lambda: harness.waiting_consumers("") == 0, what="the wait to end")
    fill(harness, "", (1, b"kept"))
    assert harness.count("") == 1


def test_a_protocol_violation_while_holding_a_record_puts_it_back(harness: Harness) -> None:
    fill(harness, "", (1, b"a"))
    stream = harness.dequeue_stream()
    assert record_of(stream.exchange(dequeue(""))) == (1, b"a")
    stream.send(dequeue(""))
    assert stream.status() == (grpc.StatusCode.FAILED_PRECONDITION,
                               "expected ack for the record just received, got request")
    wait_until(lambda: harness.count("") == 1, what="the record to come back")


@pytest.mark.parametrize("first", [dequeue_ack(True), pb.DequeueRequest()])
def test_anything_but_a_request_to_start_a_round_is_a_failed_precondition(harness: Harness, first: object) -> None:
    stream = harness.dequeue_stream()
    stream.send(first)
    code, details = stream.status()
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert details.startswith("expected request (queue and timeout) to start a dequeue, got ")


def test_a_timeout_below_minus_one_is_a_failed_precondition(harness: Harness) -> None:
    stream = harness.dequeue_stream()
    stream.send(dequeue("", -2))
    code, details = stream.status()
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert details.startswith("timeout -2 ms is invalid: -1 waits without limit, 0 does not wait")


def test_a_missing_queue_is_an_error_not_an_empty_answer(harness: Harness) -> None:
    stream = harness.dequeue_stream()
    answer = stream.exchange(dequeue("nowhere", 1000))
    assert answer.error.code == pb.QueueDoesNotExist
    assert answer.error.message == "queue 'nowhere' does not exist"
    answer = stream.exchange(dequeue("bad name"))
    assert answer.error.code == pb.InvalidQueueName
    stream.done_writing()
    assert stream.status()[0] is grpc.StatusCode.OK


def test_acking_a_record_of_a_queue_deleted_meanwhile_succeeds(harness: Harness) -> None:
    harness.create("temp")
    fill(harness, "temp", (1, b"a"))
    stream = harness.dequeue_stream()
    assert record_of(stream.exchange(dequeue("temp"))) == (1, b"a")
    assert harness.stub.DeleteQueue(pb.DeleteQueueRequest(queue="temp")).WhichOneof("result") == "data"
    assert stream.exchange(dequeue_ack(True)) == NO_RECORD
    stream.done_writing()
    assert stream.status()[0] is grpc.StatusCode.OK


def test_many_consumers_each_get_a_distinct_record(harness: Harness) -> None:
    fill(harness, "", *((i, b"%d" % i) for i in range(8)))

    def consume() -> tuple[int, bytes]:
        stream = harness.dequeue_stream()
        got = record_of(stream.exchange(dequeue("", 5000)))
        stream.exchange(dequeue_ack(True))
        stream.done_writing()
        assert stream.status()[0] is grpc.StatusCode.OK
        return got

    consumers = [gevent.spawn(consume) for _ in range(8)]
    gevent.joinall(consumers, timeout=30, raise_error=True)
    assert sorted(c.value for c in consumers) == [(i, b"%d" % i) for i in range(8)]
    assert harness.count("") == 0


def test_a_hundred_streams_wait_at_once_without_exhausting_native_threads(tmp_path: Path) -> None:
    harness = Harness(tmp_path, max_workers=128).start()
    try:
        streams = [harness.dequeue_stream() for _ in range(100)]
        for stream in streams:
            stream.send(dequeue("", -1))
        wait_until(lambda: harness.waiting_consumers("") == 100, what="every stream to wait")
        assert harness.count("") == 0  # unary calls are still served meanwhile
        fill(harness, "", *((i, b"") for i in range(100)))
        got = sorted(record_of(stream.receive())[0] for stream in streams)
        assert got == list(range(100))
        for stream in streams:
            assert stream.exchange(dequeue_ack(True)) == NO_RECORD
            stream.done_writing()
            assert stream.status()[0] is grpc.StatusCode.OK
        assert harness.count("") == 0
    finally:
        harness.stop()
