"""The commands of the replicated state machine: every change of state is one of these, in the log."""

from __future__ import annotations

from dataclasses import dataclass

from taskflux.domain.errors import INT32_MAX, INT64_MAX, INT64_MIN, ErrorCode, Implementation
from taskflux.domain.names import is_valid_queue_name
from taskflux.domain.policies import DEFAULT_DELIVERY, MAX_DELAY_MS, DeliveryPolicies, QueuePolicies
from taskflux.domain.results import Failure

NO_LIMIT = -1
MAX_KEY_BYTES = 128  # an idempotency key: 1-128 bytes
MAX_BATCH_RECORDS = 1000  # records in one AddRecords (one log entry)
MAX_BATCH_IDS = 10_000  # ids in one ReturnRecords or RemoveRecords
POLICY_DELAY = -1  # ReturnRecords: the queue's retry policy chooses the delay


@dataclass(frozen=True, slots=True)
class CreateQueue:
    """Create a queue. Sizes use the wire's convention (-1 = no limit) so that invalid values reach
    validation unchanged and are refused with the spec's codes and order."""

    name: str
    implementation: int = Implementation.H4
    max_queue_size: int = NO_LIMIT
    max_payload_size: int = NO_LIMIT
    priority_range: tuple[int, int] | None = None
    delivery: DeliveryPolicies = DEFAULT_DELIVERY

    @classmethod
    def of(
        cls,
        name: str,
        implementation: int = Implementation.H4,
        max_queue_size: int | None = None,
        max_payload_size: int | None = None,
        priority_range: tuple[int, int] | None = None,
        delivery: DeliveryPolicies = DEFAULT_DELIVERY,
    ) -> CreateQueue:
        """The one way every interface builds a CreateQueue: None is "no limit"; any value, valid or not, is
        kept for ``validate`` to judge."""
        return cls(name, implementation, NO_LIMIT if max_queue_size is None else max_queue_size,
                   NO_LIMIT if max_payload_size is None else max_payload_size, priority_range, delivery)

    def validate(self) -> Failure | None:
        """Everything that does not depend on state, in the order of docs/client-protocol.md §7
        (name existence aside), then the delivery policies."""
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
        return self.delivery.validate(self.name)

    def policies(self) -> QueuePolicies:
        return QueuePolicies(
            max_queue_size=None if self.max_queue_size == NO_LIMIT else self.max_queue_size,
            max_payload_size=None if self.max_payload_size == NO_LIMIT else self.max_payload_size,
            priority_range=self.priority_range,
            delivery=self.delivery,
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


@dataclass(frozen=True, slots=True)
class NewRecord:
    """One record of an AddRecords: ``key`` makes its enqueue idempotent (within the queue's window), and
    ``not_before`` (leader time, ms since the epoch; 0: none) keeps it from consumers until then."""

    priority: int
    payload: bytes
    key: bytes | None = None
    not_before: int = 0

    def validate(self) -> Failure | None:
        if not INT64_MIN <= self.priority <= INT64_MAX:
            return invalid_record(f"priority {self.priority} is not an Int64")
        if self.key is not None and not 1 <= len(self.key) <= MAX_KEY_BYTES:
            return invalid_record(f"an idempotency key has 1-{MAX_KEY_BYTES} bytes, not {len(self.key)}")
        if not 0 <= self.not_before <= INT64_MAX:
            return invalid_record(f"invalid not-before time {self.not_before}")
        return None


@dataclass(frozen=True, slots=True)
class AddRecords:
    """Enqueue records at once, all or nothing (one log entry), at leader time ``now`` (ms since the epoch).

    A record whose key the queue remembers adds nothing and answers the first record's id; the others must
    all pass the queue's policies, or none is added."""

    name: str
    now: int
    records: tuple[NewRecord, ...]

    def validate(self) -> Failure | None:
        """The values, not the name: an invalid name is no queue's (the service refuses it first)."""
        if not 1 <= len(self.records) <= MAX_BATCH_RECORDS:
            return invalid_record(f"a batch has 1-{MAX_BATCH_RECORDS} records, not {len(self.records)}")
        if not 0 <= self.now <= INT64_MAX:
            return invalid_record(f"invalid leader time {self.now}")
        for record in self.records:
            failure = record.validate()
            if failure is not None:
                return failure
        return None


@dataclass(frozen=True, slots=True)
class ReturnRecords:
    """Failed deliveries of records taken from queue instance ``incarnation``, at leader time ``now``.

    Each record's failed-delivery count goes up by one; a record that reaches the queue's ``max_deliveries``
    moves to its dead-letter queue, any other goes back, due after its delay (``POLICY_DELAY``: the queue's
    retry policy chooses it)."""

    name: str
    incarnation: int
    now: int
    returns: tuple[tuple[int, int], ...]  # (record id, delay ms or POLICY_DELAY)

    def validate(self) -> Failure | None:
        if not 1 <= len(self.returns) <= MAX_BATCH_IDS:
            return invalid_record(f"1-{MAX_BATCH_IDS} records at once, not {len(self.returns)}")
        for _, delay in self.returns:
            if not (delay == POLICY_DELAY or 0 <= delay <= MAX_DELAY_MS):
                return invalid_record(f"a retry delay is 0-{MAX_DELAY_MS} ms, not {delay}")
        return None


@dataclass(frozen=True, slots=True)
class RemoveRecords:
    """Remove several records of one queue instance for good (the acks of a batch dequeue)."""

    name: str
    incarnation: int
    record_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class MoveRecords:
    """Move records of a dead-letter queue back to the queues they came from (their ``origin``), at leader time
    ``now``: each becomes a new record there, with its payload and priority and no failed deliveries. A record
    without an origin, or whose origin queue is gone or refuses its priority, stays."""

    name: str
    incarnation: int
    now: int
    record_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Tick:
    """The leader's clock reached ``now`` (ms since the epoch): delayed records due by then become ready."""

    now: int


Command = (
    CreateQueue | DeleteQueue | AddRecord | RemoveRecord | AddRecords | ReturnRecords | RemoveRecords | MoveRecords
    | Tick
)


def invalid_record(message: str) -> Failure:
    return Failure(ErrorCode.INVALID_RECORD, message)


def invalid_name(name: str) -> Failure:
    return Failure(ErrorCode.INVALID_QUEUE_NAME, f"invalid queue name {name!r}: 0-255 characters in 0x21-0x7E")
