"""The log-entry codec: a command of the state machine as the bytes of one raft log entry.

Layout (big-endian; documented in docs/storage.md, "Log-entry payloads"):

    u8 format version (1) | u8 type | fields of the type

    CreateQueue  'C'  name | i32 implementation | i32 max_queue_size | i32 max_payload_size |
                      u8 has_range | [i64 min | i64 max]
    DeleteQueue  'D'  name
    AddRecord    'A'  name | i64 priority | u32 payload length | payload
    RemoveRecord 'R'  name | u64 incarnation | u64 record id
    CreateQueue  'Q'  the fields of 'C' | delivery policies (below); written instead of 'C' when a delivery
                      policy differs from its default
    AddRecords   'B'  name | u64 now | u32 count | count × (i64 priority | u64 not_before | u8 key length
                      (0: no key) | key | u32 payload length | payload)
    ReturnRecords 'N' name | u64 incarnation | u64 now | u32 count | count × (u64 record id | i64 delay ms,
                      -1: the queue's retry policy)
    RemoveRecords 'X' name | u64 incarnation | u32 count | count × u64 record id
    MoveRecords  'M'  name | u64 incarnation | u64 now | u32 count | count × u64 record id
    Tick         'T'  u64 now

    name = u8 length | that many bytes, each 0x21-0x7E
    delivery policies = i32 max_deliveries (-1 none) | u8 has_dead_letter_queue | [name] | u8 retry backoff |
                        u64 retry_delay_ms | u64 retry_max_delay_ms | u64 dedup_window_ms | u32 dedup_max_keys
    now, not_before = leader time, milliseconds since the Unix epoch

Decoding is strict: an unknown version or type, a bad name, a short entry or trailing bytes raise
``CodecError``. An entry that cannot be decoded was never written by this encoder.
"""

from __future__ import annotations

import struct

from taskflux.domain.commands import (
    MAX_BATCH_IDS,
    MAX_BATCH_RECORDS,
    NO_LIMIT,
    AddRecord,
    AddRecords,
    Command,
    CreateQueue,
    DeleteQueue,
    MoveRecords,
    NewRecord,
    RemoveRecord,
    RemoveRecords,
    ReturnRecords,
    Tick,
)
from taskflux.domain.names import is_valid_queue_name_bytes
from taskflux.domain.policies import DEFAULT_DELIVERY, Backoff, DeliveryPolicies

ENTRY_FORMAT_VERSION = 1

TYPE_CREATE_QUEUE = 0x43
TYPE_DELETE_QUEUE = 0x44
TYPE_ADD_RECORD = 0x41
TYPE_REMOVE_RECORD = 0x52
TYPE_CREATE_QUEUE_WITH_DELIVERY = 0x51
TYPE_ADD_RECORDS = 0x42
TYPE_RETURN_RECORDS = 0x4E
TYPE_REMOVE_RECORDS = 0x58
TYPE_TICK = 0x54
TYPE_MOVE_RECORDS = 0x4D

_HEAD = struct.Struct(">BB")
_CREATE = struct.Struct(">iiiB")
_RANGE = struct.Struct(">qq")
_ADD = struct.Struct(">qI")
_REMOVE = struct.Struct(">QQ")
_U8 = struct.Struct(">B")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_BATCH_HEAD = struct.Struct(">QI")  # now | count
_NEW_RECORD = struct.Struct(">qQB")  # priority | not_before | key length
_RETURNS_HEAD = struct.Struct(">QQI")  # incarnation | now | count
_RETURN = struct.Struct(">Qq")
_REMOVES_HEAD = struct.Struct(">QI")  # incarnation | count
_DELIVERY_HEAD = struct.Struct(">iB")  # max_deliveries | has dead-letter queue
_DELIVERY_TAIL = struct.Struct(">BQQQI")
DELIVERY_HEAD_BYTES = _DELIVERY_HEAD.size  # the delivery policies before the dead-letter queue's name
DELIVERY_TAIL_BYTES = _DELIVERY_TAIL.size  # and after it


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
    if isinstance(command, AddRecords):
        parts = [_HEAD.pack(ENTRY_FORMAT_VERSION, TYPE_ADD_RECORDS), encode_name(command.name),
                 _BATCH_HEAD.pack(command.now, len(command.records))]
        for record in command.records:
            key = record.key or b""
            parts += (_NEW_RECORD.pack(record.priority, record.not_before, len(key)), key,
                      _U32.pack(len(record.payload)), record.payload)
        return b"".join(parts)
    if isinstance(command, ReturnRecords):
        return b"".join((
            _HEAD.pack(ENTRY_FORMAT_VERSION, TYPE_RETURN_RECORDS), encode_name(command.name),
            _RETURNS_HEAD.pack(command.incarnation, command.now, len(command.returns)),
            *(_RETURN.pack(record_id, delay) for record_id, delay in command.returns),
        ))
    if isinstance(command, RemoveRecords):
        return b"".join((
            _HEAD.pack(ENTRY_FORMAT_VERSION, TYPE_REMOVE_RECORDS), encode_name(command.name),
            _REMOVES_HEAD.pack(command.incarnation, len(command.record_ids)),
            *(_U64.pack(record_id) for record_id in command.record_ids),
        ))
    if isinstance(command, MoveRecords):
        return b"".join((
            _HEAD.pack(ENTRY_FORMAT_VERSION, TYPE_MOVE_RECORDS), encode_name(command.name),
            _RETURNS_HEAD.pack(command.incarnation, command.now, len(command.record_ids)),
            *(_U64.pack(record_id) for record_id in command.record_ids),
        ))
    if isinstance(command, Tick):
        return _HEAD.pack(ENTRY_FORMAT_VERSION, TYPE_TICK) + _U64.pack(command.now)
    if isinstance(command, CreateQueue):
        has_range = command.priority_range is not None
        with_delivery = command.delivery != DEFAULT_DELIVERY
        parts = [
            _HEAD.pack(ENTRY_FORMAT_VERSION, TYPE_CREATE_QUEUE_WITH_DELIVERY if with_delivery else TYPE_CREATE_QUEUE),
            encode_name(command.name),
            _CREATE.pack(command.implementation, command.max_queue_size, command.max_payload_size, has_range),
        ]
        if command.priority_range is not None:
            parts.append(_RANGE.pack(*command.priority_range))
        if with_delivery:
            parts.append(encode_delivery(command.delivery))
        return b"".join(parts)
    if isinstance(command, DeleteQueue):
        return _HEAD.pack(ENTRY_FORMAT_VERSION, TYPE_DELETE_QUEUE) + encode_name(command.name)
    raise TypeError(f"not a command: {command!r}")


def encode_delivery(delivery: DeliveryPolicies) -> bytes:
    """The delivery policies' bytes (log entries and snapshots share them)."""
    dead_letters = delivery.dead_letter_queue
    return b"".join((
        _DELIVERY_HEAD.pack(NO_LIMIT if delivery.max_deliveries is None else delivery.max_deliveries,
                            dead_letters is not None),
        b"" if dead_letters is None else encode_name(dead_letters),
        _DELIVERY_TAIL.pack(delivery.retry_backoff, delivery.retry_delay_ms, delivery.retry_max_delay_ms,
                            delivery.dedup_window_ms, delivery.dedup_max_keys),
    ))


def decode_delivery(data: bytes | memoryview, offset: int) -> tuple[DeliveryPolicies, int]:
    """The delivery policies at ``offset`` and the offset after them (values are checked by their validation)."""
    max_deliveries, has_dead_letters = _DELIVERY_HEAD.unpack_from(data, offset)
    offset += _DELIVERY_HEAD.size
    if has_dead_letters > 1 or max_deliveries < NO_LIMIT:
        raise CodecError("bad delivery policies")
    dead_letters = None
    if has_dead_letters:
        dead_letters, offset = decode_name(data, offset)
    backoff, delay, max_delay, window, max_keys = _DELIVERY_TAIL.unpack_from(data, offset)
    if backoff not in (Backoff.FIXED, Backoff.EXPONENTIAL):
        raise CodecError(f"unknown retry backoff {backoff}")
    delivery = DeliveryPolicies(None if max_deliveries == NO_LIMIT else max_deliveries, dead_letters,
                                delay, Backoff(backoff), max_delay, window, max_keys)
    return delivery, offset + _DELIVERY_TAIL.size


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
    if kind == TYPE_TICK:
        (now,) = _U64.unpack_from(data, _HEAD.size)
        if _HEAD.size + _U64.size != len(data):
            raise CodecError("trailing bytes after a Tick")
        return Tick(now)
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
    elif kind == TYPE_ADD_RECORDS:
        command, offset = _decode_add_records(data, name, offset)
    elif kind == TYPE_RETURN_RECORDS:
        incarnation, now, count = _RETURNS_HEAD.unpack_from(data, offset)
        offset += _RETURNS_HEAD.size
        _check_count(count, MAX_BATCH_IDS, len(data) - offset, _RETURN.size)
        returns = tuple(_RETURN.iter_unpack(data[offset : offset + count * _RETURN.size]))
        offset += count * _RETURN.size
        command = ReturnRecords(name, incarnation, now, returns)
    elif kind == TYPE_MOVE_RECORDS:
        incarnation, now, count = _RETURNS_HEAD.unpack_from(data, offset)
        offset += _RETURNS_HEAD.size
        _check_count(count, MAX_BATCH_IDS, len(data) - offset, _U64.size)
        ids = tuple(record_id for (record_id,) in _U64.iter_unpack(data[offset : offset + count * _U64.size]))
        offset += count * _U64.size
        command = MoveRecords(name, incarnation, now, ids)
    elif kind == TYPE_REMOVE_RECORDS:
        incarnation, count = _REMOVES_HEAD.unpack_from(data, offset)
        offset += _REMOVES_HEAD.size
        _check_count(count, MAX_BATCH_IDS, len(data) - offset, _U64.size)
        ids = tuple(record_id for (record_id,) in _U64.iter_unpack(data[offset : offset + count * _U64.size]))
        offset += count * _U64.size
        command = RemoveRecords(name, incarnation, ids)
    elif kind in (TYPE_CREATE_QUEUE, TYPE_CREATE_QUEUE_WITH_DELIVERY):
        implementation, max_queue_size, max_payload_size, has_range = _CREATE.unpack_from(data, offset)
        offset += _CREATE.size
        priority_range = None
        if has_range > 1:
            raise CodecError(f"bad has_range flag {has_range}")
        if has_range:
            priority_range = _RANGE.unpack_from(data, offset)
            offset += _RANGE.size
        delivery = DEFAULT_DELIVERY
        if kind == TYPE_CREATE_QUEUE_WITH_DELIVERY:
            delivery, offset = decode_delivery(data, offset)
            if delivery == DEFAULT_DELIVERY:
                raise CodecError("a CreateQueue with default delivery policies is written as 'C'")
        command = CreateQueue(name, implementation, max_queue_size, max_payload_size, priority_range, delivery)
    elif kind == TYPE_DELETE_QUEUE:
        command = DeleteQueue(name)
    else:
        raise CodecError(f"unknown log-entry type 0x{kind:02x}")
    if offset != len(data):
        raise CodecError(f"{len(data) - offset} trailing bytes after a log entry")
    return command


def _check_count(count: int, limit: int, left: int, item_size: int) -> None:
    if count == 0 or count > limit:
        raise CodecError(f"bad item count {count}")
    if count * item_size > left:
        raise CodecError("truncated log entry: fewer items than its count")


def _decode_add_records(data: bytes, name: str, offset: int) -> tuple[AddRecords, int]:
    now, count = _BATCH_HEAD.unpack_from(data, offset)
    offset += _BATCH_HEAD.size
    _check_count(count, MAX_BATCH_RECORDS, len(data) - offset, _NEW_RECORD.size + _U32.size)
    records = []
    for _ in range(count):
        priority, not_before, key_length = _NEW_RECORD.unpack_from(data, offset)
        offset += _NEW_RECORD.size
        key = bytes(data[offset : offset + key_length]) if key_length else None
        offset += key_length
        (length,) = _U32.unpack_from(data, offset)
        offset += _U32.size
        if offset + length > len(data):
            raise CodecError("truncated log entry: a payload runs past its end")
        records.append(NewRecord(priority, data[offset : offset + length], key, not_before))
        offset += length
    return AddRecords(name, now, tuple(records)), offset
