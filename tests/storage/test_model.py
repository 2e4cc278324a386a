"""DiskStorage against a plain reference model (a list of entries and a snapshot meta), with random
reopens, suffix truncations, commits and snapshots (hypothesis stateful testing)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from taskflux.raft.storage import LogCompacted, LogUnavailable
from taskflux.raft.types import Entry, HardState, SnapshotMeta
from taskflux.storage import DiskStorage
from taskflux.storage.records import encode_entries

LIMITS = {"soft_limit_bytes": 120, "hard_limit_bytes": 260}


class StorageMachine(RuleBasedStateMachine):
    base_dir: Path
    counter = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        self.path = self.base_dir / f"run{next(self.counter)}"
        self.storage = DiskStorage(self.path, **LIMITS)
        self.model: list[Entry] = []  # the entries the storage must hold, contiguous
        self.model_first = 1
        self.snapshot = SnapshotMeta()
        self.snapshot_data = b""
        self.committed = 0
        self.hard_state = HardState()

    # --- the reference model -----------------------------------------------------------------

    @property
    def model_last(self) -> int:
        return self.model_first + len(self.model) - 1

    def model_term(self, index: int) -> int:
        if self.model_first <= index <= self.model_last:
            return self.model[index - self.model_first].term
        if index == self.snapshot.index:
            return self.snapshot.term
        assert index == 0, index
        return 0

    # --- rules ---------------------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        pass

    @rule(data=st.data())
    def append(self, data: st.DataObject) -> None:
        lo = max(self.snapshot.index, self.committed) + 1
        start = data.draw(st.integers(lo, self.model_last + 1), label="start")
        count = data.draw(st.integers(1, 5), label="count")
        steps = data.draw(st.lists(st.integers(0, 1), min_size=count, max_size=count), label="term steps")
        sizes = data.draw(st.lists(st.integers(0, 90), min_size=count, max_size=count), label="sizes")
        term = self.model_term(start - 1) + (start <= self.model_last)  # a conflict brings a new term
        entries = []
        for k, (step, size) in enumerate(zip(steps, sizes, strict=True)):
            term += step
            entries.append(Entry(start + k, term, bytes([(start + k) % 256]) * size))
        self.storage.append(entries)
        self.model = self.model[: start - self.model_first] + entries

    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        self.committed = data.draw(st.integers(self.committed, self.model_last), label="commit")
        self.storage.set_committed(self.committed)

    @rule(data=st.data(), payload=st.binary(max_size=200))
    def save_snapshot(self, data: st.DataObject, payload: bytes) -> None:
        index = data.draw(st.integers(self.snapshot.index + 1, self.model_last + 3), label="index")
        in_log = self.model_first <= index <= self.model_last
        # Raft never conflicts with a committed entry: a snapshot at or below the commit index matches.
        matching = in_log and (index <= self.committed or data.draw(st.booleans(), label="matching"))
        term = self.model_term(index) if matching else data.draw(st.integers(1, 9), label="term")
        if in_log and term == self.model_term(index):
            matching = True
        meta = SnapshotMeta(index, term)
        self.storage.save_snapshot(meta, [payload[:50], payload[50:]])
        if not matching:
            self.model = []
            self.model_first = index + 1
        self.snapshot, self.snapshot_data = meta, payload
        self.committed = max(self.committed, index)

    @rule(term=st.integers(0, 50), vote=st.integers(-1, 4))
    def set_hard_state(self, term: int, vote: int) -> None:
        self.hard_state = HardState(term, vote)
        self.storage.set_hard_state(self.hard_state)

    @rule()
    def reopen(self) -> None:
        self.storage.close()
        self.storage = DiskStorage(self.path, **LIMITS)
        self.committed = self.snapshot.index

    @precondition(lambda self: any((self.path / "log").iterdir()))
    @rule(data=st.data())
    def crash_during_append(self, data: st.DataObject) -> None:
        """The process dies while writing a batch: a prefix of its bytes reached the last segment."""
        start = self.model_last + 1
        count = data.draw(st.integers(1, 4), label="count")
        prev_term = self.model_term(start - 1)
        entries = [Entry(start + k, prev_term, bytes([k]) * (10 * k)) for k in range(count)]
        batch = encode_entries(entries, prev_term, 1 << 20)
        raw = batch.join(0, count)
        cut = data.draw(st.integers(0, len(raw)), label="bytes written")
        self.storage.close()
        with open(sorted((self.path / "log").iterdir())[-1], "ab") as f:
            f.write(raw[:cut])
        self.storage = DiskStorage(self.path, **LIMITS)
        self.committed = self.snapshot.index
        self.model += entries[: sum(1 for end in batch.ends if end <= cut)]

    @precondition(lambda self: self.storage.last_index() >= self.storage.first_index())
    @rule(data=st.data())
    def bounded_read(self, data: st.DataObject) -> None:
        s = self.storage
        lo = data.draw(st.integers(s.first_index(), s.last_index()), label="lo")
        hi = data.draw(st.integers(lo + 1, s.last_index() + 1), label="hi")
        max_bytes = data.draw(st.integers(0, 300), label="max_bytes")
        got = s.entries(lo, hi, max_bytes)
        want = self.model[lo - self.model_first : hi - self.model_first]
        assert got == want[: len(got)] and got
        assert len(got) == 1 or sum(len(e.data) for e in got) <= max_bytes
        if len(got) < len(want):
            assert sum(len(e.data) for e in want[: len(got) + 1]) > max_bytes

    # --- checks after every step ------------------------------------------------------------

    @invariant()
    def matches_the_model(self) -> None:
        s = self.storage
        first = s.first_index()
        # Compaction drops whole segments: the storage may keep entries the snapshot covers.
        assert self.model_first <= first <= self.snapshot.index + 1
        self.model = self.model[first - self.model_first :]
        self.model_first = first
        assert s.last_index() == self.model_last
        assert s.entries(first, s.last_index() + 1, 1 << 30) == self.model
        for index in {0, self.snapshot.index, *range(first, self.model_last + 1)}:
            assert s.term(index) == self.model_term(index)
        if first - 1 not in (0, self.snapshot.index):
            with pytest.raises(LogCompacted):
                s.term(first - 1)
        with pytest.raises(LogUnavailable):
            s.term(self.model_last + 1)
        assert s.snapshot_meta() == self.snapshot
        assert s.read_snapshot(0, 1000) == self.snapshot_data
        assert s.hard_state() == self.hard_state

    def teardown(self) -> None:
        self.storage.close()


def test_disk_storage_behaves_like_the_model(tmp_path: Path) -> None:
    StorageMachine.base_dir = tmp_path
    run_state_machine_as_test(
        StorageMachine,
        settings=settings(
            max_examples=100,
            stateful_step_count=40,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
