"""Shared helpers of the storage tests: entry builders and a small independent segment parser."""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path

from taskflux.raft.types import Entry
from taskflux.storage import DiskStorage

SEGMENT_HEADER_BYTES = 20
RECORD_HEADER_BYTES = 24
_LENGTH = struct.Struct(">I")

# Small limits so a handful of entries spans several segments.
TINY = {"soft_limit_bytes": 150, "hard_limit_bytes": 300}


def make_entries(first: int, count: int, term: int = 1, size: int = 30, seed: int = 0) -> list[Entry]:
    """``count`` entries from ``first`` with distinct, reproducible data of ``size`` bytes."""
    rng = random.Random(seed * 1_000_003 + first)
    return [Entry(first + k, term, rng.randbytes(size)) for k in range(count)]


def open_storage(path: Path, **limits: int) -> DiskStorage:
    return DiskStorage(path, **(limits or TINY))


def segment_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "log").glob("*.log"))


def record_bounds(segment: Path) -> list[tuple[int, int]]:
    """(start, end) byte offsets of every record, parsed from the lengths alone (file assumed valid)."""
    raw = segment.read_bytes()
    bounds = []
    pos = SEGMENT_HEADER_BYTES
    while pos < len(raw):
        (size,) = _LENGTH.unpack_from(raw, pos + 4)
        end = pos + RECORD_HEADER_BYTES + size
        bounds.append((pos, end))
        pos = end
    return bounds


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def truncate_file(path: Path, size: int) -> None:
    os.truncate(path, size)


def all_entries(storage: DiskStorage) -> list[Entry]:
    lo, hi = storage.first_index(), storage.last_index() + 1
    return storage.entries(lo, hi, 1 << 40) if lo < hi else []
