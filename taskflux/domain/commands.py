"""The commands of the replicated state machine: every change of state is one of these, in the log."""

from __future__ import annotations

from dataclasses import dataclass

from taskflux.domain.errors import INT32_MAX, INT64_MAX, INT64_MIN, ErrorCode, Implementation
from taskflux.domain.names import is_valid_queue_name
from taskflux.domain.policies import QueuePolicies
from taskflux.domain.results import Failure

NO_LIMIT = -1


@dataclass(frozen=True, slots=True)
class CreateQueue:
    """Create a queue. Sizes use the wire's convention (-1 = no limit) so that invalid values reach
    validation unchanged and are refused with the spec's codes and order."""

    name: str
    implementation: int = Implementation.H4
    max_queue_size: int = NO_LIMIT
    max_payload_size: int = NO_LIMIT
    priority_range: tuple[int, int] | None = None

    def validate(self) -> Failure | None:
        """Everything that does not depend on state, in the order of docs/client-protocol.md §7
        (name existence aside)."""
        if self.implementation not in (Implementation.H4, Implementation.QA):
            return Failure(ErrorCode.UNKNOWN_PRIORITY_QUEUE_CODE, f"unknown implementation {self.implementation}")
        if self.implementation == Implementation.QA and self.priority_range is None:
            return Failure(ErrorCode.PRIORITY_RANGE_NOT_SPECIFIED, "a QA queue needs a priority range")
        if self.priority_range is not None:
            low, high = self.priority_range
            if not (INT64_MIN <= low <= high <= INT64_MAX):
                return Failure(ErrorCode.INVALID_PRIORITY_RANGE, f"invalid priority range [{low}, {high}]")
        if not (self.max_payload_size == NO_LIMIT or 0 <= self.max_payload_size <= INT32_MAX):
            return Failure(ErrorCode.INVALID_MAX_PAYLOAD_SIZE, f"invalid max payload size {self.max_payload_size}")
        if not (self.max_queue_size == NO_LIMIT or 0 <= self.max_queue_size <= INT32_MAX):
            return Failure(ErrorCode.INVALID_MAX_QUEUE_SIZE, f"invalid max queue size {self.max_queue_size}")
        if not is_valid_queue_name(self.name):
            return invalid_name(self.name)
        return None

    def policies(self) -> QueuePolicies:
        return QueuePolicies(
            max_queue_size=None if self.max_queue_size == NO_LIMIT else self.max_queue_size,
            max_payload_size=None if self.max_payload_size == NO_LIMIT else self.max_payload_size,
            priority_range=self.priority_range,
        )


@dataclass(frozen=True, slots=True)
class DeleteQueue:
    """Delete a queue and every record in it. The default queue cannot be deleted."""

    name: str


@dataclass(frozen=True, slots=True)
class AddRecord:
    """Enqueue a record; its id is assigned when the entry is applied."""

    name: str
    priority: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class RemoveRecord:
    """Remove a record for good (the ack of a dequeue). ``incarnation`` names the queue instance the
    record was taken from."""

    name: str
    incarnation: int
    record_id: int


Command = CreateQueue | DeleteQueue | AddRecord | RemoveRecord


def invalid_name(name: str) -> Failure:
    return Failure(ErrorCode.INVALID_QUEUE_NAME, f"invalid queue name {name!r}: 0-255 characters in 0x21-0x7E")
