"""One queue: its settings, its records, and the leader-local reservations of dequeued records."""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from taskflux.domain.errors import Implementation
from taskflux.domain.policies import QueuePolicies
from taskflux.domain.records import Record
from taskflux.domain.structures import PriorityStructure, new_structure


class Queue:
    """A named priority queue.

    Records are *ready* (in the priority structure, seen by dequeue and Count), *delayed* (not due yet: by
    leader time, see ``QueueManager``) or *reserved* (handed to a consumer, awaiting its ack). Reservations are
    leader-local and never logged: a reserved record is still part of the replicated state until a removal
    of it is applied.

    ``incarnation`` tells apart two queues that had the same name at different times, so an ack for a
    record of a deleted queue never removes a record of its successor. ``keys`` remembers the idempotency
    keys of recent enqueues (key → (record id, leader time)), oldest first.
    """

    __slots__ = ("_available", "_delayed", "_due", "_reserved", "dequeued_total", "enqueued_total",
                 "implementation", "incarnation", "keys", "last_id", "name", "policies")

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
        self._delayed: dict[int, Record] = {}
        self._due: list[tuple[int, int]] = []  # (not_before, id) heap; entries whose record left are skipped
        self.keys: OrderedDict[bytes, tuple[int, int]] = OrderedDict()
        # Statistics of this process, not replicated state: records added here (every node applies the same),
        # records handed out here (the leader only).
        self.enqueued_total = 0
        self.dequeued_total = 0

    @property
    def count(self) -> int:
        """Records ready to dequeue: what Count reports (delayed and reserved records are not counted)."""
        return len(self._available)

    @property
    def stored(self) -> int:
        """Every record the queue holds, delayed and reserved ones included: the replicated size."""
        return len(self._available) + len(self._reserved) + len(self._delayed)

    @property
    def reserved_count(self) -> int:
        return len(self._reserved)

    @property
    def delayed_count(self) -> int:
        return len(self._delayed)

    def add(self, priority: int, payload: bytes) -> Record:
        """Store a new ready record with the next id (policies are the caller's business)."""
        self.last_id += 1
        self.enqueued_total += 1
        record = Record(self.last_id, priority, payload)
        self._available.push(record)
        return record

    def add_record(self, template: Record, clock: int) -> tuple[Record, bool]:
        """Store a copy of ``template`` under the next id: ready, or delayed when it is not due at ``clock``.
        The record, and True when it is ready."""
        self.last_id += 1
        self.enqueued_total += 1
        record = Record(self.last_id, template.priority, template.payload, template.failed_deliveries,
                        template.not_before, template.origin)
        return record, self.place(record, clock)

    def place(self, record: Record, clock: int) -> bool:
        """Put a record that is in none of the three places back: True when it is ready, False when delayed."""
        if record.not_before > clock:
            self._delayed[record.id] = record
            heapq.heappush(self._due, (record.not_before, record.id))
            return False
        self._available.push(record)
        return True

    def restore(self, record: Record, clock: int = 0) -> None:
        """Put back a record read from a snapshot (ids above ``last_id`` raise it)."""
        self.place(record, clock)
        self.last_id = max(self.last_id, record.id)

    def take(self, record_id: int) -> Record | None:
        """Take a record out for good, wherever it is (ready, delayed or reserved); None when it is not here."""
        record = self._reserved.pop(record_id, None)
        if record is None:
            record = self._available.remove(record_id)
            if record is None:
                record = self._delayed.pop(record_id, None)
        return record

    def remove(self, record_id: int) -> bool:
        """Remove a record for good, wherever it is. False when it is not here."""
        return self.take(record_id) is not None

    def next_due(self) -> int | None:
        """The earliest time a delayed record becomes due; None when none is delayed."""
        due = self._due
        while due and self._delayed.get(due[0][1]) is None:
            heapq.heappop(due)
        return due[0][0] if due else None

    def promote(self, clock: int) -> int:
        """Make every delayed record due at ``clock`` ready, earliest first (ties by id); how many."""
        due, delayed, promoted = self._due, self._delayed, 0
        while due and due[0][0] <= clock:
            not_before, record_id = heapq.heappop(due)
            record = delayed.get(record_id)
            if record is not None and record.not_before == not_before:
                del delayed[record_id]
                self._available.push(record)
                promoted += 1
        if not delayed:
            due.clear()
        return promoted

    def peek(self) -> Record | None:
        """The record a dequeue would get next, left in place."""
        return self._available.peek()

    def first(self, limit: int) -> list[Record]:
        """Up to ``limit`` ready records in dequeue order, left in place."""
        return self._available.first(limit)

    def reserve(self) -> Record | None:
        """Hand out the most urgent ready record: it stays stored but invisible until released."""
        record = self._available.pop()
        if record is not None:
            self._reserved[record.id] = record
            self.dequeued_total += 1
        return record

    def release(self, record_id: int) -> bool:
        """Return a reserved record: it goes to the back of its priority's FIFO, keeping its id."""
        record = self._reserved.pop(record_id, None)
        if record is None:
            return False
        self._available.push(record)
        return True

    def __contains__(self, record_id: int) -> bool:
        return record_id in self._reserved or record_id in self._available or record_id in self._delayed

    def is_reserved(self, record_id: int) -> bool:
        return record_id in self._reserved

    # --- idempotency keys ---

    def known_key(self, key: bytes, clock: int) -> int | None:
        """The id the first enqueue with ``key`` got, while the queue remembers it."""
        known = self.keys.get(key)
        if known is None or known[1] <= clock - self.policies.delivery.dedup_window_ms:
            return None
        return known[0]

    def remember_key(self, key: bytes, record_id: int, clock: int) -> None:
        """Remember ``key`` → ``record_id`` and forget what falls out of the window (count, then time)."""
        delivery = self.policies.delivery
        if not delivery.dedup_enabled:
            return
        keys = self.keys
        keys[key] = (record_id, clock)
        keys.move_to_end(key)
        while len(keys) > delivery.dedup_max_keys:
            keys.popitem(last=False)
        self.forget_keys(clock)

    def forget_keys(self, clock: int) -> None:
        """Forget the keys older than the window at ``clock``."""
        keys, horizon = self.keys, clock - self.policies.delivery.dedup_window_ms
        while keys:
            oldest = next(iter(keys.values()))
            if oldest[1] > horizon:
                break
            keys.popitem(last=False)

    def records(self) -> Iterator[Record]:
        """Every stored record, in the order a snapshot writes them (see ``FrozenQueue.records``)."""
        return self.freeze().records()

    def freeze(self) -> FrozenQueue:
        """The queue as it is now, for reading elsewhere (another thread) while this one changes: records
        are immutable, so copying the containers' references is enough, and costs no Python code per
        record."""
        return FrozenQueue(self.name, self.implementation, self.policies, self.incarnation, self.last_id,
                           self._available.in_push_order(), list(self._reserved.values()),
                           list(self._delayed.values()), list(self.keys.items()))


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
    delayed: list[Record]  # in the order they were delayed
    keys: list[tuple[bytes, tuple[int, int]]]  # oldest first

    @property
    def stored(self) -> int:
        return len(self.available) + len(self.reserved) + len(self.delayed)

    def records(self) -> Iterator[Record]:
        """Every record, in the order reloading needs: the ready ones in push order, then the reserved
        ones, then the delayed ones. Pushing them in this order rebuilds each priority's FIFO order, with the
        reserved records at the back of their priority as if they had been released; delayed records go back
        to the delayed set (their order there is by due time). No sort: a snapshot's encoder thread must not
        hold the interpreter lock for one long C call (sorting a million records takes ~0.3 s, a stall of
        every greenlet of the node)."""
        return itertools.chain(self.available, self.reserved, self.delayed)
