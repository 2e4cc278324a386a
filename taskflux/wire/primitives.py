"""Primitive wire types shared by the binary codecs: big-endian integers, length-prefixed fields, a cursor.

Everything is pure: bytes in, values out. A parser reads field by field through a :class:`Reader`; when the input
ends early the reader raises :class:`Incomplete` (need more data, never an error) and when the input is malformed it
raises :class:`ProtocolError`. Declared lengths are checked against their bound as soon as they are read, before
the body is waited for, so a hostile length costs nothing.

A parse that stopped on :class:`Incomplete` is restarted from the packet's first byte once more bytes have arrived.
That costs a handful of fixed fields per attempt, except in arrays: :meth:`Reader.items` keeps the items it has
already parsed in the reader's ``memo`` and resumes after them, so parsing stays linear in the bytes received
however the packet is cut.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

U8 = struct.Struct(">B")
I32 = struct.Struct(">i")
U32 = struct.Struct(">I")
I64 = struct.Struct(">q")
U64 = struct.Struct(">Q")

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1
MAX_QUEUE_NAME_BYTES = 255
ABSENT_INT32 = -1
"""OptionalInt32 "absent" marker (``FF FF FF FF``)."""

_EMPTY_LENGTH = I32.pack(0)
_NONE_INT32 = I32.pack(ABSENT_INT32)


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid packet. The connection must be closed."""


class Incomplete(Exception):
    """Raised by a :class:`Reader` when the input ends before the field does: wait for more bytes.

    ``needed`` is the total buffer length (from the reader's origin) below which parsing cannot succeed, so the
    caller can skip re-parsing until at least that much has arrived.
    """

    __slots__ = ("needed",)

    def __init__(self, needed: int) -> None:
        super().__init__(needed)
        self.needed = needed


ArrayMemo = dict[int, tuple[list[Any], int]]
"""Arrays a parse left incomplete, by offset from the packet's start: the items parsed so far and the offset
after the last of them."""


class Reader:
    """A cursor over ``data[pos:end]`` that decodes primitive fields in order.

    ``memo`` (optional) carries the progress of incomplete arrays from one parse attempt of a packet to the next;
    its offsets count from ``origin``, the packet's first byte (default ``pos``), so the buffer may be compacted
    between attempts.
    """

    __slots__ = ("data", "end", "memo", "origin", "pos")

    def __init__(
        self, data: bytes | bytearray | memoryview, pos: int = 0, end: int | None = None, memo: ArrayMemo | None = None,
    ) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end
        self.origin = pos
        self.memo = memo

    def _advance(self, size: int) -> int:
        start = self.pos
        stop = start + size
        if stop > self.end:
            raise Incomplete(stop)
        self.pos = stop
        return start

    def u8(self) -> int:
        """One unsigned byte."""
        start = self._advance(1)
        return self.data[start]

    def bool(self) -> bool:
        """A Bool: any non-zero byte is true."""
        return self.u8() != 0

    def i32(self) -> int:
        """A signed big-endian Int32."""
        return I32.unpack_from(self.data, self._advance(4))[0]

    def u32(self) -> int:
        """An unsigned big-endian UInt32."""
        return U32.unpack_from(self.data, self._advance(4))[0]

    def i64(self) -> int:
        """A signed big-endian Int64."""
        return I64.unpack_from(self.data, self._advance(8))[0]

    def u64(self) -> int:
        """An unsigned big-endian UInt64."""
        return U64.unpack_from(self.data, self._advance(8))[0]

    def raw(self, size: int) -> bytes:
        """Exactly ``size`` bytes, copied out of the buffer."""
        start = self._advance(size)
        return bytes(self.data[start : start + size])

    def length(self, what: str, limit: int) -> int:
        """An Int32 length or count, refused when negative or above ``limit`` (before any body is read)."""
        value = self.i32()
        if value < 0:
            raise ProtocolError(f"negative {what} length {value}")
        if value > limit:
            raise ProtocolError(f"{what} length {value} exceeds the limit of {limit}")
        return value

    def string(self, limit: int, what: str = "string") -> str:
        """A String: Int32 byte length + UTF-8 bytes (invalid sequences become U+FFFD, as the original reads them)."""
        size = self.length(what, limit)
        start = self._advance(size)
        return str(self.data[start : start + size], "utf-8", "replace")

    def buffer(self, limit: int, what: str = "payload") -> bytes:
        """A Buffer: Int32 length + raw bytes."""
        return self.raw(self.length(what, limit))

    def queue_name(self) -> str:
        """A QueueName: one length byte + that many bytes, decoded losslessly as latin-1 and not validated."""
        size = self.u8()
        start = self._advance(size)
        return str(self.data[start : start + size], "latin-1")

    def items(self, count: int, item: Callable[[Reader], T]) -> list[T]:
        """``count`` items, each parsed by ``item``. When the input ends inside the array, the items parsed so far
        are kept in ``memo`` (keyed by the array's offset: arrays of one packet start at distinct offsets) and the
        next attempt resumes after them instead of parsing them again."""
        memo = self.memo
        key = self.pos - self.origin
        done: list[T] = []
        if memo is not None and key in memo:
            done, resume = memo.pop(key)
            self.pos = self.origin + resume
        mark = self.pos
        try:
            while len(done) < count:
                mark = self.pos
                done.append(item(self))
        except Incomplete:
            if memo is not None:
                memo[key] = (done, mark - self.origin)
            raise
        return done

    def optional_i32(self) -> int | None:
        """An OptionalInt32: ``-1`` is None; other values (negatives included) are returned as they are."""
        value = self.i32()
        return None if value == ABSENT_INT32 else value


def encode_string(value: str) -> bytes:
    """A String field: Int32 byte length + UTF-8."""
    if not value:
        return _EMPTY_LENGTH
    raw = value.encode("utf-8")
    return I32.pack(len(raw)) + raw


def encode_buffer(value: bytes) -> bytes:
    """A Buffer field: Int32 length + the bytes."""
    return I32.pack(len(value)) + value


def encode_queue_name(name: str) -> bytes:
    """A QueueName field: one length byte + latin-1 bytes. Refuses names that do not fit (ValueError)."""
    raw = name.encode("latin-1")
    if len(raw) > MAX_QUEUE_NAME_BYTES:
        raise ValueError(f"queue name of {len(raw)} bytes exceeds {MAX_QUEUE_NAME_BYTES}")
    return U8.pack(len(raw)) + raw


def encode_optional_i32(value: int | None) -> bytes:
    """An OptionalInt32 field: None is ``-1``."""
    return _NONE_INT32 if value is None else I32.pack(value)
