"""Both priority structures against a plain reference model: a list kept sorted by (priority, arrival)."""

from __future__ import annotations

import bisect
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskflux.domain.errors import INT64_MAX, INT64_MIN, Implementation
from taskflux.domain.priority_index import RangePriorityIndex
from taskflux.domain.records import Record
from taskflux.domain.structures import PriorityStructure, new_structure


class SortedListModel:
    """The obvious, slow structure: (priority, arrival number, record) in a sorted list."""

    def __init__(self) -> None:
        self.items: list[tuple[int, int, Record]] = []
        self.arrivals = itertools.count()

    def push(self, record: Record) -> None:
        bisect.insort(self.items, (record.priority, next(self.arrivals), record), key=lambda item: item[:2])

    def pop(self) -> Record | None:
        return self.items.pop(0)[2] if self.items else None

    def remove(self, record_id: int) -> Record | None:
        for position, (_, _, record) in enumerate(self.items):
            if record.id == record_id:
                del self.items[position]
                return record
        return None

    def records(self) -> list[Record]:
        return [record for _, _, record in self.items]


RANGES = [
    (INT64_MIN, INT64_MAX), (-5, 5), (0, 0), (10, 10_000), (INT64_MIN, INT64_MIN + 3), (INT64_MAX - 200, INT64_MAX),
]

operations = st.lists(
    st.tuples(st.sampled_from(["push", "push", "pop", "remove", "nack"]), st.integers(0, 2**64), st.integers(0, 50)),
    max_size=120,
)


def run_against_model(structure: PriorityStructure, low: int, high: int, ops: list[tuple[str, int, int]]) -> None:
    model = SortedListModel()
    next_id = 1
    popped: list[Record] = []
    for op, number, pick in ops:
        if op == "push":
            # Concentrate priorities on a few values (FIFO ties) and on the range's edges.
            choices = [low, high, low + (high - low) // 2, low + number % (high - low + 1)]
            priority = choices[pick % len(choices)]
            record = Record(next_id, priority, b"%d" % next_id)
            next_id += 1
            structure.push(record)
            model.push(record)
        elif op == "pop":
            expected = model.pop()
            assert structure.peek() == expected
            assert structure.pop() == expected
            if expected is not None:
                popped.append(expected)
        elif op == "remove":
            record_id = pick % next_id if number % 4 else next_id + 7  # sometimes an id that is not there
            assert structure.remove(record_id) == model.remove(record_id)
        elif op == "nack" and popped:
            record = popped.pop(pick % len(popped))
            structure.push(record)  # a returned record keeps its id and goes to the back of its FIFO
            model.push(record)
        assert len(structure) == len(model.items)
    assert list(structure) == model.records()
    drained = [structure.pop() for _ in range(len(structure))]
    assert drained == model.records()
    assert structure.pop() is None and len(structure) == 0


@settings(max_examples=150, deadline=None)
@given(ops=operations)
def test_h4_matches_sorted_list(ops: list[tuple[str, int, int]]) -> None:
    run_against_model(new_structure(Implementation.H4, None), INT64_MIN, INT64_MAX, ops)


@settings(max_examples=150, deadline=None)
@given(ops=operations, bounds=st.sampled_from(RANGES))
def test_qa_matches_sorted_list(ops: list[tuple[str, int, int]], bounds: tuple[int, int]) -> None:
    run_against_model(new_structure(Implementation.QA, bounds), *bounds, ops)


@settings(max_examples=100, deadline=None)
@given(
    bounds=st.sampled_from(RANGES),
    steps=st.lists(st.tuples(st.booleans(), st.integers(0, 2**64)), max_size=200),
)
def test_range_index_minimum_matches_a_set(bounds: tuple[int, int], steps: list[tuple[bool, int]]) -> None:
    low, high = bounds
    index = RangePriorityIndex(low, high)
    present: set[int] = set()
    for add, number in steps:
        priority = low + number % (high - low + 1)
        if add and priority not in present:
            index.add(priority)
            present.add(priority)
        elif not add and present:
            victim = sorted(present)[number % len(present)]
            index.discard(victim)
            present.discard(victim)
        if present:
            assert index.min() == min(present)


def test_qa_over_the_whole_int64_range_allocates_by_records_not_by_range() -> None:
    structure = new_structure(Implementation.QA, (INT64_MIN, INT64_MAX))
    priorities = [INT64_MAX, INT64_MIN, 0, -1, 1, INT64_MAX - 1]
    for record_id, priority in enumerate(priorities, start=1):
        structure.push(Record(record_id, priority, b""))
    index = structure._index
    assert isinstance(index, RangePriorityIndex)
    nodes = sum(len(level) for level in index._levels)
    assert nodes <= len(priorities) * len(index._levels)
    assert [structure.pop().priority for _ in priorities] == sorted(priorities)  # type: ignore[union-attr]


def test_pushing_a_present_id_is_refused() -> None:
    structure = new_structure(Implementation.H4, None)
    structure.push(Record(1, 0, b""))
    with pytest.raises(ValueError):
        structure.push(Record(1, 5, b""))


def test_heap_index_compacts_stale_priorities() -> None:
    """Removing many distinct priorities that never reach the top must not grow the heap forever."""
    structure = new_structure(Implementation.H4, None)
    structure.push(Record(1, -1, b"pinned at the top"))
    for record_id in range(2, 5000):
        structure.push(Record(record_id, record_id, b""))
        structure.remove(record_id)
    assert len(structure._index._heap) < 200  # type: ignore[attr-defined]
    assert structure.pop() == Record(1, -1, b"pinned at the top")
