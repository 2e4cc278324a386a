"""Results of applying a command to the queue manager. Every node reaches the same result."""

from __future__ import annotations

from dataclasses import dataclass

from taskflux.domain.errors import ErrorCode, PolicyCode


@dataclass(frozen=True, slots=True)
class Ok:
    """The command took effect (CreateQueue, DeleteQueue)."""


@dataclass(frozen=True, slots=True)
class RecordAdded:
    """AddRecord took effect; the record got this id."""

    record_id: int


@dataclass(frozen=True, slots=True)
class RecordRemoved:
    """RemoveRecord was applied; ``found`` is False when the record was already gone."""

    found: bool


@dataclass(frozen=True, slots=True)
class RecordsAdded:
    """AddRecords took effect: each record's id, and whether it is new (False: its key was known, and the id
    is the first enqueue's)."""

    record_ids: tuple[int, ...]
    added: tuple[bool, ...]


class ReturnOutcome:
    """What a ReturnRecords did with one record."""

    READY = "ready"
    DELAYED = "delayed"
    DEAD_LETTERED = "dead_lettered"
    MISSING = "missing"  # acked or returned meanwhile: nothing done


@dataclass(frozen=True, slots=True)
class RecordsReturned:
    """ReturnRecords was applied: one ``ReturnOutcome`` per record, in the command's order."""

    outcomes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RecordsRemoved:
    """RemoveRecords was applied: ``found`` of the records were still there."""

    found: int


@dataclass(frozen=True, slots=True)
class RecordsMoved:
    """MoveRecords was applied: ``moved`` records went back to their origin queues."""

    moved: int


@dataclass(frozen=True, slots=True)
class Failure:
    """The command was refused with an error code (docs/client-protocol.md §7)."""

    code: ErrorCode
    message: str = ""


@dataclass(frozen=True, slots=True)
class PolicyViolation:
    """An enqueue broke a queue policy. ``limits`` are the wire fields after the code (docs/client-protocol.md §9):
    (max_queue_size,), (min, max) or (max_payload_size,) — the configured limit, not the offending value."""

    policy: PolicyCode
    limits: tuple[int, ...]


OK = Ok()

Result = (
    Ok | RecordAdded | RecordRemoved | RecordsAdded | RecordsReturned | RecordsRemoved | RecordsMoved | Failure
    | PolicyViolation
)
