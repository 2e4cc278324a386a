"""The snapshot codec: the whole state of a queue manager as a stream of bytes, and back.

Layout (big-endian; documented in docs/storage.md, "Snapshot data"):

    header   8 bytes magic "TFXSTATE" | u16 format version (2) | u64 next incarnation | u32 queue count |
             u64 clock (leader time, ms)
    queue    name | u8 implementation | u64 incarnation | u64 last id | i32 max queue size (-1 none) |
             i32 max payload size (-1 none) | u8 has_range | [i64 min | i64 max] | delivery policies (as in
             log entries) | u32 key count | key count × (u8 length | key | u64 record id | u64 time) |
             u64 record count
    record   u64 id | i64 priority | u32 failed deliveries | u64 not_before | u8 has_origin |
             u32 payload length | payload | [origin queue name | u64 origin record id]

Format 1 (still read) has no clock, delivery policies or keys, and its records are u64 id | i64 priority |
u32 payload length | payload.

Queues come in name order; a queue's records in the order ``Queue.records`` gives: the ready ones in push
order, records handed out but not yet acknowledged after them (as if released: a snapshot keeps them, they
stay stored until their ack commits), then the delayed ones.
The encoding of a state is canonical, so ``state_digest`` compares two states.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from taskflux.domain.commands import NO_LIMIT
from taskflux.domain.entry_codec import (
    DELIVERY_HEAD_BYTES,
    DELIVERY_TAIL_BYTES,
    CodecError,
    decode_delivery,
    decode_name,
    encode_delivery,
    encode_name,
)
from taskflux.domain.errors import INT64_MAX, Implementation
from taskflux.domain.manager import QueueManager
from taskflux.domain.names import DEFAULT_QUEUE
from taskflux.domain.policies import DEFAULT_DELIVERY, DeliveryPolicies, QueuePolicies
from taskflux.domain.queue import FrozenQueue, Queue
from taskflux.domain.records import Origin, Record

SNAPSHOT_MAGIC = b"TFXSTATE"
SNAPSHOT_FORMAT_VERSION = 2
DEFAULT_CHUNK_BYTES = 1 << 20
_READ_STEP_BYTES = 1 << 20  # payloads are read in steps: a corrupt length cannot allocate gigabytes

_HEADER = struct.Struct(">8sHQI")
_QUEUE = struct.Struct(">BQQiiB")
_RANGE = struct.Struct(">qq")
_COUNT = struct.Struct(">Q")
_RECORD_V1 = struct.Struct(">QqI")
_RECORD = struct.Struct(">QqIQBI")
_CLOCK = struct.Struct(">Q")
_KEY_COUNT = struct.Struct(">I")
_KEY = struct.Struct(">QQ")
_ORIGIN_ID = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class FrozenState:
    """A queue manager's state at one instant, which another thread may encode while the manager changes."""

    next_incarnation: int
    queues: list[FrozenQueue]  # in name order
    clock: int = 0


def freeze(manager: QueueManager) -> FrozenState:
    """The manager's state now: its cost is a C-level copy of each queue's record references (no Python code
    per record), so the node loop can take it between two applies and leave the encoding to a thread."""
    return FrozenState(manager.next_incarnation, [queue.freeze() for queue in manager.queues()], manager.clock)


def encode_snapshot(state: QueueManager | FrozenState, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[bytes]:
    """The snapshot of ``state`` in chunks of about ``chunk_bytes`` (never the whole state at once)."""
    if isinstance(state, QueueManager):
        state = freeze(state)
    buffer = bytearray(_HEADER.pack(SNAPSHOT_MAGIC, SNAPSHOT_FORMAT_VERSION, state.next_incarnation,
                                    len(state.queues)))
    buffer += _CLOCK.pack(state.clock)
    for queue in state.queues:
        policies = queue.policies
        buffer += encode_name(queue.name)
        buffer += _QUEUE.pack(
            queue.implementation,
            queue.incarnation,
            queue.last_id,
            NO_LIMIT if policies.max_queue_size is None else policies.max_queue_size,
            NO_LIMIT if policies.max_payload_size is None else policies.max_payload_size,
            policies.priority_range is not None,
        )
        if policies.priority_range is not None:
            buffer += _RANGE.pack(*policies.priority_range)
        buffer += encode_delivery(policies.delivery)
        buffer += _KEY_COUNT.pack(len(queue.keys))
        for key, (record_id, at) in queue.keys:
            buffer += bytes((len(key),)) + key + _KEY.pack(record_id, at)
        buffer += _COUNT.pack(queue.stored)
        for record in queue.records():
            origin = record.origin
            buffer += _RECORD.pack(record.id, record.priority, record.failed_deliveries, record.not_before,
                                   origin is not None, len(record.payload))
            buffer += record.payload
            if origin is not None:
                buffer += encode_name(origin.queue) + _ORIGIN_ID.pack(origin.record_id)
            if len(buffer) >= chunk_bytes:
                yield bytes(buffer)
                buffer.clear()
    if buffer:
        yield bytes(buffer)


def decode_snapshot(stream: BinaryIO) -> QueueManager:
    """Rebuild a queue manager from a snapshot stream; CodecError on anything malformed."""
    reader = _StreamReader(stream)
    try:
        magic, version, next_incarnation, queue_count = reader.unpack(_HEADER)
        if magic != SNAPSHOT_MAGIC:
            raise CodecError(f"not a TaskFlux state snapshot (magic {magic!r})")
        if version not in (1, SNAPSHOT_FORMAT_VERSION):
            raise CodecError(f"unsupported snapshot format version {version}")
        manager = QueueManager(with_default_queue=False)
        if version > 1:
            (manager.clock,) = reader.unpack(_CLOCK)
        for _ in range(queue_count):
            manager.add_queue(_read_queue(reader, version, manager.clock))
        if reader.read(1):
            raise CodecError("trailing bytes after the snapshot")
    except (struct.error, ValueError) as error:
        if isinstance(error, CodecError):
            raise
        raise CodecError(f"invalid snapshot: {error}") from None
    if manager.get(DEFAULT_QUEUE) is None:
        raise CodecError("the snapshot has no default queue")
    if next_incarnation < manager.next_incarnation:
        raise CodecError(f"next incarnation {next_incarnation} is not above every queue's")
    manager.next_incarnation = next_incarnation
    return manager


def state_digest(manager: QueueManager) -> str:
    """A SHA-256 of the canonical snapshot: equal digests mean equal states."""
    digest = hashlib.sha256()
    for chunk in encode_snapshot(manager):
        digest.update(chunk)
    return digest.hexdigest()


def _read_name(reader: _StreamReader) -> str:
    name_length = reader.read_exact(1)
    name, _ = decode_name(name_length + reader.read_exact(name_length[0]), 0)
    return name


def _read_queue(reader: _StreamReader, version: int, clock: int) -> Queue:
    name = _read_name(reader)
    implementation, incarnation, last_id, max_queue_size, max_payload_size, has_range = reader.unpack(_QUEUE)
    if implementation not in (Implementation.H4, Implementation.QA):
        raise CodecError(f"queue {name!r}: unknown implementation {implementation}")
    if has_range > 1:
        raise CodecError(f"queue {name!r}: bad has_range flag {has_range}")
    priority_range = reader.unpack(_RANGE) if has_range else None
    if priority_range is not None and priority_range[0] > priority_range[1]:
        raise CodecError(f"queue {name!r}: invalid priority range {priority_range}")
    if implementation == Implementation.QA and priority_range is None:
        raise CodecError(f"queue {name!r}: a QA queue without a priority range")
    if max_queue_size < NO_LIMIT or max_payload_size < NO_LIMIT:
        raise CodecError(f"queue {name!r}: negative limits")
    delivery = DEFAULT_DELIVERY if version == 1 else _read_delivery(reader)
    policies = QueuePolicies(
        None if max_queue_size == NO_LIMIT else max_queue_size,
        None if max_payload_size == NO_LIMIT else max_payload_size,
        priority_range,
        delivery,
    )
    invalid = delivery.validate(name)
    if invalid is not None:
        raise CodecError(f"queue {name!r}: {invalid.message}")
    queue = Queue(name, Implementation(implementation), policies, incarnation, last_id)
    if version > 1:
        (key_count,) = reader.unpack(_KEY_COUNT)
        for _ in range(key_count):
            key = reader.read_exact(reader.read_exact(1)[0])
            if not key or key in queue.keys:
                raise CodecError(f"queue {name!r}: an empty or repeated idempotency key")
            queue.keys[key] = reader.unpack(_KEY)
    (record_count,) = reader.unpack(_COUNT)
    for _ in range(record_count):
        record = _read_record(reader) if version > 1 else _read_record_v1(reader)
        if record.id == 0 or record.id in queue:
            raise CodecError(f"queue {name!r}: bad or repeated record id {record.id}")
        if not policies.accepts_priority(record.priority):
            raise CodecError(f"queue {name!r}: record {record.id} priority {record.priority} outside the range")
        queue.restore(record, clock)
    return queue


def _read_delivery(reader: _StreamReader) -> DeliveryPolicies:
    """The delivery policies: their fixed head, the dead-letter queue's name when there is one, their tail."""
    head = reader.read_exact(DELIVERY_HEAD_BYTES)
    name = b""
    if head[-1] == 1:
        length = reader.read_exact(1)
        name = length + reader.read_exact(length[0])
    delivery, _ = decode_delivery(head + name + reader.read_exact(DELIVERY_TAIL_BYTES), 0)
    return delivery


def _read_record_v1(reader: _StreamReader) -> Record:
    record_id, priority, length = reader.unpack(_RECORD_V1)
    return Record(record_id, priority, reader.read_exact(length))


def _read_record(reader: _StreamReader) -> Record:
    record_id, priority, failures, not_before, has_origin, length = reader.unpack(_RECORD)
    payload = reader.read_exact(length)
    if has_origin > 1 or not_before > INT64_MAX:
        raise CodecError(f"record {record_id}: bad origin flag or due time")
    origin = Origin(_read_name(reader), reader.unpack(_ORIGIN_ID)[0]) if has_origin else None
    return Record(record_id, priority, payload, failures, not_before, origin)


class _StreamReader:
    """Exact reads from a binary stream; a short read is a CodecError."""

    __slots__ = ("_stream",)

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def read(self, size: int) -> bytes:
        return self._stream.read(size)

    def read_exact(self, size: int) -> bytes:
        if size <= _READ_STEP_BYTES:
            data = self._stream.read(size)
        else:
            parts = []
            remaining = size
            while remaining:
                part = self._stream.read(min(remaining, _READ_STEP_BYTES))
                if not part:
                    break
                parts.append(part)
                remaining -= len(part)
            data = b"".join(parts)
        if len(data) != size:
            raise CodecError(f"snapshot truncated: wanted {size} bytes, got {len(data)}")
        return data

    def unpack(self, layout: struct.Struct) -> tuple:
        return layout.unpack(self.read_exact(layout.size))
