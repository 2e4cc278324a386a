"""The proto stays wire-compatible with the original's (spec §6.3) and the committed modules are fresh."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import FieldDescriptor

from scripts.generate_grpc import differences
from tests.grpc.conftest import pb

pytestmark = pytest.mark.timeout(60)

INT32, INT64, BOOL, STRING, BYTES = (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_BOOL,
                                     FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)
MESSAGE, ENUM = FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_ENUM

# message -> (field name, number, type, oneof or None), transcribed from spec §6.3
ORIGINAL_MESSAGES = {
    "QueueRecord": [("priority", 1, INT64, None), ("payload", 2, BYTES, None)],
    "AckMessage": [("ack", 1, BOOL, None)],
    "ErrorResponse": [("code", 1, ENUM, None), ("message", 2, STRING, None)],
    "NotLeaderResponse": [("leader_id", 1, INT32, None)],
    "PolicyViolationResponse": [("message", 1, STRING, None)],
    "EnqueueRequest.EnqueueRequestData": [("queue", 1, STRING, None), ("record", 2, MESSAGE, None)],
    "EnqueueRequest": [("data", 1, MESSAGE, "result"), ("ack", 2, MESSAGE, "result")],
    "EnqueueResponse.EnqueueResponseData": [("policy_violation", 1, MESSAGE, None)],
    "EnqueueResponse": [("data", 1, MESSAGE, "result"), ("error", 2, MESSAGE, "result"),
                        ("not_leader", 3, MESSAGE, "result")],
    "DequeueRequest.DequeueRequestData": [("queue", 1, STRING, None), ("timeout", 2, INT32, None)],
    "DequeueRequest": [("request", 1, MESSAGE, "operation"), ("ack", 2, MESSAGE, "operation")],
    "DequeueResponse.DequeueResponseData": [("record", 1, MESSAGE, None)],
    "DequeueResponse": [("success", 1, MESSAGE, "result"), ("error", 2, MESSAGE, "result"),
                        ("policy_violation", 3, MESSAGE, "result"), ("not_leader", 4, MESSAGE, "result")],
    "DeleteQueueRequest": [("queue", 1, STRING, None)],
    "DeleteQueueResponse.DeleteQueueResponseData": [],
    "DeleteQueueResponse": [("data", 1, MESSAGE, "result"), ("error", 2, MESSAGE, "result"),
                            ("not_leader", 3, MESSAGE, "result")],
    "PriorityRange": [("min", 1, INT64, None), ("max", 2, INT64, None)],
    "QueuePolicyInfo": [("max_queue_size", 1, INT32, None), ("max_payload_size", 2, INT32, None),
                        ("priority_range", 3, MESSAGE, None)],
    "CreateQueueRequest": [("queue", 1, STRING, None), ("code", 2, ENUM, None), ("policies", 3, MESSAGE, None)],
    "CreateQueueResponse.CreateQueueResponseData": [],
    "CreateQueueResponse": [("data", 1, MESSAGE, "result"), ("error", 2, MESSAGE, "result"),
                            ("not_leader", 3, MESSAGE, "result")],
    "GetCountRequest": [("queue", 1, STRING, None)],
    "GetCountResponse.GetCountResponseData": [("count", 1, INT32, None)],
    "GetCountResponse": [("data", 1, MESSAGE, "result"), ("error", 2, MESSAGE, "result"),
                         ("not_leader", 3, MESSAGE, "result")],
}
# Fields added to the original's messages (new numbers only: an original client never sees them set by itself).
ADDED_FIELDS = {"CreateQueueRequest": [("delivery", 4, MESSAGE, None)]}
OPTIONAL_FIELDS = {("ErrorResponse", "message"), ("EnqueueResponse.EnqueueResponseData", "policy_violation"),
                   ("DequeueResponse.DequeueResponseData", "record"), ("QueuePolicyInfo", "max_queue_size"),
                   ("QueuePolicyInfo", "max_payload_size"), ("QueuePolicyInfo", "priority_range")}


def message_descriptor(path: str):  # type: ignore[no-untyped-def]
    outer, *inner = path.split(".")
    descriptor = pb.DESCRIPTOR.message_types_by_name[outer]
    for name in inner:
        descriptor = descriptor.nested_types_by_name[name]
    return descriptor


def real_oneof(field) -> str | None:  # type: ignore[no-untyped-def]
    oneof = field.containing_oneof
    return None if oneof is None or oneof.name.startswith("_") else oneof.name  # "_x": proto3 optional


@pytest.mark.parametrize("path", sorted(ORIGINAL_MESSAGES))
def test_every_message_of_the_original_has_its_fields_numbers_and_oneofs(path: str) -> None:
    descriptor = message_descriptor(path)
    fields = [(f.name, f.number, f.type, real_oneof(f)) for f in descriptor.fields]
    assert fields == ORIGINAL_MESSAGES[path] + ADDED_FIELDS.get(path, [])
    for field in descriptor.fields:
        assert field.has_presence == ((path, field.name) in OPTIONAL_FIELDS or field.type == MESSAGE), field.name


def test_package_service_rpcs_and_enums_are_the_originals() -> None:
    assert pb.DESCRIPTOR.package == "taskflux"
    service = pb.DESCRIPTOR.services_by_name["TaskFluxService"]
    assert service.full_name == "taskflux.TaskFluxService"
    kinds = {m.name: (m.input_type.name, m.output_type.name, m.client_streaming, m.server_streaming)
             for m in service.methods}
    assert kinds == {
        "Enqueue": ("EnqueueRequest", "EnqueueResponse", True, True),
        "Dequeue": ("DequeueRequest", "DequeueResponse", True, True),
        "DeleteQueue": ("DeleteQueueRequest", "DeleteQueueResponse", False, False),
        "CreateQueue": ("CreateQueueRequest", "CreateQueueResponse", False, False),
        "GetCount": ("GetCountRequest", "GetCountResponse", False, False),
        # our additions:
        "ListQueues": ("ListQueuesRequest", "ListQueuesResponse", False, False),
        "EnqueueMany": ("EnqueueManyRequest", "EnqueueManyResponse", False, False),
        "LeaseDequeue": ("LeaseDequeueRequest", "LeaseDequeueResponse", False, False),
        "AckLease": ("LeaseRequest", "LeaseResponse", False, False),
        "NackLease": ("NackLeaseRequest", "LeaseResponse", False, False),
        "ReleaseLease": ("LeaseRequest", "LeaseResponse", False, False),
        "ExtendLease": ("ExtendLeaseRequest", "LeaseResponse", False, False),
        "Peek": ("PeekRequest", "PeekResponse", False, False),
    }
    error_codes = {v.name: v.number for v in pb.DESCRIPTOR.enum_types_by_name["ErrorCode"].values}
    assert error_codes == {
        "Unknown": 0, "InvalidQueueName": 1, "QueueDoesNotExist": 2, "QueueAlreadyExists": 3,
        "InvalidPriorityRange": 4, "InvalidMaxQueueSize": 5, "InvalidMaxPayloadSize": 6,
        "PriorityRangeNotSpecified": 7, "UnknownPriorityQueueCode": 8,
        "InvalidQueuePolicy": 9, "InvalidRecord": 10,  # our additions
    }
    queue_codes = {v.name: v.number for v in pb.DESCRIPTOR.enum_types_by_name["PriorityQueueCode"].values}
    assert queue_codes == {"Heap4": 0, "QueueArray": 1}


def test_the_committed_generated_modules_match_the_proto() -> None:
    assert differences() == [], "run scripts/generate_grpc.py and commit the result"
