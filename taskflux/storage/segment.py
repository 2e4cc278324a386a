"""One segment file of the log: its in-memory index, and the recovery scan that rebuilds it."""

from __future__ import annotations

import os
import re
from array import array
from dataclasses import dataclass

from taskflux.storage.fsutil import pread_exact
from taskflux.storage.records import (
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    record_checksum,
)

SCAN_CHUNK_BYTES = 1 << 20


class Segment:
    """An open segment file and the index of its records.

    ``offsets`` holds ``count + 1`` byte offsets: where each record starts, then where the last one
    ends (the logical size of the file). ``terms`` holds ``count`` terms. The arrays may briefly be
    longer than ``count`` while an append publishes; ``count`` is written last and is what readers
    trust (see DiskStorage's concurrency note).
    """

    __slots__ = ("count", "fd", "first_index", "offsets", "path", "terms")

    def __init__(self, first_index: int, path: str, fd: int, offsets: array, terms: array) -> None:
        self.first_index = first_index
        self.path = path
        self.fd = fd
        self.offsets = offsets
        self.terms = terms
        self.count = len(terms)

    @property
    def last_index(self) -> int:
        """Index of the last record; ``first_index - 1`` when the segment holds none."""
        return self.first_index + self.count - 1

    @property
    def size_bytes(self) -> int:
        """Bytes in use: header plus every record (the file has exactly this length)."""
        return self.offsets[self.count]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __repr__(self) -> str:
        return f"Segment({os.path.basename(self.path)}, records={self.count}, bytes={self.size_bytes})"


def new_index() -> tuple[array, array]:
    """The index of a segment with no records: offsets (just the header's end) and terms."""
    return array("Q", [SEGMENT_HEADER_SIZE]), array("Q")


@dataclass
class ScanResult:
    """What a recovery scan of one segment found: the valid records, and the first bad byte if any."""

    offsets: array
    terms: array
    bad_offset: int | None = None
    reason: str = ""


def scan_records(
    fd: int, file_size: int, first_index: int, prev_term: int, max_record_bytes: int
) -> ScanResult:
    """Read every record after the segment header, checking each before trusting it.

    A record is valid when its whole header and data lie inside the file, its declared length is at
    most ``max_record_bytes`` (checked before anything is read or allocated for it), its checksum
    matches, its index follows the previous one and its term does not decrease. The scan stops at the
    first invalid record and reports its offset; the caller decides whether that is a torn tail
    (last segment) or corruption (any older segment).
    """
    offsets, terms = new_index()
    pos = SEGMENT_HEADER_SIZE
    expect = first_index
    buf = b""
    buf_start = pos
    unpack_header = RECORD_HEADER.unpack_from

    def fail(reason: str) -> ScanResult:
        return ScanResult(offsets, terms, pos, reason)

    while pos < file_size:
        remaining = file_size - pos
        if remaining < RECORD_HEADER_SIZE:
            return fail(f"incomplete record header: {remaining} of {RECORD_HEADER_SIZE} bytes")
        rel = pos - buf_start
        if rel + RECORD_HEADER_SIZE > len(buf):
            buf = pread_exact(fd, min(SCAN_CHUNK_BYTES, remaining), pos)
            buf_start, rel = pos, 0
        checksum, data_size, index, term = unpack_header(buf, rel)
        if data_size > max_record_bytes:
            return fail(f"declared data length {data_size} is over the {max_record_bytes}-byte maximum")
        if data_size > remaining - RECORD_HEADER_SIZE:
            return fail(
                f"incomplete record: declares {data_size} data bytes, "
                f"{remaining - RECORD_HEADER_SIZE} left in the file"
            )
        total = RECORD_HEADER_SIZE + data_size
        if rel + total > len(buf):
            buf = pread_exact(fd, min(max(total, SCAN_CHUNK_BYTES), remaining), pos)
            buf_start, rel = pos, 0
        if record_checksum(buf, rel, data_size) != checksum:
            return fail("record checksum mismatch")
        if index != expect:
            return fail(f"record has index {index}, expected {expect}")
        if term < prev_term:
            return fail(f"record {index} has term {term}, below the previous record's {prev_term}")
        terms.append(term)
        pos += total
        offsets.append(pos)
        prev_term = term
        expect += 1
    return ScanResult(offsets, terms)


def find_valid_record(
    fd: int, bad_offset: int, file_size: int, bad_index: int, prev_term: int, max_record_bytes: int
) -> tuple[int, int] | None:
    """The (offset, index) of a valid record anywhere after the bad record at ``bad_offset``, or None.

    Valid as in ``scan_records``: a checksum that matches, an index after ``bad_index`` (a record after
    the damage continues the log), a term not below ``prev_term``, a length that fits. Every byte offset
    is a candidate, but only where the index field could hold such an index: a regular expression on the
    index's high bytes finds those at C speed, and long runs of zeros (which hold no index) are skipped,
    so megabytes of garbage or zeros cost a fraction of a second.
    """
    lo = bad_index + 1
    hi = bad_index + (file_size - bad_offset) // RECORD_HEADER_SIZE  # each record takes >= 24 bytes
    if hi < lo:
        return None
    index_field = re.compile(_index_pattern(lo, hi), re.DOTALL)
    unpack_header = RECORD_HEADER.unpack_from
    start = bad_offset + 1
    while start + RECORD_HEADER_SIZE <= file_size:
        # Headers starting in [start, start + SCAN_CHUNK_BYTES), read whole (hence the overlap).
        buf = os.pread(fd, min(SCAN_CHUNK_BYTES + RECORD_HEADER_SIZE, file_size - start), start)
        # Where the index fields (bytes 8..15 of a header) of those headers end.
        fields_end = min(SCAN_CHUNK_BYTES, len(buf) - RECORD_HEADER_SIZE + 1) + 15
        for window_start, window_end in _nonzero_windows(buf, 8, fields_end):
            match = index_field.search(buf, window_start, window_end)
            while match is not None:
                rel = match.start() - 8
                checksum, data_size, index, term = unpack_header(buf, rel)
                end = start + rel + RECORD_HEADER_SIZE + data_size
                if lo <= index <= hi and term >= prev_term and data_size <= max_record_bytes and end <= file_size:
                    record = buf if end <= start + len(buf) else pread_exact(fd, end - start, start)
                    if record_checksum(record, rel, data_size) == checksum:
                        return start + rel, index
                match = index_field.search(buf, match.start() + 1, window_end)  # overlapping places too
        start += SCAN_CHUNK_BYTES
    return None


_ZERO_RUN = re.compile(re.escape(bytes(64)) + b"\\x00*")  # a literal prefix: searched at C speed


def _nonzero_windows(buf: bytes, begin: int, end: int) -> list[tuple[int, int]]:
    """Ranges of ``buf[begin:end]`` (as (start, end) for ``re.search``) outside long runs of zeros, each
    widened by 8 bytes so that an 8-byte field that straddles a run's edge lies whole inside one."""
    windows = []
    pos = begin
    for run in _ZERO_RUN.finditer(buf, begin, end):
        if run.start() > pos:
            windows.append((max(begin, pos - 8), min(end, run.start() + 8)))
        pos = run.end()
    if pos < end:
        windows.append((max(begin, pos - 8), end))
    return windows


def _index_pattern(lo: int, hi: int) -> bytes:
    """A regex matching where an 8-byte big-endian value in ``[lo, hi]`` could be, by its top six bytes
    (the caller checks the exact value). Index 0 is never valid: after six zero bytes one of the last two
    must be non-zero."""
    alternatives = []
    for high in range(lo >> 16, (hi >> 16) + 1):
        prefix = re.escape((high << 16).to_bytes(8, "big")[:6])
        alternatives.append(prefix + (b"(?:[^\\x00].|\\x00[^\\x00])" if high == 0 else b".."))
    return b"|".join(alternatives)
