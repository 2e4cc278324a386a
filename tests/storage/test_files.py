"""Hard state and snapshot files: round trips, atomic replacement, crash between write and rename."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from zlib import crc32

import pytest

from taskflux.raft.members import Member, Members
from taskflux.raft.types import HardState, SnapshotMeta
from taskflux.storage import DiskStorage, StorageCorrupted
from taskflux.storage import log as log_module

from .helpers import all_entries, flip_byte, make_entries, open_storage, segment_files


class Crash(Exception):
    pass


def crash(*_args: object) -> None:
    raise Crash


# --- hard state -----------------------------------------------------------------------------------


def test_hard_state_crash_before_rename_keeps_the_old_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with DiskStorage(tmp_path) as s:
        s.set_hard_state(HardState(3, 1))
        with monkeypatch.context() as m:
            m.setattr(os, "replace", crash)
            with pytest.raises(Crash):
                s.set_hard_state(HardState(4, 2))
        assert s.hard_state() == HardState(3, 1)
    with DiskStorage(tmp_path) as s:
        assert s.hard_state() == HardState(3, 1)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_stale_temp_files_are_removed_at_open(tmp_path: Path) -> None:
    with DiskStorage(tmp_path) as s:
        s.set_hard_state(HardState(5, 0))
        s.save_snapshot(SnapshotMeta(1, 1), [b"old"])
    # What a crash between the temp write and the rename leaves behind.
    (tmp_path / "tmp" / "hardstate.tmp").write_bytes(b"half a hard state")
    (tmp_path / "tmp" / "snapshot.tmp").write_bytes(b"half a snapshot")
    (tmp_path / "tmp" / f"{2:020d}.log.tmp").write_bytes(b"TFLS")
    with DiskStorage(tmp_path) as s:
        assert s.hard_state() == HardState(5, 0)
        assert s.snapshot_meta() == SnapshotMeta(1, 1) and s.read_snapshot(0, 100) == b"old"
        assert list((tmp_path / "tmp").iterdir()) == []


def test_missing_hard_state_is_the_default(tmp_path: Path) -> None:
    with DiskStorage(tmp_path) as s:
        assert s.hard_state() == HardState()
        s.set_hard_state(HardState())
    assert not (tmp_path / "hardstate").exists()


@pytest.mark.parametrize("damage", ["flip term", "flip checksum", "short", "long", "magic"])
def test_corrupt_hard_state_is_refused(tmp_path: Path, damage: str) -> None:
    with DiskStorage(tmp_path) as s:
        s.set_hard_state(HardState(9, 1))
    path = tmp_path / "hardstate"
    if damage == "flip term":
        flip_byte(path, 12)
    elif damage == "flip checksum":
        flip_byte(path, 27)
    elif damage == "short":
        os.truncate(path, 20)
    elif damage == "long":
        path.write_bytes(path.read_bytes() + b"\0")
    else:
        flip_byte(path, 0)
    with pytest.raises(StorageCorrupted, match="hardstate"):
        DiskStorage(tmp_path)


# --- snapshot -------------------------------------------------------------------------------------


def test_snapshot_round_trip_and_streaming(tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    with open_storage(tmp_path) as s:
        s.append(make_entries(1, 20))
        s.save_snapshot(SnapshotMeta(15, 1), (data[k : k + 4096] for k in range(0, len(data), 4096)))
        assert s.snapshot_size() == len(data)
        assert s.read_snapshot(0, 10) == data[:10]
        assert s.read_snapshot(len(data) - 5, 100) == data[-5:]
        assert s.read_snapshot(len(data), 100) == b""
        reader = s.open_snapshot_data()
    with reader:  # independent of the storage: still readable after close
        assert reader.read(3) == data[:3]
        reader.seek(1000)
        assert reader.read() == data[1000:]
    with open_storage(tmp_path) as s:
        assert s.snapshot_meta() == SnapshotMeta(15, 1) and s.snapshot_size() == len(data)
        assert s.first_index() <= 16 and s.last_index() == 20
        with s.open_snapshot_data() as reader:
            assert reader.read() == data
    assert (tmp_path / "snapshot").stat().st_size == 40 + 4 + len(data) + 4  # no membership recorded


def test_snapshot_reader_survives_a_newer_snapshot(tmp_path: Path) -> None:
    with DiskStorage(tmp_path) as s:
        s.save_snapshot(SnapshotMeta(3, 1), [b"first"])
        with s.open_snapshot_data() as reader:
            s.save_snapshot(SnapshotMeta(5, 1), [b"second"])
            assert reader.read() == b"first"
        assert s.read_snapshot(0, 100) == b"second"
        with DiskStorage(tmp_path / "empty") as empty, empty.open_snapshot_data() as nothing:
            assert nothing.read() == b""


def test_snapshot_keeps_the_log_after_a_matching_entry(tmp_path: Path) -> None:
    entries = make_entries(1, 30)
    with open_storage(tmp_path) as s:
        s.append(entries)
        s.save_snapshot(SnapshotMeta(17, 1), [b"s"])
        first = s.first_index()
        assert first <= 18
        assert all(int(f.name[:20]) >= first for f in segment_files(tmp_path))
        assert all_entries(s) == entries[first - 1 :]
        s.append(make_entries(31, 1))
    with open_storage(tmp_path) as s:
        assert s.first_index() == first and s.last_index() == 31


@pytest.mark.parametrize("meta", [SnapshotMeta(17, 2), SnapshotMeta(40, 3)])
def test_snapshot_without_a_matching_entry_discards_the_log(tmp_path: Path, meta: SnapshotMeta) -> None:
    with open_storage(tmp_path) as s:
        s.append(make_entries(1, 30))
        s.save_snapshot(meta, [b"leader's state"])
        assert (s.first_index(), s.last_index()) == (meta.index + 1, meta.index)
        assert s.term(meta.index) == meta.term
        assert segment_files(tmp_path) == []
        s.append(make_entries(meta.index + 1, 2, term=meta.term))
    with open_storage(tmp_path) as s:
        assert (s.first_index(), s.last_index()) == (meta.index + 1, meta.index + 2)
        assert s.snapshot_meta() == meta


def test_older_snapshot_is_ignored(tmp_path: Path) -> None:
    with DiskStorage(tmp_path) as s:
        s.save_snapshot(SnapshotMeta(5, 1), [b"new"])

        def never() -> Iterator[bytes]:
            raise AssertionError("chunks of an ignored snapshot must not be read")
            yield b""

        s.save_snapshot(SnapshotMeta(4, 1), never())
        s.save_snapshot(SnapshotMeta(5, 1), [b"same index"])
        assert s.snapshot_meta() == SnapshotMeta(5, 1) and s.read_snapshot(0, 10) == b"new"


def test_snapshot_crash_before_rename_keeps_the_old_one_and_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = make_entries(1, 30)
    with open_storage(tmp_path) as s:
        s.append(entries)
        s.save_snapshot(SnapshotMeta(5, 1), [b"old"])
        first = s.first_index()
        with monkeypatch.context() as m:
            m.setattr(os, "replace", crash)
            with pytest.raises(Crash):
                s.save_snapshot(SnapshotMeta(25, 1), [b"new"])
        assert s.snapshot_meta() == SnapshotMeta(5, 1) and s.read_snapshot(0, 10) == b"old"
        assert s.first_index() == first
    with open_storage(tmp_path) as s:
        assert s.snapshot_meta() == SnapshotMeta(5, 1) and s.read_snapshot(0, 10) == b"old"
        assert all_entries(s) == entries[first - 1 :]


def test_failing_chunk_source_leaves_no_trace(tmp_path: Path) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"partial"
        raise Crash

    with DiskStorage(tmp_path) as s:
        with pytest.raises(Crash):
            s.save_snapshot(SnapshotMeta(5, 1), chunks())
        assert s.snapshot_meta() == SnapshotMeta()
    assert list((tmp_path / "tmp").iterdir()) == [] and not (tmp_path / "snapshot").exists()


@pytest.mark.parametrize("step", ["drop_through", "discard_all"])
def test_crash_after_snapshot_rename_is_finished_at_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    meta = SnapshotMeta(17, 1) if step == "drop_through" else SnapshotMeta(17, 9)
    with open_storage(tmp_path) as s:
        s.append(make_entries(1, 30))
        with monkeypatch.context() as m:
            m.setattr(log_module.SegmentedLog, step, crash)
            with pytest.raises(Crash):
                s.save_snapshot(meta, [b"state"])
    assert int(segment_files(tmp_path)[0].name[:20]) == 1  # nothing was deleted
    with open_storage(tmp_path) as s:
        assert s.snapshot_meta() == meta
        if step == "drop_through":
            assert 1 < s.first_index() <= 18 and s.last_index() == 30
        else:
            assert (s.first_index(), s.last_index()) == (18, 17)


def _write_raw_snapshot(path: Path, index: int, term: int, data: bytes, declared: int | None = None) -> None:
    size = len(data) if declared is None else declared
    body = struct.pack(">4sIQQQ", b"TFSN", 1, index, term, size)
    path.write_bytes(body + struct.pack(">I", crc32(body)) + data + struct.pack(">I", crc32(data)))


@pytest.mark.parametrize("damage", ["flip data", "flip header", "flip trailer", "truncated", "huge length"])
def test_corrupt_snapshot_is_refused(tmp_path: Path, damage: str) -> None:
    with DiskStorage(tmp_path) as s:
        s.save_snapshot(SnapshotMeta(4, 2), [b"0123456789"])
    path = tmp_path / "snapshot"
    if damage == "flip data":
        flip_byte(path, 40)
    elif damage == "flip header":
        flip_byte(path, 10)
    elif damage == "flip trailer":
        flip_byte(path, path.stat().st_size - 1)
    elif damage == "truncated":
        os.truncate(path, path.stat().st_size - 3)
    else:
        _write_raw_snapshot(path, 4, 2, b"0123456789", declared=1 << 62)
    with pytest.raises(StorageCorrupted, match="snapshot"):
        DiskStorage(tmp_path)


def test_a_version_1_snapshot_written_by_hand_is_still_read(tmp_path: Path) -> None:
    _write_raw_snapshot(tmp_path / "snapshot", 7, 3, b"state bytes")
    with DiskStorage(tmp_path) as s:
        assert s.snapshot_meta() == SnapshotMeta(7, 3)
        assert (s.first_index(), s.last_index()) == (8, 7)
        assert s.read_snapshot(6, 100) == b"bytes"


def _v2_snapshot(index: int, term: int, members: bytes, data: bytes) -> bytes:
    body = struct.pack(">4sIQQQI", b"TFSN", 2, index, term, len(data), len(members))
    return (body + struct.pack(">I", crc32(body)) + members + struct.pack(">I", crc32(members)) + data
            + struct.pack(">I", crc32(data)))


def test_a_snapshot_carries_its_membership_in_the_documented_format(tmp_path: Path) -> None:
    members = Members((Member(0, True, "a:1/2"), Member(2, False, "c:5/6")), 3)
    with DiskStorage(tmp_path) as s:
        s.save_snapshot(SnapshotMeta(7, 3, members), [b"state bytes"])
    raw = (tmp_path / "snapshot").read_bytes()
    assert raw == _v2_snapshot(7, 3, members.encode(), b"state bytes")
    with DiskStorage(tmp_path) as s:
        assert s.snapshot_meta() == SnapshotMeta(7, 3, members)
        assert s.read_snapshot(6, 100) == b"bytes"
        with s.open_snapshot_data() as reader:
            assert reader.read() == b"state bytes"


@pytest.mark.parametrize("damage", ["flip membership", "unreadable membership", "membership past the end"])
def test_a_damaged_membership_is_refused(tmp_path: Path, damage: str) -> None:
    members = Members.initial(["a", "b"]).encode()
    raw = _v2_snapshot(7, 3, members, b"data")
    if damage == "flip membership":
        raw = raw[:45] + bytes([raw[45] ^ 1]) + raw[46:]
    elif damage == "unreadable membership":
        raw = _v2_snapshot(7, 3, b"\x09" + members[1:], b"data")
    else:
        body = struct.pack(">4sIQQQI", b"TFSN", 2, 7, 3, 4, 1 << 30)
        raw = body + struct.pack(">I", crc32(body)) + members
    (tmp_path / "snapshot").write_bytes(raw)
    with pytest.raises(StorageCorrupted, match="membership"):
        DiskStorage(tmp_path)


def test_a_staged_snapshot_is_written_beside_appends_and_put_in_place_later(tmp_path: Path) -> None:
    entries = make_entries(1, 30)
    with open_storage(tmp_path) as s:
        s.append(entries[:20])
        staged = s.stage_snapshot(SnapshotMeta(17, 1), [b"st", b"aged"])
        assert s.snapshot_meta() == SnapshotMeta() and not (tmp_path / "snapshot").exists()  # nothing changed yet
        s.append(entries[20:])
        s.install_staged_snapshot(staged)
        assert s.snapshot_meta() == SnapshotMeta(17, 1) and s.read_snapshot(0, 10) == b"staged"
        assert s.first_index() <= 18 and s.last_index() == 30
        older = s.stage_snapshot(SnapshotMeta(10, 1), [b"older"])
        s.install_staged_snapshot(older)  # not above the current one: discarded
        assert s.read_snapshot(0, 10) == b"staged" and os.listdir(tmp_path / "tmp") == []
    with open_storage(tmp_path) as s:
        assert s.snapshot_meta() == SnapshotMeta(17, 1) and s.last_index() == 30


def test_a_crash_between_staging_and_installing_keeps_the_old_snapshot(tmp_path: Path) -> None:
    with open_storage(tmp_path) as s:
        s.append(make_entries(1, 20))
        s.save_snapshot(SnapshotMeta(5, 1), [b"old"])
        s.stage_snapshot(SnapshotMeta(15, 1), [b"never installed"]).close()  # then the process dies
    with open_storage(tmp_path) as s:
        assert s.snapshot_meta() == SnapshotMeta(5, 1) and s.read_snapshot(0, 10) == b"old"
        assert os.listdir(tmp_path / "tmp") == []  # the staged file was stale: removed at open
        assert s.last_index() == 20
