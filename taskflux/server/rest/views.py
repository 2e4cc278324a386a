"""Writing REST answers: queues, records and results as JSON, business errors and policy violations as
statuses, and the outcome label of each answer for the metrics."""

from __future__ import annotations

import base64
from typing import Any

import bottle

from taskflux.domain.errors import ErrorCode, Implementation, PolicyCode
from taskflux.domain.policies import DeliveryPolicies
from taskflux.domain.queue import Queue
from taskflux.domain.records import Record
from taskflux.domain.results import Failure, PolicyViolation, Result
from taskflux.server import metrics as outcomes
from taskflux.server.rest.requests import ApiError, error

IMPLEMENTATION_NAMES = {Implementation.H4: "H4", Implementation.QA: "QA"}
POLICY_NAMES = {
    PolicyCode.GENERIC: "generic",
    PolicyCode.MAX_QUEUE_SIZE: "max_queue_size",
    PolicyCode.PRIORITY_RANGE: "priority_range",
    PolicyCode.MAX_PAYLOAD_SIZE: "max_payload_size",
}
# Business error -> (HTTP status, reason, the request field it is about)
FAILURE_STATUS: dict[ErrorCode, tuple[int, str, str | None]] = {
    ErrorCode.INVALID_QUEUE_NAME: (400, "invalid_queue_name", "name"),
    ErrorCode.QUEUE_DOES_NOT_EXIST: (404, "queue_not_found", None),
    ErrorCode.QUEUE_ALREADY_EXISTS: (409, "queue_exists", None),
    ErrorCode.INVALID_PRIORITY_RANGE: (400, "invalid_priority_range", "priority_range"),
    ErrorCode.INVALID_MAX_QUEUE_SIZE: (400, "invalid_max_queue_size", "max_queue_size"),
    ErrorCode.INVALID_MAX_PAYLOAD_SIZE: (400, "invalid_max_payload_size", "max_payload_size"),
    ErrorCode.PRIORITY_RANGE_NOT_SPECIFIED: (400, "priority_range_required", "priority_range"),
    ErrorCode.UNKNOWN_PRIORITY_QUEUE_CODE: (400, "invalid_implementation", "implementation"),
    ErrorCode.INVALID_QUEUE_POLICY: (400, "invalid_queue_policy", None),
    ErrorCode.INVALID_RECORD: (400, "invalid_record", None),
}





def queue_json(queue: Queue) -> dict[str, Any]:
    policies = queue.policies
    return {
        "name": queue.name,
        "implementation": IMPLEMENTATION_NAMES.get(queue.implementation, str(queue.implementation)),
        "count": queue.count,
        "delayed": queue.delayed_count,
        "reserved": queue.reserved_count,
        "policies": {
            "max_queue_size": policies.max_queue_size,
            "max_payload_size": policies.max_payload_size,
            "priority_range": list(policies.priority_range) if policies.priority_range is not None else None,
            **delivery_json(policies.delivery),
        },
    }


def delivery_json(delivery: DeliveryPolicies) -> dict[str, Any]:
    return {
        "max_deliveries": delivery.max_deliveries,
        "dead_letter_queue": delivery.dead_letter_queue,
        "retry_delay_ms": delivery.retry_delay_ms,
        "retry_backoff": delivery.retry_backoff.name.lower(),
        "retry_max_delay_ms": delivery.retry_max_delay_ms,
        "dedup_window_ms": delivery.dedup_window_ms,
        "dedup_max_keys": delivery.dedup_max_keys,
    }


def record_json(record: Record) -> dict[str, Any]:
    try:
        text: str | None = record.payload.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    body: dict[str, Any] = {
        "id": record.id,
        "priority": record.priority,
        "payload": text,
        "payload_base64": base64.b64encode(record.payload).decode("ascii"),
        "failed_deliveries": record.failed_deliveries,
    }
    if record.origin is not None:
        body["origin"] = {"queue": record.origin.queue, "id": record.origin.record_id}
    return body


def failure_error(failure: Failure) -> ApiError:
    status, reason, field = FAILURE_STATUS.get(failure.code, (500, "internal", None))
    return error(status, reason, failure.message or reason.replace("_", " "), field, code=int(failure.code))


def policy_error(violation: PolicyViolation) -> ApiError:
    policy = POLICY_NAMES.get(violation.policy, str(int(violation.policy)))
    return error(422, "policy_violation", f"refused by the queue's {policy} policy {list(violation.limits)}",
                 policy=policy, limits=list(violation.limits))


OUTCOME_KEY = "taskflux.outcome"


def note_outcome(outcome: str) -> None:
    """Record this request's outcome where the status code does not tell it."""
    bottle.request.environ[OUTCOME_KEY] = outcome


def outcome_of(status: int) -> str:
    """A REST answer's outcome for the request metrics."""
    noted = bottle.request.environ.get(OUTCOME_KEY)
    if noted is not None:
        return noted  # type: ignore[no-any-return]
    if status < 300:
        return outcomes.EMPTY if status == 204 and bottle.request.path.endswith("/dequeue") else outcomes.OK
    if status in (421, 503):
        return outcomes.NOT_LEADER
    if status == 504:
        return outcomes.TIMEOUT
    if status == 422:
        return outcomes.POLICY_VIOLATION
    return outcomes.ERROR if status < 500 else outcomes.INTERNAL_ERROR


def raise_unless_ok(result: Result) -> Result:
    if isinstance(result, Failure):
        raise failure_error(result)
    if isinstance(result, PolicyViolation):
        raise policy_error(result)
    return result
