"""Crash and corruption: torn tails are cut and kept aside, corruption elsewhere stops start-up."""

from __future__ import annotations

import logging
import os
import random
import shutil
import struct
import time
from pathlib import Path

import pytest

from taskflux.raft.types import Entry
from taskflux.storage import DiskStorage, StorageCorrupted
from taskflux.storage import segment as segment_module

from .helpers import (
    SEGMENT_HEADER_BYTES,
    all_entries,
    flip_byte,
    make_entries,
    open_storage,
    record_bounds,
    segment_files,
    truncate_file,
)

N = 26


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Entry]]:
    """A closed data directory with N entries over several segments, the last one holding several."""
    path = tmp_path_factory.mktemp("pristine")
    entries = [Entry(i, 1 + i // 10, bytes([i]) * (20 + i)) for i in range(1, N + 1)]
    with DiskStorage(path, soft_limit_bytes=200, hard_limit_bytes=400) as s:
        s.append(entries)
    files = segment_files(path)
    assert len(files) >= 3 and len(record_bounds(files[-1])) >= 3
    return path, entries


def fresh_copy(pristine: tuple[Path, list[Entry]], target: Path) -> tuple[Path, list[Entry]]:
    source, entries = pristine
    shutil.copytree(source, target)
    return target, entries


def torn_files(path: Path) -> list[Path]:
    return sorted((path / "torn").iterdir())


def check_survivors(path: Path, entries: list[Entry], survivors: int) -> None:
    with DiskStorage(path) as s:
        assert s.last_index() == survivors
        assert all_entries(s) == entries[:survivors]


def test_cut_at_every_byte_inside_the_last_record(
    pristine: tuple[Path, list[Entry]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    last_segment = segment_files(pristine[0])[-1]
    original = last_segment.read_bytes()
    start, end = record_bounds(last_segment)[-1]
    for cut in range(start, end + 1):
        path, entries = fresh_copy(pristine, tmp_path / f"cut{cut}")
        segment = segment_files(path)[-1]
        truncate_file(segment, cut)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="taskflux.storage"):
            check_survivors(path, entries, N if cut == end else N - 1)
        if start < cut < end:
            (torn,) = torn_files(path)
            assert torn.name == f"{segment.name}.{start}.torn"
            assert torn.read_bytes() == original[start:cut]
            assert segment.stat().st_size == start
            assert any("torn tail" in r.getMessage() and segment.name in r.getMessage() for r in caplog.records)
        else:
            assert torn_files(path) == [] and not caplog.records
        # Recovery is stable: a second open changes nothing, and the log keeps working.
        with DiskStorage(path) as s:
            assert len(torn_files(path)) == (1 if start < cut < end else 0)
            s.append(entries[s.last_index() : s.last_index() + 1])
        check_survivors(path, entries, N)
        shutil.rmtree(path)


def test_cut_at_random_offsets_in_the_tail(pristine: tuple[Path, list[Entry]], tmp_path: Path) -> None:
    rng = random.Random(2)
    last_segment = segment_files(pristine[0])[-1]
    bounds = record_bounds(last_segment)
    first_in_last = int(last_segment.name[:20])
    size = last_segment.stat().st_size
    for cut in sorted(rng.sample(range(SEGMENT_HEADER_BYTES, size), 25)):
        path, entries = fresh_copy(pristine, tmp_path / f"cut{cut}")
        truncate_file(segment_files(path)[-1], cut)
        complete = sum(1 for _, end in bounds if end <= cut)
        check_survivors(path, entries, first_in_last - 1 + complete)
        shutil.rmtree(path)


def test_torn_header_of_the_last_segment_sets_the_file_aside(
    pristine: tuple[Path, list[Entry]], tmp_path: Path
) -> None:
    for cut in (0, 1, SEGMENT_HEADER_BYTES - 1):
        path, entries = fresh_copy(pristine, tmp_path / f"cut{cut}")
        segment = segment_files(path)[-1]
        raw = segment.read_bytes()
        truncate_file(segment, cut)
        check_survivors(path, entries, int(segment.name[:20]) - 1)
        assert not segment.exists()
        (torn,) = torn_files(path)
        assert torn.read_bytes() == raw[:cut]
        shutil.rmtree(path)


def test_bad_header_of_a_last_segment_holding_records_is_refused(
    pristine: tuple[Path, list[Entry]], tmp_path: Path
) -> None:
    path, _ = fresh_copy(pristine, tmp_path / "d")
    segment = segment_files(path)[-1]
    flip_byte(segment, 2)
    with pytest.raises(StorageCorrupted, match=f"{segment.name} at byte offset 0"):
        DiskStorage(path)


@pytest.mark.parametrize("garbage", [b"\0" * 100, b"\0" * 3, b"junk" * 50, "random"])
def test_garbage_after_the_last_record_is_cut(
    pristine: tuple[Path, list[Entry]], tmp_path: Path, garbage: bytes | str
) -> None:
    path, entries = fresh_copy(pristine, tmp_path / "d")
    segment = segment_files(path)[-1]
    size = segment.stat().st_size
    data = random.Random(5).randbytes(500) if garbage == "random" else garbage
    assert isinstance(data, bytes)
    with open(segment, "ab") as f:
        f.write(data)
    check_survivors(path, entries, N)
    (torn,) = torn_files(path)
    assert torn.name == f"{segment.name}.{size}.torn" and torn.read_bytes() == data
    assert segment.stat().st_size == size


def test_a_record_that_looks_valid_but_repeats_an_index_is_cut(
    pristine: tuple[Path, list[Entry]], tmp_path: Path
) -> None:
    path, entries = fresh_copy(pristine, tmp_path / "d")
    segment = segment_files(path)[-1]
    start, end = record_bounds(segment)[-1]
    raw = segment.read_bytes()
    with open(segment, "ab") as f:
        f.write(raw[start:end])  # a stale copy of the last record: checksum fine, index wrong
    check_survivors(path, entries, N)


def _flip_targets(segment: Path) -> list[tuple[str, int, int]]:
    """(what, byte to flip, offset the error must name) for a few spots of a segment."""
    (r0, _), (r1, e1) = record_bounds(segment)[:2]
    return [
        ("segment magic", 0, 0),
        ("segment first index", 15, 0),
        ("segment header checksum", 17, 0),
        ("record checksum", r0 + 1, r0),
        ("record length", r1 + 7, r1),
        ("record length high byte", r1 + 4, r1),
        ("record index", r1 + 15, r1),
        ("record term", r1 + 23, r1),
        ("record data", e1 - 1, r1),
    ]


@pytest.mark.parametrize("which", [0, 1])
def test_flipped_byte_in_an_older_segment_is_refused(
    pristine: tuple[Path, list[Entry]], tmp_path: Path, which: int
) -> None:
    for what, byte, offset in _flip_targets(segment_files(pristine[0])[which]):
        path, _ = fresh_copy(pristine, tmp_path / what.replace(" ", "-"))
        segment = segment_files(path)[which]
        flip_byte(segment, byte)
        with pytest.raises(StorageCorrupted) as caught:
            DiskStorage(path)
        assert caught.value.path == str(segment), what
        assert caught.value.offset == offset, what
        assert f"{segment} at byte offset {offset}" in str(caught.value), what
        # Nothing was cut or set aside, and the directory is not left locked.
        assert torn_files(path) == []
        with pytest.raises(StorageCorrupted):
            DiskStorage(path)
        shutil.rmtree(path)


def test_trailing_garbage_in_an_older_segment_is_refused(
    pristine: tuple[Path, list[Entry]], tmp_path: Path
) -> None:
    path, _ = fresh_copy(pristine, tmp_path / "d")
    segment = segment_files(path)[0]
    size = segment.stat().st_size
    with open(segment, "ab") as f:
        f.write(b"\0" * 7)
    with pytest.raises(StorageCorrupted, match=f"{segment.name} at byte offset {size}: incomplete"):
        DiskStorage(path)


def test_missing_middle_segment_is_refused(pristine: tuple[Path, list[Entry]], tmp_path: Path) -> None:
    path, _ = fresh_copy(pristine, tmp_path / "d")
    segment_files(path)[1].unlink()
    with pytest.raises(StorageCorrupted, match="hole"):
        DiskStorage(path)


def test_missing_first_segment_is_a_gap_after_the_snapshot(
    pristine: tuple[Path, list[Entry]], tmp_path: Path
) -> None:
    path, _ = fresh_copy(pristine, tmp_path / "d")
    segment_files(path)[0].unlink()
    with pytest.raises(StorageCorrupted, match="missing"):
        DiskStorage(path)


def test_damage_before_a_valid_record_of_the_last_segment_is_refused(
    pristine: tuple[Path, list[Entry]], tmp_path: Path
) -> None:
    """A crash tears only the unsynced end: a bad record with a valid one after it is damage to
    acknowledged data, and start-up stops naming the file and offset instead of cutting it away."""
    targets = [t for t in _flip_targets(segment_files(pristine[0])[-1]) if t[0].startswith("record")]
    for what, byte, offset in targets:
        path, _ = fresh_copy(pristine, tmp_path / what.replace(" ", "-"))
        segment = segment_files(path)[-1]
        original = segment.read_bytes()
        flip_byte(segment, byte)
        with pytest.raises(StorageCorrupted) as caught:
            DiskStorage(path)
        assert (caught.value.path, caught.value.offset) == (str(segment), offset), what
        assert "not a torn write" in str(caught.value) and "replace this node" in str(caught.value), what
        assert segment.read_bytes() != original and segment.stat().st_size == len(original), what
        assert torn_files(path) == [], what
        shutil.rmtree(path)


@pytest.mark.parametrize("filler", [b"\0", b"\xff"])
def test_a_wiped_block_in_the_last_segment_is_refused(tmp_path: Path, filler: bytes) -> None:
    """A 4 KiB block overwritten (a lost or misdirected write) spans many records; a valid one after it
    still gives the damage away, wherever its header starts."""
    entries = [Entry(i, 1, bytes([i % 251]) * (i % 7)) for i in range(1, 1001)]
    with DiskStorage(tmp_path, soft_limit_bytes=1 << 20, hard_limit_bytes=1 << 20) as s:
        s.append(entries)
    (segment,) = segment_files(tmp_path)
    bounds = record_bounds(segment)
    with open(segment, "r+b") as f:
        f.seek(4096)
        f.write(filler * 4096)
    damaged = next(start for start, end in bounds if end > 4096)
    with pytest.raises(StorageCorrupted, match=f"byte offset {damaged}: .*not a torn write"):
        DiskStorage(tmp_path)


def test_random_damage_before_the_last_record_is_refused(tmp_path: Path) -> None:
    """Damage of any length and content, anywhere before the last record of the last segment: the first
    damaged record is named, whatever the damage did to its length field or its neighbours."""
    entries = [Entry(i, 1 + i // 300, random.Random(i).randbytes(i % 40)) for i in range(1, 601)]
    with DiskStorage(tmp_path / "template", soft_limit_bytes=1 << 20, hard_limit_bytes=1 << 20) as s:
        s.append(entries)
    (template,) = segment_files(tmp_path / "template")
    bounds = record_bounds(template)
    original = template.read_bytes()
    rng = random.Random(7)
    for attempt in range(30):
        start = rng.randrange(bounds[0][0], bounds[-2][1] - 1)
        length = min(rng.choice([1, 3, 24, 100, 600]), bounds[-2][1] - start)
        damage = bytes(length) if attempt % 3 == 0 else rng.randbytes(length)
        if original[start : start + length] == damage:
            continue
        path = tmp_path / f"damage{attempt}"
        shutil.copytree(tmp_path / "template", path)
        segment = segment_files(path)[0]
        with open(segment, "r+b") as f:
            f.seek(start)
            f.write(damage)
        first_changed = start + next(k for k in range(length) if original[start + k] != damage[k])
        damaged = next(begin for begin, end in bounds if end > first_changed)
        with pytest.raises(StorageCorrupted, match=f"byte offset {damaged}: .*not a torn write"):
            DiskStorage(path)


def test_a_long_torn_tail_is_cut_quickly(tmp_path: Path) -> None:
    """No valid record after the first bad one: a torn write, cut. The search for a valid record
    costs little even over megabytes of garbage or zeros."""
    entries = make_entries(1, 50)
    for name, tail in (("zeros", b"\0" * (4 << 20)), ("random", random.Random(1).randbytes(4 << 20))):
        path = tmp_path / name
        with DiskStorage(path, soft_limit_bytes=64 << 20, hard_limit_bytes=64 << 20) as s:
            s.append(entries)
        (segment,) = segment_files(path)
        size = segment.stat().st_size
        with open(segment, "ab") as f:
            f.write(tail)
        started = time.monotonic()
        check_survivors(path, entries, len(entries))
        assert time.monotonic() - started < 5.0, name
        assert segment.stat().st_size == size


def _huge_header(index: int, term: int, size: int) -> bytes:
    return struct.pack(">IIQQ", 0x12345678, size, index, term)


def test_huge_declared_length_is_never_allocated(
    pristine: tuple[Path, list[Entry]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []
    real_pread = os.pread

    def watching_pread(fd: int, size: int, offset: int) -> bytes:
        reads.append(size)
        return real_pread(fd, size, offset)

    monkeypatch.setattr(segment_module, "pread_exact", lambda fd, size, offset: watching_pread(fd, size, offset))
    for which, size in (("last", 0xFFFF_FFFF), ("last", 64 * 1024 * 1024 + 1), ("older", 0xFFFF_FFF0)):
        path, entries = fresh_copy(pristine, tmp_path / f"{which}{size}")
        files = segment_files(path)
        segment = files[-1] if which == "last" else files[0]
        with open(segment, "ab") as f:
            f.write(_huge_header(N + 1, 9, size) + b"x" * 10)
        reads.clear()
        if which == "last":
            check_survivors(path, entries, N)
        else:
            with pytest.raises(StorageCorrupted, match=r"incomplete record|maximum"):
                DiskStorage(path)
        assert reads and max(reads) <= max(f.stat().st_size for f in files)
        shutil.rmtree(path)


def test_length_over_the_configured_maximum(tmp_path: Path) -> None:
    with DiskStorage(tmp_path) as s:
        s.append([Entry(1, 1, b"a" * 10), Entry(2, 1, b"b" * 5000)])
    with DiskStorage(tmp_path, max_record_bytes=1000) as s:
        assert s.last_index() == 1  # the last segment: cut, and kept in torn/
    (torn,) = torn_files(tmp_path)
    assert len(torn.read_bytes()) == 24 + 5000


def test_stale_records_behind_a_truncation_never_come_back(tmp_path: Path) -> None:
    """A suffix truncation is an ftruncate (not an overwrite), so old records cannot resurface."""
    with open_storage(tmp_path, soft_limit_bytes=10_000, hard_limit_bytes=10_000) as s:
        s.append(make_entries(1, 10, term=1))
        s.append(make_entries(5, 1, term=2))
    with open_storage(tmp_path, soft_limit_bytes=10_000, hard_limit_bytes=10_000) as s:
        assert s.last_index() == 5 and s.term(5) == 2
    assert torn_files(tmp_path) == []
