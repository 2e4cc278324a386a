"""Indexes over the distinct priorities present in a queue: which priority is the most urgent now.

A priority structure keeps one FIFO bucket per distinct priority; the index only answers "what is the
smallest priority that has a bucket". Two implementations, one per queue implementation:

* ``HeapPriorityIndex`` (H4): a binary heap (``heapq``) with lazy deletion.
* ``RangePriorityIndex`` (QA): a sparse hierarchical bitmap over ``priority - min`` for queues with a
  priority range. Its cost depends on the width of the range (at most 11 levels of 64-way nodes for the
  full Int64 range), not on the number of records, and it allocates nothing per possible priority.

Why heapq and not heapdict for H4: heapdict (pure Python, one wrapper list per key) is what one would
reach for to delete an arbitrary priority, but measured here (``scripts/bench_structures.py
--compare-heapdict``) the heapq index with lazy deletion and periodic compaction is several times
faster per operation at 10k–1M records and still amortised O(log n), so heapdict does not earn its place.
"""

from __future__ import annotations

import heapq
from typing import Protocol


class PriorityIndex(Protocol):
    """The set of priorities that currently hold records, with fast access to the smallest one."""

    def add(self, priority: int) -> None:
        """Record that ``priority`` now has a bucket (it had none)."""
        ...

    def discard(self, priority: int) -> None:
        """Record that the bucket of ``priority`` is gone."""
        ...

    def min(self) -> int:
        """The smallest present priority; only called when at least one is present."""
        ...


class HeapPriorityIndex:
    """A min-heap of priorities; a discarded priority stays in the heap until it surfaces or until
    stale entries outnumber live ones, when the heap is rebuilt (amortised O(1) per discard)."""

    __slots__ = ("_heap", "_present", "_queued")

    _COMPACT_SLACK = 64

    def __init__(self) -> None:
        self._heap: list[int] = []
        self._present: set[int] = set()
        self._queued: set[int] = set()  # priorities physically in the heap, live or stale

    def add(self, priority: int) -> None:
        self._present.add(priority)
        if priority not in self._queued:
            self._queued.add(priority)
            heapq.heappush(self._heap, priority)

    def discard(self, priority: int) -> None:
        self._present.discard(priority)
        heap = self._heap
        if heap and heap[0] == priority:
            heapq.heappop(heap)
            self._queued.discard(priority)
        elif len(heap) > 2 * len(self._present) + self._COMPACT_SLACK:
            self._heap = list(self._present)
            heapq.heapify(self._heap)
            self._queued = set(self._present)

    def min(self) -> int:
        heap = self._heap
        present = self._present
        while heap[0] not in present:
            self._queued.discard(heapq.heappop(heap))
        return heap[0]


class RangePriorityIndex:
    """A sparse 64-way bitmap tree over the offsets ``priority - minimum`` of a bounded range.

    Level 0 is the root; the leaves (level ``depth - 1``) hold one bit per offset. A node exists only
    while some offset under it is present, so memory follows the number of distinct priorities present.
    """

    __slots__ = ("_depth", "_levels", "_min_cache", "_minimum")

    def __init__(self, minimum: int, maximum: int) -> None:
        if maximum < minimum:
            raise ValueError(f"empty priority range [{minimum}, {maximum}]")
        self._minimum = minimum
        span_bits = max(1, (maximum - minimum).bit_length())
        self._depth = (span_bits + 5) // 6
        # _levels[d] maps the prefix of an offset above level d's 6 bits to that node's 64-bit mask.
        self._levels: list[dict[int, int]] = [{} for _ in range(self._depth)]
        self._min_cache: int | None = None

    def add(self, priority: int) -> None:
        offset = priority - self._minimum
        shift = 0
        for level in reversed(self._levels):
            key = offset >> (shift + 6)
            mask = level.get(key, 0)
            level[key] = mask | (1 << ((offset >> shift) & 63))
            if mask:
                break  # the parents already know this subtree is occupied
            shift += 6
        if self._min_cache is not None and priority < self._min_cache:
            self._min_cache = priority

    def discard(self, priority: int) -> None:
        offset = priority - self._minimum
        shift = 0
        for level in reversed(self._levels):
            key = offset >> (shift + 6)
            mask = level[key] & ~(1 << ((offset >> shift) & 63))
            if mask:
                level[key] = mask
                break
            del level[key]
            shift += 6
        if priority == self._min_cache:
            self._min_cache = None

    def min(self) -> int:
        if self._min_cache is None:
            prefix = 0
            for level in self._levels:
                mask = level[prefix]
                prefix = (prefix << 6) | ((mask & -mask).bit_length() - 1)
            self._min_cache = self._minimum + prefix
        return self._min_cache
