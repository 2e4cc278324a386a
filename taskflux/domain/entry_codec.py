"""The log-entry codec: a command of the state machine as the bytes of one raft log entry.

Layout (big-endian; documented in docs/storage.md, "Log-entry payloads"):

    u8 format version (1) | u8 type | fields of the type

    CreateQueue  'C'  name | i32 implementation | i32 max_queue_size | i32 max_payload_size |
                      u8 has_range | [i64 min | i64 max]
    DeleteQueue  'D'  name
    AddRecord    'A'  name | i64 priority | u32 payload length | payload
    RemoveRecord 'R'  name | u64 incarnation | u64 record id

    name = u8 length | that many bytes, each 0x21-0x7E

Decoding is strict: an unknown version or type, a bad name, a short entry or trailing bytes raise
``CodecError``. An entry that cannot be decoded was never written by this encoder.
"""

from __future__ import annotations

import struct

from taskflux.domain.commands import AddRecord, Command, CreateQueue, DeleteQueue, RemoveRecord
from taskflux.domain.names import is_valid_queue_name_bytes

ENTRY_FORMAT_VERSION = 1

TYPE_CREATE_QUEUE = 0x43
TYPE_DELETE_QUEUE = 0x44
TYPE_ADD_RECORD = 0x41
TYPE_REMOVE_RECORD = 0x52

_HEAD = struct.Struct(">BB")
_CREATE = struct.Struct(">iiiB")
_RANGE = struct.Struct(">qq")
_ADD = struct.Struct(">qI")
_REMOVE = struct.Struct(">QQ")


class CodecError(ValueError):
    """Bytes that are not a valid encoding."""


def encode_name(name: str) -> bytes:
    raw = name.encode("ascii")
    if not is_valid_queue_name_bytes(raw):
        raise ValueError(f"invalid queue name {name!r}")
    return bytes((len(raw),)) + raw


def decode_name(data: bytes | memoryview, offset: int) -> tuple[str, int]:
    """The queue name at ``offset`` and the offset just after it."""
    if offset >= len(data):
        raise CodecError("truncated queue name")
    end = offset + 1 + data[offset]
    raw = bytes(data[offset + 1 : end])
    if end > len(data):
        raise CodecError("truncated queue name")
    if not is_valid_queue_name_bytes(raw):
        raise CodecError(f"invalid queue name {raw!r}")
    return raw.decode("ascii"), end


def encode_command(command: Command) -> bytes:
    """The log-entry bytes of ``command``. Raises ValueError/struct.error for unencodable values."""
    if isinstance(command, AddRecord):
        return b"".join((
            _HEAD.pack(ENTRY_FORMAT_VERSION, TYPE_ADD_RECORD),
            encode_name(command.name),
            _ADD.pack(command.priority, len(command.payload)),
            command.payload,
        ))
    if isinstance(command, RemoveRecord):
        return (
            _HEAD.pack(ENTRY_FORMAT_VERSION, TYPE_REMOVE_RECORD)
            + encode_name(command.name)
            + _REMOVE.pack(command.incarnation, command.record_id)
        )
    if isinstance(command, CreateQueue):
        has_range = command.priority_range is not None
        parts = [
            _HEAD.pack(ENTRY_FORMAT_VERSION, TYPE_CREATE_QUEUE),
            encode_name(command.name),
            _CREATE.pack(command.implementation, command.max_queue_size, command.max_payload_size, has_range),
        ]
        if command.priority_range is not None:
            parts.append(_RANGE.pack(*command.priority_range))
        return b"".join(parts)
    if isinstance(command, DeleteQueue):
        return _HEAD.pack(ENTRY_FORMAT_VERSION, TYPE_DELETE_QUEUE) + encode_name(command.name)
    raise TypeError(f"not a command: {command!r}")


def decode_command(data: bytes) -> Command:
    """The command encoded in a log entry's bytes."""
    try:
        return _decode(data)
    except struct.error as error:
        raise CodecError(f"truncated log entry: {error}") from None


def _decode(data: bytes) -> Command:
    if len(data) < _HEAD.size:
        raise CodecError("log entry shorter than its header")
    version, kind = _HEAD.unpack_from(data)
    if version != ENTRY_FORMAT_VERSION:
        raise CodecError(f"unsupported log-entry format version {version}")
    name, offset = decode_name(data, _HEAD.size)
    command: Command
    if kind == TYPE_ADD_RECORD:
        priority, length = _ADD.unpack_from(data, offset)
        offset += _ADD.size
        if offset + length != len(data):
            raise CodecError(f"AddRecord payload length {length} does not match the entry size")
        return AddRecord(name, priority, data[offset:])
    if kind == TYPE_REMOVE_RECORD:
        incarnation, record_id = _REMOVE.unpack_from(data, offset)
        offset += _REMOVE.size
        command = RemoveRecord(name, incarnation, record_id)
    elif kind == TYPE_CREATE_QUEUE:
        implementation, max_queue_size, max_payload_size, has_range = _CREATE.unpack_from(data, offset)
        offset += _CREATE.size
        priority_range = None
        if has_range > 1:
            raise CodecError(f"bad has_range flag {has_range}")
        if has_range:
            priority_range = _RANGE.unpack_from(data, offset)
            offset += _RANGE.size
        command = CreateQueue(name, implementation, max_queue_size, max_payload_size, priority_range)
    elif kind == TYPE_DELETE_QUEUE:
        command = DeleteQueue(name)
    else:
        raise CodecError(f"unknown log-entry type 0x{kind:02x}")
    if offset != len(data):
        raise CodecError(f"{len(data) - offset} trailing bytes after a log entry")
    return command
