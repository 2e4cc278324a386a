#!/usr/bin/env python3
"""Microbenchmark of the priority structures: µs per enqueue, dequeue and remove-by-id at 10k, 100k and
1M stored records, for H4 (heap index) and QA (range index over the whole Int64 range).

    python scripts/bench_structures.py [--sizes 10000 100000 1000000] [--ops 20000] [--compare-heapdict]

Priorities are drawn at random from the whole Int64 range (almost all distinct: the worst case for the
index), and for a QA queue with a narrow range also from 0..1023 (many records per priority). Each
operation is timed over ``--ops`` calls on a structure holding n records (remove-by-id picks random
stored records); the last columns compare the growth of the worst operation with log2(n), both relative
to the smallest size.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from heapdict import heapdict

from taskflux.domain.errors import INT64_MAX, INT64_MIN
from taskflux.domain.priority_index import HeapPriorityIndex, RangePriorityIndex
from taskflux.domain.records import Record
from taskflux.domain.structures import PriorityStructure


class HeapDictPriorityIndex:
    """The alternative H4 index, on heapdict: exact deletion of any priority, no stale entries."""

    def __init__(self) -> None:
        self._heap: heapdict = heapdict()

    def add(self, priority: int) -> None:
        self._heap[priority] = priority

    def discard(self, priority: int) -> None:
        del self._heap[priority]

    def min(self) -> int:
        return self._heap.peekitem()[0]


NARROW = (0, 1023)
INDEXES: dict[str, tuple[Callable[[], object], tuple[int, int]]] = {
    "H4 (heapq)": (HeapPriorityIndex, (INT64_MIN, INT64_MAX)),
    "QA (Int64)": (lambda: RangePriorityIndex(INT64_MIN, INT64_MAX), (INT64_MIN, INT64_MAX)),
    "QA (0..1023)": (lambda: RangePriorityIndex(*NARROW), NARROW),
}


def measure(
    make_index: Callable[[], object], bounds: tuple[int, int], size: int, ops: int, rng: random.Random
) -> dict[str, float]:
    structure = PriorityStructure(make_index())  # type: ignore[arg-type]
    priorities = [rng.randint(*bounds) for _ in range(size + ops)]
    for record_id in range(1, size + 1):
        structure.push(Record(record_id, priorities[record_id - 1], b""))
    fresh = [Record(size + 1 + i, priorities[size + i], b"") for i in range(ops)]

    start = time.perf_counter()
    for record in fresh:
        structure.push(record)
    enqueue = time.perf_counter() - start

    start = time.perf_counter()
    for _ in range(ops):
        structure.pop()
    dequeue = time.perf_counter() - start

    victims = rng.sample(range(1, size + 1), min(ops, size))
    start = time.perf_counter()
    for record_id in victims:
        structure.remove(record_id)
    remove = time.perf_counter() - start
    return {"enqueue": enqueue * 1e6 / ops, "dequeue": dequeue * 1e6 / ops, "remove": remove * 1e6 / len(victims)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--ops", type=int, default=5_000)
    parser.add_argument("--compare-heapdict", action="store_true", help="also measure an H4 index on heapdict")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    indexes = dict(INDEXES)
    if args.compare_heapdict:
        indexes["H4 (heapdict)"] = (HeapDictPriorityIndex, (INT64_MIN, INT64_MAX))
    print(f"{'structure':<15}{'records':>10}{'enqueue µs':>12}{'dequeue µs':>12}{'remove µs':>12}"
          f"{'worst/base':>12}{'log2 ratio':>12}")
    for name, (make_index, bounds) in indexes.items():
        base: dict[str, float] | None = None
        for size in args.sizes:
            result = measure(make_index, bounds, size, args.ops, random.Random(args.seed))
            base = base or result
            growth = max(result[op] / base[op] for op in result)
            log_ratio = math.log2(size) / math.log2(args.sizes[0])
            print(f"{name:<15}{size:>10}{result['enqueue']:>12.2f}{result['dequeue']:>12.2f}{result['remove']:>12.2f}"
                  f"{growth:>12.2f}{log_ratio:>12.2f}")


if __name__ == "__main__":
    main()
