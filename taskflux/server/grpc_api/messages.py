"""Conversions between the domain and the gRPC messages of ``taskflux.proto``: commands in, results out.

Pure functions, no I/O. Every error answer carries a readable English message; the codes are the
client protocol's (``taskflux.domain.errors``), which the proto's ``ErrorCode`` repeats.
"""

from __future__ import annotations

from taskflux.domain.commands import CreateQueue
from taskflux.domain.errors import ErrorCode, Implementation, PolicyCode
from taskflux.domain.names import is_valid_queue_name
from taskflux.domain.policies import DEFAULT_DELIVERY, Backoff, DeliveryPolicies, QueuePolicies
from taskflux.domain.queue import Queue
from taskflux.domain.records import Record
from taskflux.domain.results import Failure, PolicyViolation
from taskflux.server.grpc_api import taskflux_pb2 as pb

# gRPC numbers the two structures 0 and 1, the binary protocol 1 and 2.
IMPLEMENTATION_OF_CODE = {pb.Heap4: Implementation.H4, pb.QueueArray: Implementation.QA}
CODE_OF_IMPLEMENTATION = {implementation: code for code, implementation in IMPLEMENTATION_OF_CODE.items()}
UNKNOWN_IMPLEMENTATION = 0  # refused by CreateQueue.validate() with UnknownPriorityQueueCode
INVALID_LIMIT = -2  # refused by CreateQueue.validate() with the limit's own code, in the binary protocol's order
SHOWN_NAME_CHARS = 64

ERROR_CODES: dict[ErrorCode, pb.ErrorCode] = {  # the same numbers, spelled out for the type checker
    ErrorCode.UNKNOWN: pb.Unknown,
    ErrorCode.INVALID_QUEUE_NAME: pb.InvalidQueueName,
    ErrorCode.QUEUE_DOES_NOT_EXIST: pb.QueueDoesNotExist,
    ErrorCode.QUEUE_ALREADY_EXISTS: pb.QueueAlreadyExists,
    ErrorCode.INVALID_PRIORITY_RANGE: pb.InvalidPriorityRange,
    ErrorCode.INVALID_MAX_QUEUE_SIZE: pb.InvalidMaxQueueSize,
    ErrorCode.INVALID_MAX_PAYLOAD_SIZE: pb.InvalidMaxPayloadSize,
    ErrorCode.PRIORITY_RANGE_NOT_SPECIFIED: pb.PriorityRangeNotSpecified,
    ErrorCode.UNKNOWN_PRIORITY_QUEUE_CODE: pb.UnknownPriorityQueueCode,
    ErrorCode.INVALID_QUEUE_POLICY: pb.InvalidQueuePolicy,
    ErrorCode.INVALID_RECORD: pb.InvalidRecord,
}
DEFAULT_MESSAGES = {
    ErrorCode.UNKNOWN: "the request failed",
    ErrorCode.INVALID_QUEUE_NAME: "invalid queue name {name}: 0-255 characters in 0x21-0x7E",
    ErrorCode.QUEUE_DOES_NOT_EXIST: "queue {name} does not exist",
    ErrorCode.QUEUE_ALREADY_EXISTS: "queue {name} already exists",
}

Limits = tuple[int, ...]


def show_name(name: str) -> str:
    """A queue name for a message: quoted, and cut short when a client sent something huge."""
    if len(name) <= SHOWN_NAME_CHARS:
        return repr(name)
    return f"{name[:SHOWN_NAME_CHARS]!r}... ({len(name)} characters)"


def error(failure: Failure, name: str) -> pb.ErrorResponse:
    """The ErrorResponse for a refused request on queue ``name``."""
    # The domain's message quotes an invalid name whole, and a client may have sent megabytes of it.
    if failure.message and not (failure.code is ErrorCode.INVALID_QUEUE_NAME and not is_valid_queue_name(name)):
        message = failure.message
    else:
        template = DEFAULT_MESSAGES.get(failure.code, failure.code.name.lower().replace("_", " "))
        message = template.format(name=show_name(name))
    return pb.ErrorResponse(code=ERROR_CODES[failure.code], message=message)


def not_leader(leader_id: int) -> pb.NotLeaderResponse:
    return pb.NotLeaderResponse(leader_id=leader_id)


def policy_violation(
    violation: PolicyViolation, name: str, priority: int, payload_bytes: int
) -> pb.PolicyViolationResponse:
    """A readable explanation of why a queue refused a record (the limit and the offending value)."""
    text = _explain(violation.policy, violation.limits, name, priority, payload_bytes)
    return pb.PolicyViolationResponse(message=text)


def _explain(policy: PolicyCode, limits: Limits, name: str, priority: int, payload_bytes: int) -> str:
    queue = show_name(name)
    if policy is PolicyCode.MAX_QUEUE_SIZE:
        return f"queue {queue} is full: it holds at most {limits[0]} records (max queue size)"
    if policy is PolicyCode.PRIORITY_RANGE:
        return f"priority {priority} is outside the range [{limits[0]}, {limits[1]}] of queue {queue}"
    if policy is PolicyCode.MAX_PAYLOAD_SIZE:
        return f"payload of {payload_bytes} bytes is larger than the {limits[0]} bytes queue {queue} accepts"
    return f"queue {queue} refused the record (policy {int(policy)}: {limits})"


def queue_record(record: Record) -> pb.QueueRecord:
    return pb.QueueRecord(priority=record.priority, payload=record.payload)


def create_command(request: pb.CreateQueueRequest) -> CreateQueue:
    """The CreateQueue command a request asks for. Invalid values are kept invalid so that
    ``CreateQueue.validate()`` refuses them with the binary protocol's codes and in its order. An unset limit is "no
    limit"; unlike the binary protocol, a set -1 is a negative limit, hence invalid."""
    policies = request.policies
    priority_range = None
    if policies.HasField("priority_range"):
        priority_range = (policies.priority_range.min, policies.priority_range.max)
    return CreateQueue.of(
        request.queue,
        IMPLEMENTATION_OF_CODE.get(request.code, UNKNOWN_IMPLEMENTATION),
        _limit(policies, "max_queue_size"),
        _limit(policies, "max_payload_size"),
        priority_range,
        delivery_policies(request.delivery) if request.HasField("delivery") else DEFAULT_DELIVERY,
    )


def delivery_policies(message: pb.DeliveryPolicies) -> DeliveryPolicies:
    """The delivery policies a request asks for (unset fields: the defaults; invalid values kept for
    ``DeliveryPolicies.validate`` to refuse)."""
    def optional(field: str, default: int) -> int:
        return getattr(message, field) if message.HasField(field) else default  # type: ignore[arg-type, no-any-return]

    return DeliveryPolicies(
        message.max_deliveries if message.HasField("max_deliveries") else None,
        message.dead_letter_queue if message.HasField("dead_letter_queue") else None,
        optional("retry_delay_ms", DEFAULT_DELIVERY.retry_delay_ms),
        Backoff.EXPONENTIAL if message.retry_backoff == pb.Exponential else Backoff.FIXED,
        optional("retry_max_delay_ms", DEFAULT_DELIVERY.retry_max_delay_ms),
        optional("dedup_window_ms", DEFAULT_DELIVERY.dedup_window_ms),
        optional("dedup_max_keys", DEFAULT_DELIVERY.dedup_max_keys),
    )


def delivery_info(delivery: DeliveryPolicies) -> pb.DeliveryPolicies:
    info = pb.DeliveryPolicies(
        retry_delay_ms=delivery.retry_delay_ms, retry_max_delay_ms=delivery.retry_max_delay_ms,
        retry_backoff=pb.Exponential if delivery.retry_backoff is Backoff.EXPONENTIAL else pb.Fixed,
        dedup_window_ms=delivery.dedup_window_ms, dedup_max_keys=delivery.dedup_max_keys)
    if delivery.max_deliveries is not None:
        info.max_deliveries = delivery.max_deliveries
    if delivery.dead_letter_queue is not None:
        info.dead_letter_queue = delivery.dead_letter_queue
    return info


def record(stored: Record, lease: str = "") -> pb.Record:
    """A record of the work-queue RPCs (with its lease token when leased)."""
    message = pb.Record(id=stored.id, priority=stored.priority, payload=stored.payload,
                        failed_deliveries=stored.failed_deliveries, lease=lease)
    if stored.origin is not None:
        message.origin_queue = stored.origin.queue
        message.origin_id = stored.origin.record_id
    return message


def _limit(policies: pb.QueuePolicyInfo, field: str) -> int | None:
    if not policies.HasField(field):  # type: ignore[arg-type]  # the field names are literals of the proto
        return None
    value: int = getattr(policies, field)
    return value if value >= 0 else INVALID_LIMIT


def policy_info(policies: QueuePolicies) -> pb.QueuePolicyInfo:
    """The limits a queue has (absent fields: no such limit)."""
    info = pb.QueuePolicyInfo()
    if policies.max_queue_size is not None:
        info.max_queue_size = policies.max_queue_size
    if policies.max_payload_size is not None:
        info.max_payload_size = policies.max_payload_size
    if policies.priority_range is not None:
        low, high = policies.priority_range
        info.priority_range.CopyFrom(pb.PriorityRange(min=low, max=high))
    return info


def queue_info(queue: Queue) -> pb.QueueInfo:
    return pb.QueueInfo(
        name=queue.name,
        count=queue.count,
        code=CODE_OF_IMPLEMENTATION[queue.implementation],
        policies=policy_info(queue.policies),
        delayed=queue.delayed_count,
        reserved=queue.reserved_count,
        delivery=delivery_info(queue.policies.delivery),
    )
