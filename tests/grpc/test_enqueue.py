"""The Enqueue stream: rounds of data -> data{} "received", then ack -> the committed outcome (spec §6.4,
with the original's inverted ack check fixed)."""

from __future__ import annotations

import grpc
import pytest

from tests.grpc.conftest import MAX_PAYLOAD_BYTES, Harness, data, dequeue, enqueue_ack, pb, wait_until

pytestmark = pytest.mark.timeout(60)

RECEIVED = pb.EnqueueResponse(data=pb.EnqueueResponse.EnqueueResponseData())


def drain(harness: Harness, queue: str) -> list[tuple[int, bytes]]:
    """Every record of ``queue`` in dequeue order (acked)."""
    stream = harness.dequeue_stream()
    records = []
    while True:
        answer = stream.exchange(dequeue(queue))
        if not answer.success.HasField("record"):
            break
        records.append((answer.success.record.priority, answer.success.record.payload))
        stream.exchange(pb.DequeueRequest(ack=pb.AckMessage(ack=True)))
    stream.done_writing()
    assert stream.status()[0] is grpc.StatusCode.OK
    return records


def test_many_data_ack_rounds_on_one_stream_insert_in_priority_order(harness: Harness) -> None:
    stream = harness.enqueue_stream()
    for priority, payload in [(5, b"five"), (-3, b"minus three"), (5, b"five again"), (0, b"")]:
        assert stream.exchange(data("", priority, payload)) == RECEIVED
        assert stream.exchange(enqueue_ack(True)) == RECEIVED  # committed
    stream.done_writing()
    assert stream.status()[0] is grpc.StatusCode.OK
    assert harness.count("") == 4
    assert drain(harness, "") == [(-3, b"minus three"), (0, b""), (5, b"five"), (5, b"five again")]


def test_a_nack_inserts_nothing_and_the_stream_goes_on(harness: Harness) -> None:
    stream = harness.enqueue_stream()
    assert stream.exchange(data("", 1, b"no")) == RECEIVED
    assert stream.exchange(enqueue_ack(False)) == RECEIVED
    assert harness.count("") == 0
    assert stream.exchange(data("", 2, b"yes")) == RECEIVED
    assert stream.exchange(enqueue_ack(True)) == RECEIVED
    stream.done_writing()
    assert stream.status()[0] is grpc.StatusCode.OK
    assert drain(harness, "") == [(2, b"yes")]


def test_completing_the_stream_between_data_and_ack_inserts_nothing(harness: Harness) -> None:
    stream = harness.enqueue_stream()
    assert stream.exchange(data("", 1, b"never acked")) == RECEIVED
    stream.done_writing()
    assert stream.status()[0] is grpc.StatusCode.OK
    assert harness.count("") == 0


def test_cancelling_between_data_and_ack_inserts_nothing(harness: Harness) -> None:
    stream = harness.enqueue_stream()
    assert stream.exchange(data("", 1, b"never acked")) == RECEIVED
    stream.call.cancel()
    assert stream.call.code() is grpc.StatusCode.CANCELLED
    assert harness.enqueue("", 2, b"after") == RECEIVED  # the server is fine
    assert drain(harness, "") == [(2, b"after")]


def test_a_missing_queue_is_reported_after_the_ack(harness: Harness) -> None:
    stream = harness.enqueue_stream()
    assert stream.exchange(data("nowhere", 1, b"x")) == RECEIVED  # existence is checked on ack, as in TCP
    answer = stream.exchange(enqueue_ack(True))
    assert answer.error.code == pb.QueueDoesNotExist
    assert answer.error.message == "queue 'nowhere' does not exist"
    assert stream.exchange(data("", 1, b"next round")) == RECEIVED  # the stream goes on
    stream.exchange(enqueue_ack(True))
    stream.done_writing()
    assert stream.status()[0] is grpc.StatusCode.OK
    assert harness.count("") == 1


@pytest.mark.parametrize("name", ["has space", "tab\t", "é", "x" * 256, "\x7f"])
def test_an_invalid_name_is_refused_on_data_and_the_stream_expects_data_again(harness: Harness, name: str) -> None:
    stream = harness.enqueue_stream()
    answer = stream.exchange(data(name, 1, b"x"))
    assert answer.error.code == pb.InvalidQueueName
    assert "invalid queue name" in answer.error.message
    assert len(answer.error.message) < 200  # a huge name is not echoed whole
    assert stream.exchange(data("", 1, b"ok")) == RECEIVED
    assert stream.exchange(enqueue_ack(True)) == RECEIVED
    stream.done_writing()
    assert stream.status()[0] is grpc.StatusCode.OK


def test_a_255_character_name_is_valid(harness: Harness) -> None:
    name = "~" * 255
    assert harness.create(name).WhichOneof("result") == "data"
    assert harness.enqueue(name, 1, b"x") == RECEIVED
    assert harness.count(name) == 1


def policy_message(harness: Harness, queue: str, priority: int, payload: bytes) -> str:
    answer = harness.enqueue(queue, priority, payload)
    assert answer.WhichOneof("result") == "data" and answer.data.HasField("policy_violation"), answer
    return answer.data.policy_violation.message


def test_policy_violations_are_explained(harness: Harness) -> None:
    harness.create("small", max_queue_size=1, max_payload_size=3,
                   priority_range=pb.PriorityRange(min=-10, max=10))
    assert harness.enqueue("small", 0, b"abc") == RECEIVED
    assert policy_message(harness, "small", 0, b"a") == (
        "queue 'small' is full: it holds at most 1 records (max queue size)")
    harness.create("ranged", max_payload_size=3, priority_range=pb.PriorityRange(min=-10, max=10))
    assert policy_message(harness, "ranged", 11, b"a") == "priority 11 is outside the range [-10, 10] of queue 'ranged'"
    assert policy_message(harness, "ranged", 0, b"abcd") == (
        "payload of 4 bytes is larger than the 3 bytes queue 'ranged' accepts")
    assert harness.count("ranged") == 0


def test_a_queue_array_refuses_priorities_outside_its_range(harness: Harness) -> None:
    harness.create("qa", code=pb.QueueArray, priority_range=pb.PriorityRange(min=1, max=3))
    assert harness.enqueue("qa", 3, b"c") == RECEIVED
    assert harness.enqueue("qa", 1, b"a") == RECEIVED
    assert "outside the range [1, 3]" in policy_message(harness, "qa", 4, b"d")
    assert drain(harness, "qa") == [(1, b"a"), (3, b"c")]


def test_a_payload_over_the_server_limit_ends_the_call_with_resource_exhausted(harness: Harness) -> None:
    assert harness.enqueue("", 1, b"x" * MAX_PAYLOAD_BYTES) == RECEIVED  # exactly the limit fits
    stream = harness.enqueue_stream()
    stream.send(data("", 1, b"x" * (MAX_PAYLOAD_BYTES + 1)))
    code, details = stream.status()
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details == (f"payload of {MAX_PAYLOAD_BYTES + 1} bytes is larger than this server's max_payload_size "
                       f"of {MAX_PAYLOAD_BYTES} bytes; nothing was inserted")
    assert harness.count("") == 1


def test_a_huge_message_is_refused_by_grpc_before_it_is_buffered(harness: Harness) -> None:
    stream = harness.enqueue_stream()
    stream.send(data("", 1, b"x" * (1024 * 1024)))
    code, details = stream.status()
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in details
    assert harness.enqueue("", 1, b"still serving") == RECEIVED


@pytest.mark.parametrize("first", [enqueue_ack(True), pb.EnqueueRequest()])
def test_anything_but_data_to_start_a_round_is_a_failed_precondition(harness: Harness, first: object) -> None:
    stream = harness.enqueue_stream()
    stream.send(first)
    code, details = stream.status()
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert details.startswith("expected data (queue and record) to start an enqueue, got ")
    assert harness.enqueue("", 1, b"still serving") == RECEIVED


def test_data_instead_of_the_ack_is_a_failed_precondition_and_inserts_nothing(harness: Harness) -> None:
    stream = harness.enqueue_stream()
    assert stream.exchange(data("", 1, b"first")) == RECEIVED
    stream.send(data("", 2, b"second"))
    assert stream.status() == (grpc.StatusCode.FAILED_PRECONDITION, "expected ack for the record just sent, got data")
    assert harness.count("") == 0


def test_data_without_a_record_is_an_invalid_argument(harness: Harness) -> None:
    stream = harness.enqueue_stream()
    stream.send(pb.EnqueueRequest(data=pb.EnqueueRequest.EnqueueRequestData(queue="")))
    assert stream.status() == (grpc.StatusCode.INVALID_ARGUMENT, "enqueue data without a record")


def test_an_enqueue_wakes_a_waiting_consumer(harness: Harness) -> None:
    consumer = harness.dequeue_stream()
    consumer.send(dequeue("", -1))
    wait_until(lambda: harness.waiting_consumers("") == 1, what="the consumer to wait")
    assert harness.enqueue("", 7, b"for you") == RECEIVED
    answer = consumer.receive()
    assert (answer.success.record.priority, answer.success.record.payload) == (7, b"for you")
    consumer.exchange(pb.DequeueRequest(ack=pb.AckMessage(ack=True)))
    consumer.done_writing()
    assert consumer.status()[0] is grpc.StatusCode.OK
    assert harness.count("") == 0
