"""Sans-IO codec of the binary client protocol (docs/client-protocol.md): packets, commands, responses.

Bytes in, packets out (:class:`PacketDecoder`); packets in, bytes out (:func:`encode`). No sockets, no clocks.
Packets are self-delimiting with no outer length, so the decoder parses field by field and answers "need more data"
(None) until a whole packet has arrived. Every declared length is checked against its bound as soon as it is read.

Queue names travel as latin-1 ``str`` (every byte survives) and are not validated here: the server validates them
with :func:`taskflux.domain.names.is_valid_queue_name` and answers error 1 per command (docs/client-protocol.md §8).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from taskflux.domain.errors import ErrorCode, PolicyCode
from taskflux.domain.policies import QueuePolicies
from taskflux.domain.queue import Queue
from taskflux.domain.records import Origin, Record
from taskflux.wire.primitives import (
    I32,
    U32,
    ArrayMemo,
    Incomplete,
    ProtocolError,
    Reader,
    encode_optional_i32,
    encode_queue_name,
    encode_string,
)

DEFAULT_MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_STRING_BYTES = 64 * 1024
DEFAULT_MAX_ARRAY_ITEMS = 1 << 20
DEFAULT_MAX_IGNORED_PACKET_BYTES = 4 * 1024
"""Bound on a packet a server parses and ignores: one that only a server sends (a client has no reason to)."""

AUTH_METHOD_NONE = 0x4E
"""The only authorization method ("none", ``N``)."""
CLIENT_VERSION = (1, 1, 0)
"""The version a TaskFlux client announces in its BootstrapRequest: 1.1 knows the extension (§13)."""
ORIGINAL_VERSION = (1, 0, 0)
"""The original protocol's version (a TaskFlux client falls back to it when a server refuses 1.1)."""
SERVER_VERSION = (1, 1)
"""Major and minor version of the protocol the server speaks."""
EXTENSION_MINOR = 1
"""The minor version from which a client knows the extension's commands and responses (§13)."""


def is_supported_version(major: int, minor: int) -> bool:
    """The server's bootstrap rule (docs/client-protocol.md §10.1): same major, client minor not above the
    server's; patch ignored."""
    return major == SERVER_VERSION[0] and minor <= SERVER_VERSION[1]


def knows_extension(minor: int) -> bool:
    """Whether a client that announced this minor version may use the extension (§13)."""
    return minor >= EXTENSION_MINOR


class Direction(Enum):
    """Who sent the bytes a decoder reads."""

    CLIENT_TO_SERVER = "client-to-server"
    """Bytes from a client (the server's decoder). Every known packet is decoded, so the server can ignore the
    known ones it does not expect (docs/client-protocol.md §10.2)."""
    SERVER_TO_CLIENT = "server-to-client"
    """Bytes from a server (the client's decoder). Only packets a server sends are accepted."""


# --- packet markers (§1.4), command markers (§2.1), response markers (§2.2) ---------------------------------------

class Marker:
    """Packet marker bytes."""

    AUTHORIZATION_REQUEST = 0x41
    AUTHORIZATION_RESPONSE = 0x61
    BOOTSTRAP_REQUEST = 0x42
    BOOTSTRAP_RESPONSE = 0x62
    CLUSTER_METADATA_REQUEST = 0x4D
    CLUSTER_METADATA_RESPONSE = 0x6D
    COMMAND_REQUEST = 0x43
    COMMAND_RESPONSE = 0x63
    ACK = 0x4B
    NACK = 0x4E
    OK = 0x6B
    ERROR_RESPONSE = 0x65
    NOT_LEADER = 0x6C
    NACK_AFTER = 0x52  # the extension (§13): a Nack with a retry delay


class CommandMarker:
    """Command marker bytes (after ``43``)."""

    ENQUEUE = 0x45
    DEQUEUE = 0x44
    COUNT = 0x43
    CREATE_QUEUE = 0x51
    DELETE_QUEUE = 0x52
    LIST_QUEUES = 0x4C
    ENQUEUE_MANY = 0x65  # the extension (§13) from here on
    DEQUEUE_MANY = 0x64
    PEEK = 0x70
    CREATE_QUEUE_WITH_POLICIES = 0x71


class ResponseMarker:
    """Response marker bytes (after ``63``)."""

    COUNT = 0x63
    DEQUEUE = 0x64
    ERROR = 0x65
    LIST_QUEUES = 0x6C
    POLICY_VIOLATION = 0x70
    ADDED = 0x61  # the extension (§13) from here on
    RECORDS = 0x72


# --- commands (§2.1) ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class EnqueueCommand:
    """Enqueue ``payload`` with ``priority`` (Int64) into ``queue``."""

    queue: str
    priority: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class DequeueCommand:
    """Take the most urgent record of ``queue``, waiting up to ``timeout_ms`` (UInt32, 0 = do not wait)."""

    queue: str
    timeout_ms: int = 0


@dataclass(frozen=True, slots=True)
class CountCommand:
    """Number of records stored in ``queue``."""

    queue: str


@dataclass(frozen=True, slots=True)
class CreateQueueCommand:
    """Create ``queue``. ``implementation`` is the raw wire code (1 = H4, 2 = QA; others are refused with error 8);
    the sizes are raw Int32 with None for "absent" (``-1``), other negatives are kept for the server to refuse."""

    queue: str
    implementation: int = 1
    max_queue_size: int | None = None
    max_payload_size: int | None = None
    priority_range: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class DeleteQueueCommand:
    """Delete ``queue`` and every record in it."""

    queue: str


@dataclass(frozen=True, slots=True)
class ListQueuesCommand:
    """List every queue with its count and metadata."""


@dataclass(frozen=True, slots=True)
class EnqueueItem:
    """One record of an EnqueueMany: ``key`` (empty: none) makes its enqueue idempotent; ``delay_ms`` and
    ``not_before_ms`` (ms since the epoch, 0: none) keep it from consumers until then."""

    priority: int
    payload: bytes
    key: bytes = b""
    delay_ms: int = 0
    not_before_ms: int = 0


@dataclass(frozen=True, slots=True)
class EnqueueManyCommand:
    """Extension: enqueue records at once, all or nothing, in one phase (no Ack step)."""

    queue: str
    items: tuple[EnqueueItem, ...]


@dataclass(frozen=True, slots=True)
class DequeueManyCommand:
    """Extension: take up to ``max_records`` records of ``queue``, waiting up to ``timeout_ms`` for the first."""

    queue: str
    timeout_ms: int = 0
    max_records: int = 1


@dataclass(frozen=True, slots=True)
class PeekCommand:
    """Extension: the next ``limit`` ready records of ``queue``, left in place."""

    queue: str
    limit: int = 1


@dataclass(frozen=True, slots=True)
class CreateQueueWithPoliciesCommand:
    """Extension: CreateQueue with the delivery policies (docs/state-machine.md). ``max_deliveries`` None = none;
    ``retry_backoff`` 0 = fixed, 1 = exponential."""

    queue: str
    implementation: int = 1
    max_queue_size: int | None = None
    max_payload_size: int | None = None
    priority_range: tuple[int, int] | None = None
    max_deliveries: int | None = None
    dead_letter_queue: str | None = None
    retry_delay_ms: int = 0
    retry_backoff: int = 0
    retry_max_delay_ms: int = 0
    dedup_window_ms: int = 0
    dedup_max_keys: int = 0


Command = (
    EnqueueCommand | DequeueCommand | CountCommand | CreateQueueCommand | DeleteQueueCommand | ListQueuesCommand
    | EnqueueManyCommand | DequeueManyCommand | PeekCommand | CreateQueueWithPoliciesCommand
)
EXTENSION_COMMANDS: tuple[type, ...] = (
    EnqueueManyCommand, DequeueManyCommand, PeekCommand, CreateQueueWithPoliciesCommand)
"""Commands only a client that announced 1.1 may send."""


# --- responses (§2.2) --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CountResponse:
    """Answer to Count."""

    count: int


@dataclass(frozen=True, slots=True)
class DequeueResponse:
    """Answer to Dequeue: the record taken, or None when there was none."""

    record: Record | None


@dataclass(frozen=True, slots=True)
class CommandErrorResponse:
    """A business error inside a CommandResponse (``63 65``); ``code`` is an :class:`ErrorCode` when known."""

    code: int
    message: str = ""


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """One entry of ListQueues: name, stored count and the metadata dict of §2.7."""

    name: str
    count: int
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ListQueuesResponse:
    """Answer to ListQueues."""

    queues: tuple[QueueInfo, ...]


_POLICY_ARITY = {PolicyCode.GENERIC: 0, PolicyCode.MAX_QUEUE_SIZE: 1, PolicyCode.PRIORITY_RANGE: 2,
                 PolicyCode.MAX_PAYLOAD_SIZE: 1}


@dataclass(frozen=True, slots=True)
class PolicyViolationResponse:
    """An enqueue refused by a queue policy. ``limits`` are the configured limits (§2.5): ``(max_queue_size,)``,
    ``(min, max)`` or ``(max_payload_size,)``; the Generic policy carries ``message`` instead."""

    policy: PolicyCode
    limits: tuple[int, ...] = ()
    message: str = ""


@dataclass(frozen=True, slots=True)
class AddedResponse:
    """Extension: answer to EnqueueMany, per record in order: its id, and whether its key was known (then nothing
    was added and the id is the first enqueue's)."""

    records: tuple[tuple[int, bool], ...]


@dataclass(frozen=True, slots=True)
class RecordsResponse:
    """Extension: answer to DequeueMany and Peek (empty: none); each record carries its failed deliveries and, for a
    dead letter, its origin (the record's ``not_before`` is not sent)."""

    records: tuple[Record, ...]


Response = (
    CountResponse | DequeueResponse | CommandErrorResponse | ListQueuesResponse | PolicyViolationResponse
    | AddedResponse | RecordsResponse
)


# --- packets (§1.4) ----------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """``41 4E``: authorization with the method "none" (the only one)."""


@dataclass(frozen=True, slots=True)
class AuthorizationResponse:
    """``61 01`` on success, ``61 00`` + reason otherwise."""

    success: bool = True
    reason: str = ""


@dataclass(frozen=True, slots=True)
class BootstrapRequest:
    """``42`` + the client's protocol version."""

    major: int = CLIENT_VERSION[0]
    minor: int = CLIENT_VERSION[1]
    patch: int = CLIENT_VERSION[2]


@dataclass(frozen=True, slots=True)
class BootstrapResponse:
    """``62 01`` if the version is accepted, ``62 00`` + reason otherwise (then the server closes)."""

    success: bool = True
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ClusterMetadataRequest:
    """``4D``: ask any node for the cluster's endpoints and leader."""


@dataclass(frozen=True, slots=True)
class ClusterMetadataResponse:
    """Client endpoints of every node (index = node id), the leader's id (None if unknown), the answering node."""

    endpoints: tuple[str, ...]
    leader_id: int | None
    responding_id: int


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """``43`` + a command."""

    command: Command


@dataclass(frozen=True, slots=True)
class CommandResponse:
    """``63`` + a response."""

    response: Response


@dataclass(frozen=True, slots=True)
class Ack:
    """``4B``."""


@dataclass(frozen=True, slots=True)
class Nack:
    """``4E``."""


@dataclass(frozen=True, slots=True)
class NackAfter:
    """``52`` + Int64 delay ms (extension, §13): a Nack whose record comes back after ``delay_ms``."""

    delay_ms: int


@dataclass(frozen=True, slots=True)
class Ok:
    """``6B``."""


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """``65`` + code + message: a request refused by validation before execution; the connection stays open."""

    code: int
    message: str = ""


@dataclass(frozen=True, slots=True)
class NotLeader:
    """``6C`` + the leader's id, None when no leader is known."""

    leader_id: int | None


Packet = (
    AuthorizationRequest | AuthorizationResponse | BootstrapRequest | BootstrapResponse | ClusterMetadataRequest
    | ClusterMetadataResponse | CommandRequest | CommandResponse | Ack | Nack | Ok | ErrorResponse | NotLeader
    | NackAfter
)

SERVER_PACKETS: tuple[type, ...] = (
    AuthorizationResponse, BootstrapResponse, ClusterMetadataResponse, CommandResponse, Ok, ErrorResponse, NotLeader,
)
"""Packet types a server sends."""


# --- ListQueues metadata (§2.7) ----------------------------------------------------------------------------------

METADATA_MAX_QUEUE_SIZE = "max-queue-size"
METADATA_MAX_PAYLOAD_SIZE = "max-payload-size"
METADATA_PRIORITY_RANGE = "priority-range"


def queue_metadata(policies: QueuePolicies) -> dict[str, str]:
    """The ListQueues metadata dict of a queue's limits: present keys only, in the protocol's order."""
    metadata: dict[str, str] = {}
    if policies.max_queue_size is not None:
        metadata[METADATA_MAX_QUEUE_SIZE] = str(policies.max_queue_size)
    if policies.max_payload_size is not None:
        metadata[METADATA_MAX_PAYLOAD_SIZE] = str(policies.max_payload_size)
    if policies.priority_range is not None:
        low, high = policies.priority_range
        metadata[METADATA_PRIORITY_RANGE] = f"{low} {high}"
    return metadata


METADATA_DELAYED = "delayed"
METADATA_RESERVED = "reserved"
METADATA_DELIVERY = ("max-deliveries", "dead-letter-queue", "retry-delay-ms", "retry-backoff", "retry-max-delay-ms",
                     "dedup-window-ms", "dedup-max-keys")


def original_metadata(queue: Queue) -> dict[str, str]:
    """ListQueues metadata for an original (1.0) client: the limits only."""
    return queue_metadata(queue.policies)


def extended_metadata(queue: Queue) -> dict[str, str]:
    """ListQueues metadata for a 1.1 client: the limits, the delayed and reserved counts, the delivery policies
    (``max-deliveries`` and ``dead-letter-queue`` only when set; ``retry-backoff`` is ``fixed`` or ``exponential``)."""
    metadata = queue_metadata(queue.policies)
    delivery = queue.policies.delivery
    metadata[METADATA_DELAYED] = str(queue.delayed_count)
    metadata[METADATA_RESERVED] = str(queue.reserved_count)
    values = (delivery.max_deliveries, delivery.dead_letter_queue, delivery.retry_delay_ms,
              delivery.retry_backoff.name.lower(), delivery.retry_max_delay_ms, delivery.dedup_window_ms,
              delivery.dedup_max_keys)
    metadata.update((key, str(value)) for key, value in zip(METADATA_DELIVERY, values, strict=True)
                    if value is not None)
    return metadata


def parse_queue_metadata(metadata: Mapping[str, str]) -> QueuePolicies:
    """The limits described by a ListQueues metadata dict. Unknown keys are ignored; a malformed value of a known
    key raises ValueError."""
    max_queue_size = metadata.get(METADATA_MAX_QUEUE_SIZE)
    max_payload_size = metadata.get(METADATA_MAX_PAYLOAD_SIZE)
    priority_range = metadata.get(METADATA_PRIORITY_RANGE)
    parsed_range: tuple[int, int] | None = None
    if priority_range is not None:
        parts = priority_range.split(" ")
        if len(parts) != 2:
            raise ValueError(f"malformed {METADATA_PRIORITY_RANGE} {priority_range!r}: expected '<min> <max>'")
        parsed_range = (_decimal(parts[0]), _decimal(parts[1]))
    return QueuePolicies(
        max_queue_size=None if max_queue_size is None else _decimal(max_queue_size),
        max_payload_size=None if max_payload_size is None else _decimal(max_payload_size),
        priority_range=parsed_range,
    )


def _decimal(text: str) -> int:
    # int() alone would accept "+5", " 5" and "1_000"; the protocol allows plain digits with an optional "-" only.
    digits = text[1:] if text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"malformed decimal number {text!r}")
    return int(text)


# --- encoding ----------------------------------------------------------------------------------------------------

_ENQUEUE_HEAD = bytes([Marker.COMMAND_REQUEST, CommandMarker.ENQUEUE])
_I64_I32 = struct.Struct(">qi")
_I32_I32 = struct.Struct(">ii")
_I32_3 = struct.Struct(">iii")
_I64_I64 = struct.Struct(">qq")
_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")
_ID_PRIORITY_LEN = struct.Struct(">Qqi")
_ITEM_HEAD = struct.Struct(">qi")  # priority | payload length
_ITEM_TIMES = struct.Struct(">qq")  # delay ms | not-before ms
_ADDED = struct.Struct(">Q?")
_RECORD_HEAD = struct.Struct(">Qqi")  # id | priority | failed deliveries (then the origin, then the payload)
_DELIVERY_TAIL = struct.Struct(">qBqqi")
MAX_BATCH = 1000
"""Records in one EnqueueMany, DequeueMany or Peek."""
MAX_KEY_BYTES = 128

_SINGLE_BYTE: dict[type, bytes] = {
    AuthorizationRequest: bytes([Marker.AUTHORIZATION_REQUEST, AUTH_METHOD_NONE]),
    ClusterMetadataRequest: bytes([Marker.CLUSTER_METADATA_REQUEST]),
    Ack: bytes([Marker.ACK]),
    Nack: bytes([Marker.NACK]),
    Ok: bytes([Marker.OK]),
}


def _encode_command(command: Command) -> bytes:
    kind = type(command)
    if kind is EnqueueCommand:
        assert isinstance(command, EnqueueCommand)
        return b"".join((
            _ENQUEUE_HEAD, encode_queue_name(command.queue),
            _I64_I32.pack(command.priority, len(command.payload)), command.payload,
        ))
    if kind is DequeueCommand:
        assert isinstance(command, DequeueCommand)
        return b"CD" + encode_queue_name(command.queue) + U32.pack(command.timeout_ms)
    if kind is CountCommand:
        assert isinstance(command, CountCommand)
        return b"CC" + encode_queue_name(command.queue)
    if kind is CreateQueueCommand:
        assert isinstance(command, CreateQueueCommand)
        parts = [b"CQ", encode_queue_name(command.queue), I32.pack(command.implementation),
                 encode_optional_i32(command.max_queue_size), encode_optional_i32(command.max_payload_size)]
        if command.priority_range is None:
            parts.append(b"\x00")
        else:
            parts.append(b"\x01" + _I64_I64.pack(*command.priority_range))
        return b"".join(parts)
    if kind is DeleteQueueCommand:
        assert isinstance(command, DeleteQueueCommand)
        return b"CR" + encode_queue_name(command.queue)
    if kind is ListQueuesCommand:
        return b"CL"
    if kind is EnqueueManyCommand:
        assert isinstance(command, EnqueueManyCommand)
        parts = [b"Ce", encode_queue_name(command.queue), I32.pack(len(command.items))]
        for item in command.items:
            parts += (_ITEM_HEAD.pack(item.priority, len(item.payload)), item.payload, I32.pack(len(item.key)),
                      item.key, _ITEM_TIMES.pack(item.delay_ms, item.not_before_ms))
        return b"".join(parts)
    if kind is DequeueManyCommand:
        assert isinstance(command, DequeueManyCommand)
        return b"Cd" + encode_queue_name(command.queue) + U32.pack(command.timeout_ms) + I32.pack(command.max_records)
    if kind is PeekCommand:
        assert isinstance(command, PeekCommand)
        return b"Cp" + encode_queue_name(command.queue) + I32.pack(command.limit)
    if kind is CreateQueueWithPoliciesCommand:
        assert isinstance(command, CreateQueueWithPoliciesCommand)
        base = _encode_command(CreateQueueCommand(command.queue, command.implementation, command.max_queue_size,
                                                  command.max_payload_size, command.priority_range))
        dead_letters = command.dead_letter_queue
        return b"".join((
            b"Cq", base[2:], encode_optional_i32(command.max_deliveries),
            b"\x00" if dead_letters is None else b"\x01" + encode_queue_name(dead_letters),
            _DELIVERY_TAIL.pack(command.retry_delay_ms, command.retry_backoff, command.retry_max_delay_ms,
                                command.dedup_window_ms, command.dedup_max_keys),
        ))
    raise TypeError(f"not a command: {command!r}")


def encode_added(record_ids: Sequence[int], duplicates: Sequence[bool]) -> bytes:
    """The CommandResponse Added packet (``63 61``) without building its dataclasses: the answer of every
    EnqueueMany."""
    return b"".join((b"ca", I32.pack(len(record_ids)), *map(_ADDED.pack, record_ids, duplicates)))


def _encode_dict(metadata: Mapping[str, str]) -> bytes:
    parts = [I32.pack(len(metadata))]
    for key, value in metadata.items():
        parts.append(encode_string(key))
        parts.append(encode_string(value))
    return b"".join(parts)


def _encode_response(response: Response) -> bytes:
    kind = type(response)
    if kind is CountResponse:
        assert isinstance(response, CountResponse)
        return b"cc" + I32.pack(response.count)
    if kind is DequeueResponse:
        assert isinstance(response, DequeueResponse)
        record = response.record
        if record is None:
            return b"cd\x00"
        return b"".join((b"cd\x01", _ID_PRIORITY_LEN.pack(record.id, record.priority, len(record.payload)),
                         record.payload))
    if kind is CommandErrorResponse:
        assert isinstance(response, CommandErrorResponse)
        return b"ce" + I32.pack(response.code) + encode_string(response.message)
    if kind is ListQueuesResponse:
        assert isinstance(response, ListQueuesResponse)
        parts = [b"cl", I32.pack(len(response.queues))]
        for info in response.queues:
            parts.append(encode_queue_name(info.name))
            parts.append(I32.pack(info.count))
            parts.append(_encode_dict(info.metadata))
        return b"".join(parts)
    if kind is PolicyViolationResponse:
        assert isinstance(response, PolicyViolationResponse)
        return b"cp" + _encode_policy(response)
    if kind is AddedResponse:
        assert isinstance(response, AddedResponse)
        return b"".join((b"ca", I32.pack(len(response.records)),
                         *(_ADDED.pack(record_id, duplicate) for record_id, duplicate in response.records)))
    if kind is RecordsResponse:
        assert isinstance(response, RecordsResponse)
        parts = [b"cr", I32.pack(len(response.records))]
        for record in response.records:
            origin = record.origin
            parts += (_RECORD_HEAD.pack(record.id, record.priority, record.failed_deliveries),
                      b"\x00" if origin is None else b"\x01" + encode_queue_name(origin.queue) +
                      _U64.pack(origin.record_id), I32.pack(len(record.payload)), record.payload)
        return b"".join(parts)
    raise TypeError(f"not a response: {response!r}")


def _encode_policy(violation: PolicyViolationResponse) -> bytes:
    policy = violation.policy
    arity = _POLICY_ARITY.get(policy)
    if arity is None:
        raise ValueError(f"unknown policy code {policy}")
    if len(violation.limits) != arity:
        raise ValueError(f"policy {policy!r} carries {arity} limit(s), got {violation.limits!r}")
    if policy == PolicyCode.GENERIC:
        return I32.pack(policy) + encode_string(violation.message)
    if policy == PolicyCode.PRIORITY_RANGE:
        return I32.pack(policy) + _I64_I64.pack(*violation.limits)
    return _I32_I32.pack(policy, violation.limits[0])


def _encode_flag_reason(marker: int, success: bool, reason: str) -> bytes:
    if success:
        return bytes((marker, 1))
    return bytes((marker, 0)) + encode_string(reason)


def _encode_cluster_metadata(packet: ClusterMetadataResponse) -> bytes:
    parts = [b"m", I32.pack(len(packet.endpoints))]
    parts.extend(encode_string(endpoint) for endpoint in packet.endpoints)
    parts.append(encode_optional_i32(packet.leader_id))
    parts.append(I32.pack(packet.responding_id))
    return b"".join(parts)


_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    CommandRequest: lambda p: _encode_command(p.command),
    CommandResponse: lambda p: _encode_response(p.response),
    AuthorizationResponse: lambda p: _encode_flag_reason(Marker.AUTHORIZATION_RESPONSE, p.success, p.reason),
    BootstrapRequest: lambda p: b"B" + _I32_3.pack(p.major, p.minor, p.patch),
    BootstrapResponse: lambda p: _encode_flag_reason(Marker.BOOTSTRAP_RESPONSE, p.success, p.reason),
    ClusterMetadataResponse: _encode_cluster_metadata,
    ErrorResponse: lambda p: b"e" + I32.pack(p.code) + encode_string(p.message),
    NotLeader: lambda p: b"l" + encode_optional_i32(p.leader_id),
    NackAfter: lambda p: b"R" + _I64.pack(p.delay_ms),
}


def encode(packet: Packet) -> bytes:
    """The bytes of ``packet``. Raises ValueError for a value that does not fit its field (an integer out of
    range, a queue name longer than 255 bytes or not latin-1), TypeError for something that is not a packet."""
    single = _SINGLE_BYTE.get(type(packet))
    if single is not None:
        return single
    encoder = _ENCODERS.get(type(packet))
    if encoder is None:
        raise TypeError(f"not a packet: {packet!r}")
    try:
        return encoder(packet)
    except struct.error as exc:
        raise ValueError(f"cannot encode {packet!r}: {exc}") from None
    except UnicodeEncodeError as exc:
        raise ValueError(f"cannot encode {packet!r}: {exc}") from None


ENQUEUE_OVERHEAD_BYTES = len(encode(CommandRequest(EnqueueCommand("q" * 255, 0, b""))))
"""Bytes of an Enqueue around its payload, with the longest queue name."""
LARGEST_CREATE_QUEUE_BYTES = len(encode(CommandRequest(CreateQueueWithPoliciesCommand(
    "q" * 255, 1, 0, 0, (0, 0), 1, "q" * 255))))
"""Bytes of a CreateQueue (with policies) with the longest queue names and every optional field present."""
ENQUEUE_MANY_OVERHEAD_BYTES = len(encode(CommandRequest(EnqueueManyCommand(
    "q" * 255, (EnqueueItem(0, b"", b"k" * MAX_KEY_BYTES),) * MAX_BATCH))))
"""Bytes of the largest EnqueueMany around its payloads: a batch's payloads together fit in one payload's limit."""


# --- decoding ----------------------------------------------------------------------------------------------------

class _Parser:
    """Field-by-field parsers of every packet, bound to the decoder's limits."""

    __slots__ = ("max_array_items", "max_payload_bytes", "max_string_bytes")

    def __init__(self, max_payload_bytes: int, max_string_bytes: int, max_array_items: int) -> None:
        self.max_payload_bytes = max_payload_bytes
        self.max_string_bytes = max_string_bytes
        self.max_array_items = max_array_items

    def string(self, r: Reader, what: str = "string") -> str:
        return r.string(self.max_string_bytes, what)

    def authorization_request(self, r: Reader) -> Packet:
        method = r.u8()
        if method != AUTH_METHOD_NONE:
            raise ProtocolError(f"unknown authorization method 0x{method:02x}")
        return AuthorizationRequest()

    def authorization_response(self, r: Reader) -> Packet:
        success = r.bool()
        return AuthorizationResponse(True) if success else AuthorizationResponse(False, self.string(r, "reason"))

    def bootstrap_request(self, r: Reader) -> Packet:
        return BootstrapRequest(r.i32(), r.i32(), r.i32())

    def bootstrap_response(self, r: Reader) -> Packet:
        success = r.bool()
        return BootstrapResponse(True) if success else BootstrapResponse(False, self.string(r, "reason"))

    def cluster_metadata_request(self, r: Reader) -> Packet:
        return ClusterMetadataRequest()

    def cluster_metadata_response(self, r: Reader) -> Packet:
        count = r.length("endpoint array", self.max_array_items)
        endpoints = tuple(r.items(count, self.endpoint))
        leader_id = r.i32()
        return ClusterMetadataResponse(endpoints, None if leader_id < 0 else leader_id, r.i32())

    def endpoint(self, r: Reader) -> str:
        return self.string(r, "endpoint")

    def command_request(self, r: Reader) -> Packet:
        marker = r.u8()
        if marker == CommandMarker.ENQUEUE:
            queue = r.queue_name()
            priority = r.i64()
            return CommandRequest(EnqueueCommand(queue, priority, r.buffer(self.max_payload_bytes)))
        if marker == CommandMarker.DEQUEUE:
            queue = r.queue_name()
            return CommandRequest(DequeueCommand(queue, r.u32()))
        if marker == CommandMarker.COUNT:
            return CommandRequest(CountCommand(r.queue_name()))
        if marker == CommandMarker.CREATE_QUEUE:
            queue = r.queue_name()
            implementation = r.i32()
            max_queue_size = r.optional_i32()
            max_payload_size = r.optional_i32()
            priority_range = (r.i64(), r.i64()) if r.bool() else None
            return CommandRequest(
                CreateQueueCommand(queue, implementation, max_queue_size, max_payload_size, priority_range)
            )
        if marker == CommandMarker.DELETE_QUEUE:
            return CommandRequest(DeleteQueueCommand(r.queue_name()))
        if marker == CommandMarker.LIST_QUEUES:
            return CommandRequest(ListQueuesCommand())
        if marker == CommandMarker.ENQUEUE_MANY:
            queue = r.queue_name()
            count = r.length("batch", MAX_BATCH)
            return CommandRequest(EnqueueManyCommand(queue, tuple(r.items(count, self.enqueue_item))))
        if marker == CommandMarker.DEQUEUE_MANY:
            queue = r.queue_name()
            timeout_ms = r.u32()
            return CommandRequest(DequeueManyCommand(queue, timeout_ms, r.i32()))
        if marker == CommandMarker.PEEK:
            queue = r.queue_name()
            return CommandRequest(PeekCommand(queue, r.i32()))
        if marker == CommandMarker.CREATE_QUEUE_WITH_POLICIES:
            return CommandRequest(self.create_queue_with_policies(r))
        raise ProtocolError(f"unknown command marker 0x{marker:02x}")

    def enqueue_item(self, r: Reader) -> EnqueueItem:
        priority = r.i64()
        payload = r.buffer(self.max_payload_bytes)
        key = r.buffer(MAX_KEY_BYTES, "idempotency key")
        return EnqueueItem(priority, payload, key, r.i64(), r.i64())

    def create_queue_with_policies(self, r: Reader) -> CreateQueueWithPoliciesCommand:
        queue = r.queue_name()
        implementation = r.i32()
        max_queue_size = r.optional_i32()
        max_payload_size = r.optional_i32()
        priority_range = (r.i64(), r.i64()) if r.bool() else None
        max_deliveries = r.optional_i32()
        dead_letters = r.queue_name() if r.bool() else None
        return CreateQueueWithPoliciesCommand(queue, implementation, max_queue_size, max_payload_size, priority_range,
                                              max_deliveries, dead_letters, r.i64(), r.u8(), r.i64(), r.i64(), r.i32())

    def command_response(self, r: Reader) -> Packet:
        marker = r.u8()
        if marker == ResponseMarker.COUNT:
            return CommandResponse(CountResponse(r.i32()))
        if marker == ResponseMarker.DEQUEUE:
            if not r.bool():
                return CommandResponse(DequeueResponse(None))
            record_id = r.u64()
            priority = r.i64()
            return CommandResponse(DequeueResponse(Record(record_id, priority, r.buffer(self.max_payload_bytes))))
        if marker == ResponseMarker.ERROR:
            code = _error_code(r.i32())
            return CommandResponse(CommandErrorResponse(code, self.string(r, "error message")))
        if marker == ResponseMarker.LIST_QUEUES:
            count = r.length("queue list", self.max_array_items)
            return CommandResponse(ListQueuesResponse(tuple(r.items(count, self.queue_info))))
        if marker == ResponseMarker.POLICY_VIOLATION:
            return CommandResponse(self.policy_violation(r))
        if marker == ResponseMarker.ADDED:
            count = r.length("added records", MAX_BATCH)
            return CommandResponse(AddedResponse(tuple(r.items(count, lambda item: (item.u64(), item.bool())))))
        if marker == ResponseMarker.RECORDS:
            count = r.length("records", MAX_BATCH)
            return CommandResponse(RecordsResponse(tuple(r.items(count, self.record))))
        raise ProtocolError(f"unknown response marker 0x{marker:02x}")

    def record(self, r: Reader) -> Record:
        record_id = r.u64()
        priority = r.i64()
        failed_deliveries = r.i32()
        origin = None
        if r.bool():
            queue = r.queue_name()
            origin = Origin(queue, r.u64())
        return Record(record_id, priority, r.buffer(self.max_payload_bytes), failed_deliveries, 0, origin)

    def queue_info(self, r: Reader) -> QueueInfo:
        name = r.queue_name()
        count = r.i32()
        entries = r.length("metadata dict", self.max_array_items)
        return QueueInfo(name, count, dict(r.items(entries, self.metadata_entry)))

    def metadata_entry(self, r: Reader) -> tuple[str, str]:
        key = self.string(r, "metadata key")
        return key, self.string(r, "metadata value")

    def policy_violation(self, r: Reader) -> PolicyViolationResponse:
        code = r.i32()
        if code == PolicyCode.MAX_QUEUE_SIZE:
            return PolicyViolationResponse(PolicyCode.MAX_QUEUE_SIZE, (r.i32(),))
        if code == PolicyCode.PRIORITY_RANGE:
            return PolicyViolationResponse(PolicyCode.PRIORITY_RANGE, (r.i64(), r.i64()))
        if code == PolicyCode.MAX_PAYLOAD_SIZE:
            return PolicyViolationResponse(PolicyCode.MAX_PAYLOAD_SIZE, (r.i32(),))
        if code == PolicyCode.GENERIC:
            return PolicyViolationResponse(PolicyCode.GENERIC, (), self.string(r, "policy message"))
        raise ProtocolError(f"unknown policy code {code}")

    def error_response(self, r: Reader) -> Packet:
        code = _error_code(r.i32())
        return ErrorResponse(code, self.string(r, "error message"))

    def not_leader(self, r: Reader) -> Packet:
        leader_id = r.i32()
        return NotLeader(None if leader_id < 0 else leader_id)

    def empty(self, packet: Packet) -> Callable[[Reader], Packet]:
        return lambda r: packet

    def server_sent(self) -> dict[int, Callable[[Reader], Packet]]:
        """Parsers of the packets a server sends, by marker."""
        return {
            Marker.AUTHORIZATION_RESPONSE: self.authorization_response,
            Marker.BOOTSTRAP_RESPONSE: self.bootstrap_response,
            Marker.CLUSTER_METADATA_RESPONSE: self.cluster_metadata_response,
            Marker.COMMAND_RESPONSE: self.command_response,
            Marker.OK: self.empty(Ok()),
            Marker.ERROR_RESPONSE: self.error_response,
            Marker.NOT_LEADER: self.not_leader,
        }

    def client_sent(self) -> dict[int, Callable[[Reader], Packet]]:
        """Parsers of the packets a client sends, by marker."""
        return {
            Marker.AUTHORIZATION_REQUEST: self.authorization_request,
            Marker.BOOTSTRAP_REQUEST: self.bootstrap_request,
            Marker.CLUSTER_METADATA_REQUEST: self.empty(ClusterMetadataRequest()),
            Marker.COMMAND_REQUEST: self.command_request,
            Marker.ACK: self.empty(Ack()),
            Marker.NACK: self.empty(Nack()),
            Marker.NACK_AFTER: lambda r: NackAfter(r.i64()),
        }


def _error_code(code: int) -> int:
    try:
        return ErrorCode(code)
    except ValueError:
        return code


UNLIMITED = 2**63
"""No packet-size limit (field limits still apply)."""


def client_packet_limit(max_payload_bytes: int) -> int:
    """The largest packet a client sends when payloads are at most ``max_payload_bytes``: an Enqueue into a
    255-byte queue name (or a CreateQueue with every field present, should that be larger)."""
    return max(ENQUEUE_MANY_OVERHEAD_BYTES + max_payload_bytes, LARGEST_CREATE_QUEUE_BYTES)


def _too_large(marker: int, size: int, limit: int) -> str:
    return f"packet 0x{marker:02x} needs {size} bytes or more, over the limit of {limit} for its type"


class PacketDecoder:
    """Turns a byte stream into packets: :meth:`feed` bytes as they arrive, then call :meth:`next_packet` until it
    returns None (need more data). A malformed packet raises :class:`ProtocolError`, after which the decoder is
    unusable (the connection is to be closed).

    Limits: a Buffer (record payload) longer than ``max_payload_bytes``, a String longer than ``max_string_bytes``
    or an Array/Dict/list with more than ``max_array_items`` items is a ProtocolError, detected as soon as the
    length is read, before its body has arrived. So is a packet that needs more bytes than its type's limit,
    detected as soon as a length field claims them (or items grow past it): ``max_packet_bytes`` for the packets
    of the decoder's direction (default: a server allows :func:`client_packet_limit` of ``max_payload_bytes``, a
    client no limit), ``max_ignored_packet_bytes`` for the server packets a server reads and ignores.

    Cost: an incomplete packet is parsed again only once the field it stopped in has arrived, and arrays resume
    after their parsed items (:meth:`Reader.items`), so the work is linear in the bytes received.
    """

    __slots__ = ("_broken", "_buffer", "_memo", "_needed", "_start", "_table", "consumed_bytes", "direction")

    def __init__(
        self,
        direction: Direction,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_string_bytes: int = DEFAULT_MAX_STRING_BYTES,
        max_array_items: int = DEFAULT_MAX_ARRAY_ITEMS,
        max_packet_bytes: int | None = None,
        max_ignored_packet_bytes: int = DEFAULT_MAX_IGNORED_PACKET_BYTES,
    ) -> None:
        self.direction = direction
        if max_packet_bytes is None:
            server = direction is Direction.CLIENT_TO_SERVER
            max_packet_bytes = client_packet_limit(max_payload_bytes) if server else UNLIMITED
        parsers = _Parser(max_payload_bytes, max_string_bytes, max_array_items)
        server_sent = parsers.server_sent()
        own = server_sent if direction is Direction.SERVER_TO_CLIENT else parsers.client_sent()
        # marker -> (parser, the most bytes a packet of that type may take)
        self._table: dict[int, tuple[Callable[[Reader], Packet], int]] = {
            marker: (parse, max_packet_bytes) for marker, parse in own.items()
        }
        if direction is Direction.CLIENT_TO_SERVER:
            self._table.update((marker, (parse, max_ignored_packet_bytes)) for marker, parse in server_sent.items())
        self._buffer = bytearray()
        self._start = 0
        self._needed = 0  # the buffer length below which the pending packet certainly cannot be complete
        self._memo: ArrayMemo = {}  # the pending packet's incomplete arrays (Reader.items)
        self._broken: ProtocolError | None = None
        self.consumed_bytes = 0  # bytes of every packet returned so far

    @property
    def pending_bytes(self) -> int:
        """Bytes received but not yet returned as a packet (non-zero at EOF means a truncated packet)."""
        return len(self._buffer) - self._start

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        if self._start:
            del self._buffer[: self._start]
            self._needed = max(0, self._needed - self._start)
            self._start = 0
        self._buffer += data

    def next_packet(self) -> Packet | None:
        """The next complete packet, or None when more bytes are needed."""
        if self._broken is not None:
            raise ProtocolError(f"decoder unusable after an earlier protocol error: {self._broken}")
        buffer = self._buffer
        start = self._start
        end = len(buffer)
        if start >= end or end < self._needed:
            return None
        try:
            marker = buffer[start]
            entry = self._table.get(marker)
            if entry is None:
                raise ProtocolError(f"unknown packet marker 0x{marker:02x}")
            parse, limit = entry
            view = memoryview(buffer)
            try:
                reader = Reader(view, start, end, self._memo)
                reader.pos += 1
                packet = parse(reader)
            except Incomplete as incomplete:
                if incomplete.needed - start > limit:
                    raise ProtocolError(_too_large(marker, incomplete.needed - start, limit)) from None
                self._needed = incomplete.needed
                return None
            finally:
                view.release()
            if reader.pos - start > limit:
                raise ProtocolError(_too_large(marker, reader.pos - start, limit))
        except ProtocolError as error:
            self._broken = error
            raise
        self.consumed_bytes += reader.pos - start
        self._start = reader.pos
        self._needed = 0
        self._memo.clear()
        return packet

    def packets(self) -> list[Packet]:
        """Every complete packet buffered now, in order."""
        out: list[Packet] = []
        while (packet := self.next_packet()) is not None:
            out.append(packet)
        return out
