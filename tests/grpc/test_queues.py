"""CreateQueue, DeleteQueue, GetCount and ListQueues: every answer and every error code (spec §2.4, §6.4)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.grpc.conftest import Harness, pb

pytestmark = pytest.mark.timeout(60)


def error_of(response: object) -> tuple[int, str]:
    assert response.WhichOneof("result") == "error", response  # type: ignore[attr-defined]
    return response.error.code, response.error.message  # type: ignore[attr-defined]


def test_create_queue_creates_and_a_second_create_is_already_exists(harness: Harness) -> None:
    assert harness.create("jobs").WhichOneof("result") == "data"
    assert harness.count("jobs") == 0
    assert error_of(harness.create("jobs")) == (pb.QueueAlreadyExists, "queue 'jobs' already exists")
    assert error_of(harness.create(""))[0] == pb.QueueAlreadyExists  # the default queue exists from the start


def test_create_queue_without_policies_has_no_limits(harness: Harness) -> None:
    response = harness.stub.CreateQueue(pb.CreateQueueRequest(queue="free"))
    assert response.WhichOneof("result") == "data"
    info = {q.name: q for q in harness.stub.ListQueues(pb.ListQueuesRequest()).data.queues}["free"]
    assert info.code == pb.Heap4
    assert info.policies == pb.QueuePolicyInfo()


@pytest.mark.parametrize(("request_fields", "code"), [
    ({"queue": "bad name"}, pb.InvalidQueueName),
    ({"queue": "x" * 256}, pb.InvalidQueueName),
    ({"queue": "q", "policies": pb.QueuePolicyInfo(priority_range=pb.PriorityRange(min=5, max=4))},
     pb.InvalidPriorityRange),
    ({"queue": "q", "policies": pb.QueuePolicyInfo(max_queue_size=-1)}, pb.InvalidMaxQueueSize),
    ({"queue": "q", "policies": pb.QueuePolicyInfo(max_queue_size=-7)}, pb.InvalidMaxQueueSize),
    ({"queue": "q", "policies": pb.QueuePolicyInfo(max_payload_size=-1)}, pb.InvalidMaxPayloadSize),
    ({"queue": "q", "code": pb.QueueArray}, pb.PriorityRangeNotSpecified),
    ({"queue": "q", "code": 5}, pb.UnknownPriorityQueueCode),
    ({"queue": "q", "code": -3}, pb.UnknownPriorityQueueCode),
    # the spec's order: payload size (6) is checked before queue size (5), both before the name (1)
    ({"queue": "bad name", "policies": pb.QueuePolicyInfo(max_queue_size=-2, max_payload_size=-5)},
     pb.InvalidMaxPayloadSize),
])
def test_create_queue_validation_errors(harness: Harness, request_fields: dict[str, Any], code: int) -> None:
    code_found, message = error_of(harness.stub.CreateQueue(pb.CreateQueueRequest(**request_fields)))
    assert code_found == code
    assert message and len(message) < 200
    if code == pb.UnknownPriorityQueueCode:
        assert f"code {request_fields['code']}" in message  # the code the client sent, not an internal one
    assert [q.name for q in harness.stub.ListQueues(pb.ListQueuesRequest()).data.queues] == [""]


def test_create_queue_with_every_policy(harness: Harness) -> None:
    created = harness.create("limited", code=pb.QueueArray, max_queue_size=0, max_payload_size=0,
                             priority_range=pb.PriorityRange(min=-1, max=-1))
    assert created.WhichOneof("result") == "data"
    info = {q.name: q for q in harness.stub.ListQueues(pb.ListQueuesRequest()).data.queues}["limited"]
    assert info.code == pb.QueueArray
    assert info.policies == pb.QueuePolicyInfo(max_queue_size=0, max_payload_size=0,
                                               priority_range=pb.PriorityRange(min=-1, max=-1))


def test_delete_queue_answers_data_and_the_queue_is_gone(harness: Harness) -> None:
    harness.create("doomed")
    harness.enqueue("doomed", 1, b"x")
    response = harness.stub.DeleteQueue(pb.DeleteQueueRequest(queue="doomed"))
    assert response == pb.DeleteQueueResponse(data=pb.DeleteQueueResponse.DeleteQueueResponseData())
    assert error_of(harness.stub.GetCount(pb.GetCountRequest(queue="doomed")))[0] == pb.QueueDoesNotExist
    assert harness.create("doomed").WhichOneof("result") == "data"  # the name is free again, and empty
    assert harness.count("doomed") == 0


def test_delete_queue_errors(harness: Harness) -> None:
    def delete(name: str) -> tuple[int, str]:
        return error_of(harness.stub.DeleteQueue(pb.DeleteQueueRequest(queue=name)))

    assert delete("nowhere") == (pb.QueueDoesNotExist, "queue 'nowhere' does not exist")
    assert delete("bad name")[0] == pb.InvalidQueueName
    assert delete("") == (pb.InvalidQueueName, "the default queue cannot be deleted")
    assert harness.count("") == 0


def test_get_count(harness: Harness) -> None:
    assert harness.stub.GetCount(pb.GetCountRequest(queue="")) == pb.GetCountResponse(
        data=pb.GetCountResponse.GetCountResponseData())  # a count of 0 is an empty data message
    for i in range(3):
        harness.enqueue("", i, b"")
    assert harness.count("") == 3
    assert error_of(harness.stub.GetCount(pb.GetCountRequest(queue="nowhere")))[0] == pb.QueueDoesNotExist
    assert error_of(harness.stub.GetCount(pb.GetCountRequest(queue="\u00e9")))[0] == pb.InvalidQueueName


def test_list_queues_reports_names_counts_implementations_and_limits(harness: Harness) -> None:
    harness.create("b-heap", max_queue_size=100)
    harness.create("a-array", code=pb.QueueArray, max_payload_size=65536,
                   priority_range=pb.PriorityRange(min=-10, max=10))
    harness.enqueue("b-heap", 1, b"x")
    harness.enqueue("b-heap", 2, b"y")
    response = harness.stub.ListQueues(pb.ListQueuesRequest())
    assert response.WhichOneof("result") == "data"
    defaults = pb.DeliveryPolicies(retry_delay_ms=0, retry_max_delay_ms=900_000, dedup_window_ms=300_000,
                                   dedup_max_keys=100_000)
    assert list(response.data.queues) == [
        pb.QueueInfo(name="", count=0, code=pb.Heap4, policies=pb.QueuePolicyInfo(), delivery=defaults),
        pb.QueueInfo(name="a-array", count=0, code=pb.QueueArray, policies=pb.QueuePolicyInfo(
            max_payload_size=65536, priority_range=pb.PriorityRange(min=-10, max=10)), delivery=defaults),
        pb.QueueInfo(name="b-heap", count=2, code=pb.Heap4, policies=pb.QueuePolicyInfo(max_queue_size=100),
                     delivery=defaults),
    ]
