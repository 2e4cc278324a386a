"""The inter-node (cluster) protocol: framing, the Hello handshake and one frame per raft message.

Sans-IO: ``encode_frame`` turns a ``Hello`` or a raft message into bytes; ``FrameDecoder`` is fed bytes as
they arrive and hands back whole frames. Every frame is a 9-byte header followed by a body::

    u32 body length | u32 CRC-32 (zlib) of the type byte then the body | u8 frame type | body

Integers are big-endian; node ids are i32 and terms, indexes, offsets and sizes i64, and a negative one is
malformed; booleans are one byte, 0 or 1. The layouts are in ``docs/cluster-protocol.md``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from taskflux.raft.members import Members, MembershipError
from taskflux.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from taskflux.raft.types import Entry

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "HEADER_SIZE",
    "MAX_CLUSTER_ID_BYTES",
    "MAX_CONTEXT_BYTES",
    "MAX_ENDPOINT_BYTES",
    "MAX_HELLO_BODY_BYTES",
    "MIN_MAX_FRAME_BYTES",
    "PROTOCOL_VERSION",
    "ClusterProtocolError",
    "Frame",
    "FrameDecoder",
    "FrameType",
    "Hello",
    "check_hello",
    "encode_frame",
    "is_valid_cluster_id",
]

PROTOCOL_VERSION = 4
HELLO_MAGIC = b"TFXC"
# Must exceed replication_max_send_size + the largest entry (max payload + command overhead); see
# Config.cluster_max_frame_bytes, which is never below this.
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024
MIN_MAX_FRAME_BYTES = 4096
MAX_CONTEXT_BYTES = 1024  # a ReadIndex context (the raft core uses 8 bytes)
MAX_ENDPOINT_BYTES = 255  # "host:port" in a Hello
MAX_CLUSTER_ID_BYTES = 64  # printable ASCII
# 0x7FFF_FFFF: a body length that does not fit an i32 is refused whatever max_frame_bytes says.
MAX_BODY_BYTES = 2**31 - 1


class ClusterProtocolError(Exception):
    """Malformed or unexpected input on a cluster connection; the connection must be closed."""


class FrameType(IntEnum):
    """The frame type byte."""

    HELLO = 1
    REQUEST_VOTE = 2
    REQUEST_VOTE_RESPONSE = 3
    APPEND_ENTRIES = 4
    APPEND_ENTRIES_RESPONSE = 5
    HEARTBEAT = 6
    HEARTBEAT_RESPONSE = 7
    INSTALL_SNAPSHOT = 8
    INSTALL_SNAPSHOT_RESPONSE = 9
    TIMEOUT_NOW = 10


@dataclass(frozen=True, slots=True)
class Hello:
    """The handshake: who is speaking, in which cluster, and where clients reach it (``host:port`` of its
    binary protocol, and of its HTTP interface or "" when it serves none).

    ``cluster_id``: the sender's cluster, "" while it knows none. ``established``: the sender holds the
    cluster's committed history (it has caught up from a leader since its data directory was created), so
    the cluster has one: a node that started with an empty data directory must not vote before it has
    caught up too. ``cluster_size``: the voters in the sender's membership in force (shown in logs, not
    checked: memberships change at run time, and two nodes may briefly differ). ``cluster_endpoint``: where
    the sender's cluster port is reached (``host:port``), so that a node that does not know the sender yet (a
    new node the leader just added) can dial it back.
    """

    cluster_size: int
    node_id: int
    client_endpoint: str
    version: int = PROTOCOL_VERSION
    http_endpoint: str = ""
    cluster_id: str = ""
    established: bool = False
    cluster_endpoint: str = ""


Frame = Hello | Message  # what a FrameDecoder yields and encode_frame takes

HEADER = struct.Struct(">IIB")
HEADER_SIZE = HEADER.size
_HELLO_START = struct.Struct(">4sHHi")  # magic, version, cluster size, node id: the same in every version
_HELLO = struct.Struct(">4sHHiBH")  # ... then flags (bit 0: established), client endpoint length
_U8 = struct.Struct(">B")  # the cluster id's length
_U16 = struct.Struct(">H")  # the HTTP endpoint's length
_U32 = struct.Struct(">I")  # InstallSnapshot's membership length
_ADDR = struct.Struct(">iiq")  # src, dst, term: the start of every raft message
_REQUEST_VOTE = struct.Struct(">iiqqqBB")
_REQUEST_VOTE_RESPONSE = struct.Struct(">iiqBB")
_APPEND_ENTRIES = struct.Struct(">iiqqqqI")  # ... prev_log_index, prev_log_term, leader_commit, entry count
_ENTRY = struct.Struct(">qqI")  # index, term, data length, then the data
_APPEND_ENTRIES_RESPONSE = struct.Struct(">iiqBqqqq")
_HEARTBEAT = struct.Struct(">iiqqH")  # ... commit, context length, then the context
_HEARTBEAT_RESPONSE = struct.Struct(">iiqH")
_INSTALL_SNAPSHOT = struct.Struct(">iiqqqqqBI")  # ... index, term, offset, total size, done, data length
_INSTALL_SNAPSHOT_RESPONSE = struct.Struct(">iiqqqBq")
_TIMEOUT_NOW = _ADDR
# The largest Hello: what a connection may send before its handshake is done.
MAX_HELLO_BODY_BYTES = (
    _HELLO.size + MAX_ENDPOINT_BYTES + _U16.size + MAX_ENDPOINT_BYTES + _U8.size + MAX_CLUSTER_ID_BYTES
    + _U16.size + MAX_ENDPOINT_BYTES
)


def _unsigned(layout: struct.Struct) -> struct.Struct:
    """The encoder's twin of a layout: ids and counters unsigned, so that packing a negative value fails."""
    return struct.Struct(layout.format.replace("i", "I").replace("q", "Q"))


_HELLO_OUT = _unsigned(_HELLO)
_REQUEST_VOTE_OUT = _unsigned(_REQUEST_VOTE)
_REQUEST_VOTE_RESPONSE_OUT = _unsigned(_REQUEST_VOTE_RESPONSE)
_APPEND_ENTRIES_OUT = _unsigned(_APPEND_ENTRIES)
_ENTRY_OUT = _unsigned(_ENTRY)
_APPEND_ENTRIES_RESPONSE_OUT = _unsigned(_APPEND_ENTRIES_RESPONSE)
_HEARTBEAT_OUT = _unsigned(_HEARTBEAT)
_HEARTBEAT_RESPONSE_OUT = _unsigned(_HEARTBEAT_RESPONSE)
_INSTALL_SNAPSHOT_OUT = _unsigned(_INSTALL_SNAPSHOT)
_INSTALL_SNAPSHOT_RESPONSE_OUT = _unsigned(_INSTALL_SNAPSHOT_RESPONSE)
_TIMEOUT_NOW_OUT = _unsigned(_TIMEOUT_NOW)


# --- encoding ------------------------------------------------------------------------------------------


def _frame(frame_type: int, body: bytes) -> bytes:
    return HEADER.pack(len(body), zlib.crc32(body, _TYPE_CRC[frame_type]), frame_type) + body


def _encode_hello(hello: Hello) -> bytes:
    endpoint = hello.client_endpoint.encode("utf-8")
    http = hello.http_endpoint.encode("utf-8")
    cluster = hello.cluster_endpoint.encode("utf-8")
    for name, value in (("client", endpoint), ("HTTP", http), ("cluster", cluster)):
        if len(value) > MAX_ENDPOINT_BYTES:
            raise ValueError(f"{name} endpoint longer than {MAX_ENDPOINT_BYTES} bytes: {value!r}")
    if not is_valid_cluster_id(hello.cluster_id) and hello.cluster_id:
        raise ValueError(f"invalid cluster id {hello.cluster_id!r}")
    cluster_id = hello.cluster_id.encode("ascii")
    head = _HELLO_OUT.pack(HELLO_MAGIC, hello.version, hello.cluster_size, hello.node_id, hello.established,
                           len(endpoint))
    body = (head + endpoint + _U16.pack(len(http)) + http + _U8.pack(len(cluster_id)) + cluster_id
            + _U16.pack(len(cluster)) + cluster)
    return _frame(FrameType.HELLO, body)


def is_valid_cluster_id(cluster_id: str) -> bool:
    """1 to 64 printable ASCII characters, no space."""
    return 0 < len(cluster_id) <= MAX_CLUSTER_ID_BYTES and all("!" <= c <= "~" for c in cluster_id)


def _encode_request_vote(m: RequestVote) -> bytes:
    body = _REQUEST_VOTE_OUT.pack(m.src, m.dst, m.term, m.last_log_index, m.last_log_term, m.pre_vote, m.transfer)
    return _frame(FrameType.REQUEST_VOTE, body)


def _encode_request_vote_response(m: RequestVoteResponse) -> bytes:
    body = _REQUEST_VOTE_RESPONSE_OUT.pack(m.src, m.dst, m.term, m.granted, m.pre_vote)
    return _frame(FrameType.REQUEST_VOTE_RESPONSE, body)


def _encode_append_entries(m: AppendEntries) -> bytes:
    entries = m.entries
    parts = [
        _APPEND_ENTRIES_OUT.pack(m.src, m.dst, m.term, m.prev_log_index, m.prev_log_term, m.leader_commit, len(entries))
    ]
    pack = _ENTRY_OUT.pack
    append = parts.append
    for entry in entries:
        data = entry.data
        append(pack(entry.index, entry.term, len(data)))
        append(data)
    return _frame(FrameType.APPEND_ENTRIES, b"".join(parts))


def _encode_append_entries_response(m: AppendEntriesResponse) -> bytes:
    body = _APPEND_ENTRIES_RESPONSE_OUT.pack(
        m.src, m.dst, m.term, m.success, m.match_index, m.reject_index, m.hint_term, m.hint_index
    )
    return _frame(FrameType.APPEND_ENTRIES_RESPONSE, body)


def _encode_heartbeat(m: Heartbeat) -> bytes:
    _check_context(m.context)
    body = _HEARTBEAT_OUT.pack(m.src, m.dst, m.term, m.commit, len(m.context)) + m.context
    return _frame(FrameType.HEARTBEAT, body)


def _encode_heartbeat_response(m: HeartbeatResponse) -> bytes:
    _check_context(m.context)
    body = _HEARTBEAT_RESPONSE_OUT.pack(m.src, m.dst, m.term, len(m.context)) + m.context
    return _frame(FrameType.HEARTBEAT_RESPONSE, body)


def _encode_install_snapshot(m: InstallSnapshot) -> bytes:
    head = _INSTALL_SNAPSHOT_OUT.pack(
        m.src, m.dst, m.term, m.snapshot_index, m.snapshot_term, m.offset, m.total_size, m.done, len(m.data)
    )
    members = m.members.encode() if m.members is not None else b""
    return _frame(FrameType.INSTALL_SNAPSHOT, head + m.data + _U32.pack(len(members)) + members)


def _encode_install_snapshot_response(m: InstallSnapshotResponse) -> bytes:
    body = _INSTALL_SNAPSHOT_RESPONSE_OUT.pack(m.src, m.dst, m.term, m.snapshot_index, m.offset, m.done, m.match_index)
    return _frame(FrameType.INSTALL_SNAPSHOT_RESPONSE, body)


def _encode_timeout_now(m: TimeoutNow) -> bytes:
    return _frame(FrameType.TIMEOUT_NOW, _TIMEOUT_NOW_OUT.pack(m.src, m.dst, m.term))


def _check_context(context: bytes) -> None:
    if len(context) > MAX_CONTEXT_BYTES:
        raise ValueError(f"ReadIndex context longer than {MAX_CONTEXT_BYTES} bytes")


_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    Hello: _encode_hello,
    RequestVote: _encode_request_vote,
    RequestVoteResponse: _encode_request_vote_response,
    AppendEntries: _encode_append_entries,
    AppendEntriesResponse: _encode_append_entries_response,
    Heartbeat: _encode_heartbeat,
    HeartbeatResponse: _encode_heartbeat_response,
    InstallSnapshot: _encode_install_snapshot,
    InstallSnapshotResponse: _encode_install_snapshot_response,
    TimeoutNow: _encode_timeout_now,
}


def encode_frame(frame: Frame) -> bytes:
    """One whole frame (header and body) for a ``Hello`` or a raft message.

    Raises ``ValueError`` for values the format cannot carry: a negative or out-of-range number, a Hello
    endpoint over 255 bytes, a ReadIndex context over 1 KiB; ``TypeError`` for anything else than a frame.
    """
    try:
        encoder = _ENCODERS[type(frame)]
    except KeyError:
        raise TypeError(f"not a cluster frame: {type(frame).__name__}") from None
    try:
        return encoder(frame)
    except struct.error as error:
        raise ValueError(f"cannot encode {frame!r:.200}: {error}") from None


# --- decoding ------------------------------------------------------------------------------------------


def _bool(value: int, name: str) -> bool:
    if value > 1:
        raise ClusterProtocolError(f"{name} is {value}, not 0 or 1")
    return value == 1


def _non_negative(*values: int) -> None:
    if min(values) < 0:
        raise ClusterProtocolError(f"negative node id, term, index or size in {values}")


def _fixed(layout: struct.Struct, body: bytes, name: str) -> tuple[int, ...]:
    if len(body) != layout.size:
        raise ClusterProtocolError(f"{name} body is {len(body)} bytes, expected {layout.size}")
    return layout.unpack(body)


def _decode_hello(body: bytes) -> Hello:
    if len(body) < _HELLO_START.size:
        raise ClusterProtocolError(f"Hello body is {len(body)} bytes, expected at least {_HELLO.size}")
    magic, version, cluster_size, node_id = _HELLO_START.unpack_from(body)
    if magic != HELLO_MAGIC:
        raise ClusterProtocolError(f"not a TaskFlux cluster handshake (magic {magic!r})")
    _non_negative(node_id)
    if version != PROTOCOL_VERSION:  # the rest may be laid out otherwise: check_hello names the versions
        return Hello(cluster_size=cluster_size, node_id=node_id, client_endpoint="", version=version)
    if len(body) < _HELLO.size:
        raise ClusterProtocolError(f"Hello body is {len(body)} bytes, expected at least {_HELLO.size}")
    flags, length = _HELLO.unpack_from(body)[4:]
    if flags > 1:
        raise ClusterProtocolError(f"Hello flags {flags:#x}: unknown bits set")
    http_at = _HELLO.size + length
    if length > MAX_ENDPOINT_BYTES or len(body) < http_at + _U16.size:
        raise ClusterProtocolError(f"Hello endpoint length {length} does not fit a {len(body)}-byte body")
    (http_length,) = _U16.unpack_from(body, http_at)
    id_at = http_at + _U16.size + http_length
    if http_length > MAX_ENDPOINT_BYTES or len(body) < id_at + _U8.size:
        raise ClusterProtocolError(f"Hello HTTP endpoint length {http_length} does not fit a {len(body)}-byte body")
    (id_length,) = _U8.unpack_from(body, id_at)
    cluster_at = id_at + _U8.size + id_length
    if id_length > MAX_CLUSTER_ID_BYTES or len(body) < cluster_at + _U16.size:
        raise ClusterProtocolError(f"Hello cluster id length {id_length} does not fit a {len(body)}-byte body")
    (cluster_length,) = _U16.unpack_from(body, cluster_at)
    if cluster_length > MAX_ENDPOINT_BYTES or len(body) != cluster_at + _U16.size + cluster_length:
        raise ClusterProtocolError(f"Hello cluster endpoint length {cluster_length} does not match a "
                                   f"{len(body)}-byte body")  # fmt: skip
    cluster_id = body[id_at + _U8.size : cluster_at].decode("latin-1")
    if cluster_id and not is_valid_cluster_id(cluster_id):
        raise ClusterProtocolError(f"Hello cluster id {cluster_id!r} is not printable ASCII")
    try:
        endpoint = body[_HELLO.size : http_at].decode("utf-8")
        http = body[http_at + _U16.size : id_at].decode("utf-8")
        cluster = body[cluster_at + _U16.size :].decode("utf-8")
    except UnicodeDecodeError:
        raise ClusterProtocolError("Hello endpoint is not UTF-8") from None
    return Hello(cluster_size=cluster_size, node_id=node_id, client_endpoint=endpoint, version=version,
                 http_endpoint=http, cluster_id=cluster_id, established=flags == 1, cluster_endpoint=cluster)


def _decode_request_vote(body: bytes) -> RequestVote:
    src, dst, term, index, log_term, pre_vote, transfer = _fixed(_REQUEST_VOTE, body, "RequestVote")
    _non_negative(src, dst, term, index, log_term)
    return RequestVote(src, dst, term, index, log_term, _bool(pre_vote, "pre_vote"), _bool(transfer, "transfer"))


def _decode_request_vote_response(body: bytes) -> RequestVoteResponse:
    src, dst, term, granted, pre_vote = _fixed(_REQUEST_VOTE_RESPONSE, body, "RequestVoteResponse")
    _non_negative(src, dst, term)
    return RequestVoteResponse(src, dst, term, _bool(granted, "granted"), _bool(pre_vote, "pre_vote"))


def _decode_append_entries(body: bytes) -> AppendEntries:
    size = len(body)
    if size < _APPEND_ENTRIES.size:
        raise ClusterProtocolError(f"AppendEntries body is {size} bytes, shorter than its fixed part")
    src, dst, term, prev_index, prev_term, commit, count = _APPEND_ENTRIES.unpack_from(body)
    _non_negative(src, dst, term, prev_index, prev_term, commit)
    offset = _APPEND_ENTRIES.size
    # Checked before the loop, so a hostile count costs nothing.
    if count * _ENTRY.size > size - offset:
        raise ClusterProtocolError(f"AppendEntries claims {count} entries in {size - offset} bytes")
    entries = []
    unpack = _ENTRY.unpack_from
    head = _ENTRY.size
    for _ in range(count):
        if offset + head > size:
            raise ClusterProtocolError("AppendEntries ends inside an entry header")
        index, entry_term, length = unpack(body, offset)
        offset += head
        end = offset + length
        if end > size or index < 0 or entry_term < 0:
            raise ClusterProtocolError(f"AppendEntries entry {index} (term {entry_term}, {length} bytes) is malformed")
        entries.append(Entry(index, entry_term, body[offset:end]))
        offset = end
    if offset != size:
        raise ClusterProtocolError(f"AppendEntries has {size - offset} bytes after its last entry")
    return AppendEntries(src, dst, term, prev_index, prev_term, tuple(entries), commit)


def _decode_append_entries_response(body: bytes) -> AppendEntriesResponse:
    fields = _fixed(_APPEND_ENTRIES_RESPONSE, body, "AppendEntriesResponse")
    src, dst, term, success, match, reject, hint_term, hint_index = fields
    _non_negative(src, dst, term, match, reject, hint_term, hint_index)
    return AppendEntriesResponse(src, dst, term, _bool(success, "success"), match, reject, hint_term, hint_index)


def _context(body: bytes, start: int, length: int, name: str) -> bytes:
    if length > MAX_CONTEXT_BYTES or len(body) != start + length:
        raise ClusterProtocolError(f"{name} context length {length} does not match a {len(body)}-byte body")
    return body[start:]


def _decode_heartbeat(body: bytes) -> Heartbeat:
    if len(body) < _HEARTBEAT.size:
        raise ClusterProtocolError(f"Heartbeat body is {len(body)} bytes, shorter than its fixed part")
    src, dst, term, commit, length = _HEARTBEAT.unpack_from(body)
    _non_negative(src, dst, term, commit)
    return Heartbeat(src, dst, term, commit, _context(body, _HEARTBEAT.size, length, "Heartbeat"))


def _decode_heartbeat_response(body: bytes) -> HeartbeatResponse:
    if len(body) < _HEARTBEAT_RESPONSE.size:
        raise ClusterProtocolError(f"HeartbeatResponse body is {len(body)} bytes, shorter than its fixed part")
    src, dst, term, length = _HEARTBEAT_RESPONSE.unpack_from(body)
    _non_negative(src, dst, term)
    return HeartbeatResponse(src, dst, term, _context(body, _HEARTBEAT_RESPONSE.size, length, "HeartbeatResponse"))


def _decode_install_snapshot(body: bytes) -> InstallSnapshot:
    if len(body) < _INSTALL_SNAPSHOT.size:
        raise ClusterProtocolError(f"InstallSnapshot body is {len(body)} bytes, shorter than its fixed part")
    src, dst, term, index, snap_term, offset, total, done, length = _INSTALL_SNAPSHOT.unpack_from(body)
    _non_negative(src, dst, term, index, snap_term, offset, total)
    members_at = _INSTALL_SNAPSHOT.size + length
    if len(body) < members_at + _U32.size:
        raise ClusterProtocolError(f"InstallSnapshot data length {length} does not fit a {len(body)}-byte body")
    (members_length,) = _U32.unpack_from(body, members_at)
    if len(body) != members_at + _U32.size + members_length:
        raise ClusterProtocolError(f"InstallSnapshot membership length {members_length} does not match a "
                                   f"{len(body)}-byte body")  # fmt: skip
    members = None
    if members_length:
        try:
            members = Members.decode(body[members_at + _U32.size :])
        except MembershipError as error:
            raise ClusterProtocolError(f"InstallSnapshot membership: {error}") from None
    data = body[_INSTALL_SNAPSHOT.size : members_at]
    return InstallSnapshot(src, dst, term, index, snap_term, offset, data, total, _bool(done, "done"), members)


def _decode_install_snapshot_response(body: bytes) -> InstallSnapshotResponse:
    fields = _fixed(_INSTALL_SNAPSHOT_RESPONSE, body, "InstallSnapshotResponse")
    src, dst, term, index, offset, done, match = fields
    _non_negative(src, dst, term, index, offset, match)
    return InstallSnapshotResponse(src, dst, term, index, offset, _bool(done, "done"), match)


def _decode_timeout_now(body: bytes) -> TimeoutNow:
    src, dst, term = _fixed(_TIMEOUT_NOW, body, "TimeoutNow")
    _non_negative(src, dst, term)
    return TimeoutNow(src, dst, term)


_DECODERS: dict[int, Callable[[bytes], Frame]] = {
    FrameType.HELLO: _decode_hello,
    FrameType.REQUEST_VOTE: _decode_request_vote,
    FrameType.REQUEST_VOTE_RESPONSE: _decode_request_vote_response,
    FrameType.APPEND_ENTRIES: _decode_append_entries,
    FrameType.APPEND_ENTRIES_RESPONSE: _decode_append_entries_response,
    FrameType.HEARTBEAT: _decode_heartbeat,
    FrameType.HEARTBEAT_RESPONSE: _decode_heartbeat_response,
    FrameType.INSTALL_SNAPSHOT: _decode_install_snapshot,
    FrameType.INSTALL_SNAPSHOT_RESPONSE: _decode_install_snapshot_response,
    FrameType.TIMEOUT_NOW: _decode_timeout_now,
}
# The CRC covers the type byte too, so a flipped type cannot turn one valid frame into another.
_TYPE_CRC: dict[int, int] = {frame_type: zlib.crc32(bytes([frame_type])) for frame_type in FrameType}


class FrameDecoder:
    """Incremental decoder of one cluster connection's byte stream.

    ``feed()`` bytes as they arrive, then call ``next_frame()`` until it returns ``None`` (need more bytes).
    A body length is checked against ``max_frame_bytes`` from the header alone, before the body is awaited
    or copied. Malformed input raises ``ClusterProtocolError``; the decoder then stays broken (every later
    call raises) and the connection must be closed.

    With ``handshake=True`` the decoder first accepts only a Hello of at most ``MAX_HELLO_BODY_BYTES``
    (both checked from the header), until ``handshake_done()``: a stranger cannot make a node buffer
    more than a few hundred bytes.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, *, handshake: bool = False) -> None:
        if not MIN_MAX_FRAME_BYTES <= max_frame_bytes <= MAX_BODY_BYTES:
            raise ValueError(f"max_frame_bytes must be in {MIN_MAX_FRAME_BYTES}..{MAX_BODY_BYTES}")
        self._after_handshake = max_frame_bytes
        self.max_frame_bytes = MAX_HELLO_BODY_BYTES if handshake else max_frame_bytes
        self._hello_only = handshake
        self._buffer = bytearray()
        self._start = 0  # where the next frame begins in _buffer
        self._error: ClusterProtocolError | None = None

    def handshake_done(self) -> None:
        """The Hello is through: accept every frame type up to the full ``max_frame_bytes`` from now on."""
        self._hello_only = False
        self.max_frame_bytes = self._after_handshake

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as frames."""
        return len(self._buffer) - self._start

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add received bytes."""
        if self._error is not None:
            raise ClusterProtocolError(f"decoder unusable after an earlier error: {self._error}")
        if self._start and self._start == len(self._buffer):
            self._buffer.clear()
            self._start = 0
        self._buffer += data

    def next_frame(self) -> Frame | None:
        """The next whole frame, or ``None`` when more bytes are needed."""
        if self._error is not None:
            raise ClusterProtocolError(f"decoder unusable after an earlier error: {self._error}")
        try:
            return self._next()
        except ClusterProtocolError as error:
            self._fail(error)
            raise
        except (struct.error, ValueError) as error:  # a layout check missed above; still the peer's fault
            wrapped = ClusterProtocolError(f"malformed frame: {error}")
            self._fail(wrapped)
            raise wrapped from error

    def _fail(self, error: ClusterProtocolError) -> None:
        self._error = error
        self._buffer = bytearray()
        self._start = 0

    def _next(self) -> Frame | None:
        buffer = self._buffer
        start = self._start
        available = len(buffer) - start
        if available < HEADER_SIZE:
            return None
        length, crc, frame_type = HEADER.unpack_from(buffer, start)
        if self._hello_only and frame_type != FrameType.HELLO:
            raise ClusterProtocolError(f"expected a Hello first, got a frame of type {frame_type}")
        if length > self.max_frame_bytes:
            raise ClusterProtocolError(f"frame body of {length} bytes exceeds the {self.max_frame_bytes}-byte limit")
        decode = _DECODERS.get(frame_type)
        if decode is None:
            raise ClusterProtocolError(f"unknown frame type {frame_type}")
        end = start + HEADER_SIZE + length
        if len(buffer) < end:
            return None
        with memoryview(buffer) as view:
            body = bytes(view[start + HEADER_SIZE : end])
        if zlib.crc32(body, _TYPE_CRC[frame_type]) != crc:
            raise ClusterProtocolError(f"checksum mismatch in a frame of type {frame_type} ({length} bytes)")
        frame = decode(body)
        if end == len(buffer):
            buffer.clear()
            self._start = 0
        elif end > 1 << 20:
            del buffer[:end]  # drop consumed bytes once they add up, not after every frame
            self._start = 0
        else:
            self._start = end
        return frame


def check_hello(
    hello: Frame | None, own_node_id: int, cluster_id: str = "", removed: Callable[[int], bool] = lambda node: False
) -> Hello:
    """The check of a peer's Hello: our version, another node id, one the cluster has not removed (``removed``:
    by the membership in force here), and the same cluster id when both sides know one (``cluster_id``: ours,
    "" when unknown). Returns it; raises ``ClusterProtocolError`` naming both sides of what differs."""
    if not isinstance(hello, Hello):
        raise ClusterProtocolError(f"expected Hello first, got {type(hello).__name__}")
    if hello.version != PROTOCOL_VERSION:
        raise ClusterProtocolError(f"peer speaks protocol version {hello.version}, this node {PROTOCOL_VERSION}")
    if hello.node_id == own_node_id:
        raise ClusterProtocolError(f"peer claims node id {hello.node_id}, which is this node's own id")
    if removed(hello.node_id):
        raise ClusterProtocolError(f"peer claims node id {hello.node_id}, which was removed from the cluster: a "
                                   "removed node's id is never used again (add the node anew: it gets a new id)")
    if hello.cluster_id and cluster_id and hello.cluster_id != cluster_id:
        raise ClusterProtocolError(f"peer node {hello.node_id} belongs to cluster {hello.cluster_id}, "
                                   f"this node {own_node_id} to cluster {cluster_id}")
    return hello
