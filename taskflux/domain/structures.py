"""The priority-queue structure of one queue: smallest priority first, FIFO among equal priorities.

Records live in one FIFO bucket per distinct priority (an ``OrderedDict`` id → record, so the oldest
record pops in O(1) and any record is removed by id in O(1)); a ``PriorityIndex`` says which bucket is
the most urgent. Enqueue, dequeue and remove-by-id are O(log p) for H4 (p = distinct priorities) and
O(log range) for QA; ``len`` is O(1).
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Iterator

from taskflux.domain.errors import Implementation
from taskflux.domain.priority_index import HeapPriorityIndex, PriorityIndex, RangePriorityIndex
from taskflux.domain.records import Record


class PriorityStructure:
    """Records ordered by (priority, arrival). A record pushed again goes to the back of its FIFO."""

    __slots__ = ("_buckets", "_index", "_records")

    def __init__(self, index: PriorityIndex) -> None:
        self._index = index
        self._buckets: dict[int, OrderedDict[int, Record]] = {}
        # record id -> record, in push order: remove-by-id, and among one priority the bucket's FIFO order
        self._records: dict[int, Record] = {}

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, record_id: int) -> bool:
        return record_id in self._records

    def push(self, record: Record) -> None:
        """Insert ``record`` at the back of its priority's FIFO. Its id must not be present."""
        if record.id in self._records:
            raise ValueError(f"record {record.id} is already in the queue")
        bucket = self._buckets.get(record.priority)
        if bucket is None:
            bucket = self._buckets[record.priority] = OrderedDict()
            self._index.add(record.priority)
        bucket[record.id] = record
        self._records[record.id] = record

    def peek(self) -> Record | None:
        """The record ``pop`` would return, left in place."""
        if not self._records:
            return None
        bucket = self._buckets[self._index.min()]
        return bucket[next(iter(bucket))]

    def pop(self) -> Record | None:
        """Remove and return the most urgent record, or None when empty."""
        if not self._records:
            return None
        priority = self._index.min()
        bucket = self._buckets[priority]
        record_id, record = bucket.popitem(last=False)
        del self._records[record_id]
        if not bucket:
            del self._buckets[priority]
            self._index.discard(priority)
        return record

    def remove(self, record_id: int) -> Record | None:
        """Remove the record with this id wherever it is; None when it is not here."""
        record = self._records.pop(record_id, None)
        if record is None:
            return None
        bucket = self._buckets[record.priority]
        del bucket[record_id]
        if not bucket:
            del self._buckets[record.priority]
            self._index.discard(record.priority)
        return record

    def first(self, limit: int) -> list[Record]:
        """Up to ``limit`` records in dequeue order, left in place (each bucket holds at least one record, so the
        ``limit`` smallest priorities are enough)."""
        found: list[Record] = []
        for priority in heapq.nsmallest(limit, self._buckets):
            found.extend(itertools.islice(self._buckets[priority].values(), limit - len(found)))
            if len(found) >= limit:
                break
        return found

    def in_push_order(self) -> list[Record]:
        """Every record, in the order they were pushed: a copy made at C speed (no per-record Python code),
        which a stable sort by priority turns into dequeue order."""
        return list(self._records.values())

    def __iter__(self) -> Iterator[Record]:
        """Every record in dequeue order (sorts the distinct priorities: for snapshots, not hot paths)."""
        for priority in sorted(self._buckets):
            yield from self._buckets[priority].values()


def new_structure(implementation: Implementation, priority_range: tuple[int, int] | None) -> PriorityStructure:
    """An empty structure for a queue of this implementation (QA needs its priority range)."""
    if implementation is Implementation.H4:
        return PriorityStructure(HeapPriorityIndex())
    if priority_range is None:
        raise ValueError("a QA queue needs a priority range")
    return PriorityStructure(RangePriorityIndex(*priority_range))
