"""One queue: its settings, its records, and the leader-local reservations of dequeued records."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from taskflux.domain.errors import Implementation
from taskflux.domain.policies import QueuePolicies
from taskflux.domain.records import Record
from taskflux.domain.structures import PriorityStructure, new_structure


class Queue:
    """A named priority queue.

    Records are either *available* (in the priority structure, seen by dequeue and Count) or *reserved*
    (handed to a consumer, awaiting its ack). Reservations are leader-local and never logged: a reserved
    record is still part of the replicated state until a RemoveRecord for it is applied.

    ``incarnation`` tells apart two queues that had the same name at different times, so an ack for a
    record of a deleted queue never removes a record of its successor.
    """

    __slots__ = ("_available", "_reserved", "implementation", "incarnation", "last_id", "name", "policies")

    def __init__(
        self,
        name: str,
        implementation: Implementation,
        policies: QueuePolicies,
        incarnation: int,
        last_id: int = 0,
    ) -> None:
        self.name = name
        self.implementation = implementation
        self.policies = policies
        self.incarnation = incarnation
        self.last_id = last_id
        self._available: PriorityStructure = new_structure(implementation, policies.priority_range)
        self._reserved: dict[int, Record] = {}

    @property
    def count(self) -> int:
        """Records available to dequeue: what Count reports (reserved records are not counted)."""
        return len(self._available)

    @property
    def stored(self) -> int:
        """Every record the queue holds, reserved ones included: the replicated size."""
        return len(self._available) + len(self._reserved)

    @property
    def reserved_count(self) -> int:
        return len(self._reserved)

    def add(self, priority: int, payload: bytes) -> Record:
        """Store a new record with the next id (policies are the caller's business)."""
        self.last_id += 1
        record = Record(self.last_id, priority, payload)
        self._available.push(record)
        return record

    def restore(self, record: Record) -> None:
        """Put back a record read from a snapshot (ids above ``last_id`` raise it)."""
        self._available.push(record)
        self.last_id = max(self.last_id, record.id)

    def remove(self, record_id: int) -> bool:
        """Remove a record for good, reserved or not. False when it is not here."""
        if self._reserved.pop(record_id, None) is not None:
            return True
        return self._available.remove(record_id) is not None

    def peek(self) -> Record | None:
        """The record a dequeue would get next, left in place."""
        return self._available.peek()

    def reserve(self) -> Record | None:
        """Hand out the most urgent available record: it stays stored but invisible until released."""
        record = self._available.pop()
        if record is not None:
            self._reserved[record.id] = record
        return record

    def release(self, record_id: int) -> bool:
        """Return a reserved record: it goes to the back of its priority's FIFO, keeping its id."""
        record = self._reserved.pop(record_id, None)
        if record is None:
            return False
        self._available.push(record)
        return True

    def __contains__(self, record_id: int) -> bool:
        return record_id in self._reserved or record_id in self._available

    def is_reserved(self, record_id: int) -> bool:
        return record_id in self._reserved

    def records(self) -> Iterator[Record]:
        """Every stored record, in the order a snapshot writes them (see ``FrozenQueue.records``)."""
        return self.freeze().records()

    def freeze(self) -> FrozenQueue:
        """The queue as it is now, for reading elsewhere (another thread) while this one changes: records
        are immutable, so copying the two containers' references is enough, and costs no Python code per
        record."""
        return FrozenQueue(self.name, self.implementation, self.policies, self.incarnation, self.last_id,
                           self._available.in_push_order(), list(self._reserved.values()))


@dataclass(frozen=True, slots=True)
class FrozenQueue:
    """A queue's settings and records at one instant (``Queue.freeze``)."""

    name: str
    implementation: Implementation
    policies: QueuePolicies
    incarnation: int
    last_id: int
    available: list[Record]  # in push order
    reserved: list[Record]  # in the order they were handed out

    @property
    def stored(self) -> int:
        return len(self.available) + len(self.reserved)

    def records(self) -> Iterator[Record]:
        """Every record, in the order reloading needs: the available ones in push order, then the reserved
        ones. Pushing them in this order rebuilds each priority's FIFO order, with the reserved records at
        the back of their priority as if they had been released. No sort: a snapshot's encoder thread
        must not hold the interpreter lock for one long C call (sorting a million records takes ~0.3 s,
        a stall of every greenlet of the node)."""
        return itertools.chain(self.available, self.reserved)
