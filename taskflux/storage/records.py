"""Byte layout of log segments: the segment header and the record codec (see docs/storage.md)."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from zlib import crc32

from taskflux.raft.types import Entry

SEGMENT_MAGIC = b"TFLS"
SEGMENT_VERSION = 1
# magic, format version, first index, CRC32 of the 16 bytes before it.
SEGMENT_HEADER = struct.Struct(">4sIQI")
SEGMENT_HEADER_SIZE = SEGMENT_HEADER.size  # 20

# CRC32, data length, index, term. The CRC covers bytes 4..23 of the header, then the data.
RECORD_HEADER = struct.Struct(">IIQQ")
RECORD_HEADER_SIZE = RECORD_HEADER.size  # 24
_RECORD_REST = struct.Struct(">IQQ")
_U32 = struct.Struct(">I")

DEFAULT_MAX_RECORD_BYTES = 64 * 1024 * 1024
SEGMENT_NAME_DIGITS = 20
SEGMENT_SUFFIX = ".log"


def segment_name(first_index: int) -> str:
    """File name of the segment whose first record has index ``first_index``."""
    return f"{first_index:0{SEGMENT_NAME_DIGITS}d}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    """The first index encoded in a segment file name, or None if ``name`` is not a segment name."""
    digits = name[:-len(SEGMENT_SUFFIX)]
    if (
        len(name) == SEGMENT_NAME_DIGITS + len(SEGMENT_SUFFIX)
        and name.endswith(SEGMENT_SUFFIX)
        and digits.isascii()
        and digits.isdigit()
    ):
        return int(digits)
    return None


def encode_segment_header(first_index: int) -> bytes:
    body = SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, first_index, 0)[:-4]
    return body + _U32.pack(crc32(body))


def decode_segment_header(raw: bytes) -> tuple[int, str | None]:
    """Return (first index, None) or (0, reason) when the header is not valid."""
    if len(raw) < SEGMENT_HEADER_SIZE:
        return 0, f"segment header is {len(raw)} bytes, expected {SEGMENT_HEADER_SIZE}"
    magic, version, first_index, checksum = SEGMENT_HEADER.unpack_from(raw)
    if magic != SEGMENT_MAGIC:
        return 0, f"bad segment magic {magic!r}"
    if crc32(raw[: SEGMENT_HEADER_SIZE - 4]) != checksum:
        return 0, "segment header checksum mismatch"
    if version != SEGMENT_VERSION:
        return 0, f"unsupported segment format version {version} (this build reads {SEGMENT_VERSION})"
    if first_index < 1:
        return 0, f"segment first index {first_index} < 1"
    return first_index, None


class EncodedBatch:
    """A batch of entries encoded as records.

    ``parts`` holds two byte strings per record (its checksum, then the rest of its header followed
    by its data), ``ends`` where each record ends counted from the start of the batch.
    """

    __slots__ = ("ends", "entries", "parts")

    def __init__(self, entries: Sequence[Entry], parts: list[bytes], ends: list[int]) -> None:
        self.entries = entries
        self.parts = parts
        self.ends = ends

    def terms(self, lo: int, hi: int) -> list[int]:
        """The terms of records ``[lo, hi)``."""
        entries = self.entries
        term = entries[lo].term
        if entries[hi - 1].term == term:  # terms never decrease: the whole run has one term
            return [term] * (hi - lo)
        return [entries[k].term for k in range(lo, hi)]

    def join(self, lo: int, hi: int) -> bytes:
        """The bytes of records ``[lo, hi)`` of the batch, ready for one write."""
        return b"".join(self.parts[2 * lo : 2 * hi])


def encode_entries(entries: Sequence[Entry], prev_term: int, max_record_bytes: int) -> EncodedBatch:
    """Validate and encode contiguous entries; nothing is written if this raises.

    Checks what recovery relies on: indexes contiguous, terms never decreasing (from ``prev_term``,
    the term of the entry before the batch), data no larger than ``max_record_bytes``. Data must be
    ``bytes`` (crc32 rejects str; struct rejects negative or oversized integers).
    """
    # The hot path of every write: one pack, one concatenation, one crc32 per record.
    parts: list[bytes] = []
    ends: list[int] = []
    add_part = parts.append
    add_end = ends.append
    pack_rest = _RECORD_REST.pack
    pack_u32 = _U32.pack
    expect = entries[0].index
    pos = 0
    for entry in entries:
        data = entry.data
        index = entry.index
        term = entry.term
        size = len(data)
        if index != expect or term < prev_term or size > max_record_bytes:
            _refuse(index, expect, term, prev_term, size, max_record_bytes)
        body = pack_rest(size, index, term) + data
        add_part(pack_u32(crc32(body)))
        add_part(body)
        pos += RECORD_HEADER_SIZE + size
        add_end(pos)
        prev_term = term
        expect += 1
    return EncodedBatch(entries, parts, ends)


def _refuse(index: int, expect: int, term: int, prev_term: int, size: int, max_record_bytes: int) -> None:
    if index != expect:
        raise ValueError(f"entries are not contiguous: expected index {expect}, got {index}")
    if term < prev_term:
        raise ValueError(f"entry {index} has term {term} below the previous entry's {prev_term}")
    raise ValueError(f"entry {index} holds {size} bytes, over the {max_record_bytes}-byte limit")


def record_checksum(buf: bytes | memoryview, offset: int, data_size: int) -> int:
    """CRC32 of the record at ``offset`` in ``buf`` as it should be stored (header rest, then data)."""
    view = memoryview(buf)
    head = crc32(view[offset + 4 : offset + RECORD_HEADER_SIZE])
    start = offset + RECORD_HEADER_SIZE
    return crc32(view[start : start + data_size], head)
