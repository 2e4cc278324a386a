"""The priority-queue structure of one queue: smallest priority first, FIFO among equal priorities.

Records live in one FIFO bucket per distinct priority (an ``OrderedDict`` id → record, so the oldest
record pops in O(1) and any record is removed by id in O(1)); a ``PriorityIndex`` says which bucket is
the most urgent. Enqueue, dequeue and remove-by-id are O(log p) for H4 (p = distinct priorities) and
O(log range) for QA; ``len`` is O(1).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from taskflux.domain.errors import Implementation
from taskflux.domain.priority_index import HeapPriorityIndex, PriorityIndex, RangePriorityIndex
from taskflux.domain.records import Record


class PriorityStructure:
    """Records ordered by (priority, arrival). A record pushed again goes to the back of its FIFO."""

    __slots__ = ("_buckets", "_index", "_priority_of")

    def __init__(self, index: PriorityIndex) -> None:
        self._index = index
        self._buckets: dict[int, OrderedDict[int, Record]] = {}
        self._priority_of: dict[int, int] = {}  # record id -> priority, for remove-by-id

    def __len__(self) -> int:
        return len(self._priority_of)

    def __contains__(self, record_id: int) -> bool:
        return record_id in self._priority_of

    def push(self, record: Record) -> None:
        """Insert ``record`` at the back of its priority's FIFO. Its id must not be present."""
        if record.id in self._priority_of:
            raise ValueError(f"record {record.id} is already in the queue")
        bucket = self._buckets.get(record.priority)
        if bucket is None:
            bucket = self._buckets[record.priority] = OrderedDict()
            self._index.add(record.priority)
        bucket[record.id] = record
        self._priority_of[record.id] = record.priority

    def peek(self) -> Record | None:
        """The record ``pop`` would return, left in place."""
        if not self._priority_of:
            return None
        bucket = self._buckets[self._index.min()]
        return bucket[next(iter(bucket))]

    def pop(self) -> Record | None:
        """Remove and return the most urgent record, or None when empty."""
        if not self._priority_of:
            return None
        priority = self._index.min()
        bucket = self._buckets[priority]
        record_id, record = bucket.popitem(last=False)
        del self._priority_of[record_id]
        if not bucket:
            del self._buckets[priority]
            self._index.discard(priority)
        return record

    def remove(self, record_id: int) -> Record | None:
        """Remove the record with this id wherever it is; None when it is not here."""
        priority = self._priority_of.pop(record_id, None)
        if priority is None:
            return None
        bucket = self._buckets[priority]
        record = bucket.pop(record_id)
        if not bucket:
            del self._buckets[priority]
            self._index.discard(priority)
        return record

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
