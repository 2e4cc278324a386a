"""The cluster codec: round trips of every frame, partial input, trailing data, hostile lengths, fuzzing."""

from __future__ import annotations

import struct
import tracemalloc
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskflux.raft.members import Member, Members
from taskflux.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from taskflux.raft.types import Entry
from taskflux.wire.cluster_protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    HEADER_SIZE,
    MAX_CLUSTER_ID_BYTES,
    MAX_CONTEXT_BYTES,
    MAX_HELLO_BODY_BYTES,
    PROTOCOL_VERSION,
    ClusterProtocolError,
    Frame,
    FrameDecoder,
    FrameType,
    Hello,
    check_hello,
    encode_frame,
)

node_ids = st.integers(0, 2**31 - 1)
counters = st.integers(0, 2**63 - 1)
small = st.binary(max_size=64)
entries = st.builds(Entry, counters, counters, small)
contexts = st.binary(max_size=MAX_CONTEXT_BYTES)

hellos = st.builds(
    Hello,
    cluster_size=st.integers(0, 65535),
    node_id=node_ids,
    client_endpoint=st.text(max_size=60),
    http_endpoint=st.text(max_size=60),
    cluster_id=st.one_of(st.just(""), st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1,
                                               max_size=64)),
    established=st.booleans(),
    cluster_endpoint=st.text(max_size=60),
)
memberships = st.one_of(st.none(), st.lists(st.tuples(st.booleans(), st.text(max_size=20)), max_size=5).map(
    lambda members: Members(tuple(Member(i, voter, address) for i, (voter, address) in enumerate(members)),
                            len(members))))
messages = st.one_of(
    st.builds(RequestVote, node_ids, node_ids, counters, counters, counters, st.booleans(), st.booleans()),
    st.builds(RequestVoteResponse, node_ids, node_ids, counters, st.booleans(), st.booleans()),
    st.builds(
        AppendEntries,
        node_ids,
        node_ids,
        counters,
        counters,
        counters,
        st.lists(entries, max_size=8).map(tuple),
        counters,
    ),
    st.builds(
        AppendEntriesResponse, node_ids, node_ids, counters, st.booleans(), counters, counters, counters, counters
    ),
    st.builds(Heartbeat, node_ids, node_ids, counters, counters, contexts),
    st.builds(HeartbeatResponse, node_ids, node_ids, counters, contexts),
    st.builds(
        InstallSnapshot, node_ids, node_ids, counters, counters, counters, counters, small, counters, st.booleans(),
        memberships,
    ),
    st.builds(InstallSnapshotResponse, node_ids, node_ids, counters, counters, counters, st.booleans(), counters),
    st.builds(TimeoutNow, node_ids, node_ids, counters),
)
frames = st.one_of(hellos, messages)

EXAMPLES: list[Frame] = [
    Hello(cluster_size=3, node_id=1, client_endpoint="127.0.0.1:2602", http_endpoint="127.0.0.1:1606"),
    RequestVote(0, 1, 5, 10, 4, pre_vote=True, transfer=False),
    RequestVoteResponse(1, 0, 5, granted=True, pre_vote=True),
    AppendEntries(0, 2, 7, 9, 6, (Entry(10, 7, b"a"), Entry(11, 7, b""), Entry(12, 7, b"\x00" * 300)), 9),
    AppendEntries(0, 2, 7, 9, 6, (), 9),
    AppendEntriesResponse(2, 0, 7, success=False, reject_index=9, hint_term=5, hint_index=8),
    Heartbeat(0, 1, 7, 12, b"\x00\x00\x00\x00\x00\x00\x00\x03"),
    HeartbeatResponse(1, 0, 7, b""),
    InstallSnapshot(0, 1, 7, 100, 6, 4096, b"snapshot bytes", 9000, done=False),
    InstallSnapshotResponse(1, 0, 7, 100, offset=4110, done=True, match_index=100),
    TimeoutNow(0, 2, 8),
    InstallSnapshot(0, 1, 7, 100, 6, 0, b"s", 1, done=True, members=Members.initial(["a:5000", "b:5000"])),
]


def decode_all(data: bytes, chunk: int | None = None, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> list[Frame]:
    decoder = FrameDecoder(max_frame_bytes)
    out: list[Frame] = []
    step = chunk or max(1, len(data))
    for i in range(0, len(data), step):
        decoder.feed(data[i : i + step])
        while (frame := decoder.next_frame()) is not None:
            out.append(frame)
    assert decoder.buffered == 0
    return out


def test_every_frame_type_has_an_example() -> None:
    assert {type(example) for example in EXAMPLES} | {Hello} == {
        Hello,
        RequestVote,
        RequestVoteResponse,
        AppendEntries,
        AppendEntriesResponse,
        Heartbeat,
        HeartbeatResponse,
        InstallSnapshot,
        InstallSnapshotResponse,
        TimeoutNow,
    }
    assert len(FrameType) == 10


@pytest.mark.parametrize("frame", EXAMPLES, ids=lambda f: type(f).__name__)
def test_examples_round_trip_whole_and_byte_by_byte(frame: Frame) -> None:
    data = encode_frame(frame)
    assert decode_all(data) == [frame]
    assert decode_all(data, chunk=1) == [frame]


def test_header_layout_is_documented() -> None:
    data = encode_frame(TimeoutNow(0, 2, 8))
    body = struct.pack(">iiq", 0, 2, 8)
    assert data == struct.pack(">IIB", len(body), zlib.crc32(bytes([10]) + body), 10) + body
    assert HEADER_SIZE == 9
    hello = encode_frame(Hello(cluster_size=3, node_id=1, client_endpoint="h:1", http_endpoint="w:2"))
    assert hello[HEADER_SIZE:] == (b"TFXC" + struct.pack(">HHiBH", PROTOCOL_VERSION, 3, 1, 0, 3)
                                   + b"h:1\x00\x03w:2\x00\x00\x00")
    hello = encode_frame(Hello(cluster_size=3, node_id=1, client_endpoint="", cluster_id="c1", established=True,
                               cluster_endpoint="h:5"))
    assert hello[HEADER_SIZE:] == (b"TFXC" + struct.pack(">HHiBHH", PROTOCOL_VERSION, 3, 1, 1, 0, 0)
                                   + b"\x02c1\x00\x03h:5")
    snapshot = encode_frame(InstallSnapshot(0, 1, 7, 100, 6, 0, b"s", 1, True, Members.initial(["a"])))
    members = Members.initial(["a"]).encode()
    assert snapshot[HEADER_SIZE:] == (struct.pack(">iiqqqqqBI", 0, 1, 7, 100, 6, 0, 1, 1, 1) + b"s"
                                      + struct.pack(">I", len(members)) + members)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames, min_size=1, max_size=6), st.integers(1, 50))
def test_round_trip_any_frames_any_chunking(batch: list[Frame], chunk: int) -> None:
    data = b"".join(encode_frame(frame) for frame in batch)
    assert decode_all(data) == batch
    assert decode_all(data, chunk=chunk) == batch


def test_need_more_until_the_last_byte() -> None:
    data = encode_frame(EXAMPLES[3])
    decoder = FrameDecoder()
    for byte in data[:-1]:
        decoder.feed(bytes([byte]))
        assert decoder.next_frame() is None
    decoder.feed(data[-1:])
    assert decoder.next_frame() == EXAMPLES[3]
    assert decoder.next_frame() is None


def test_trailing_bytes_stay_for_the_next_frame() -> None:
    first, second = encode_frame(EXAMPLES[1]), encode_frame(EXAMPLES[2])
    decoder = FrameDecoder()
    decoder.feed(first + second[:5])
    assert decoder.next_frame() == EXAMPLES[1]
    assert decoder.next_frame() is None
    assert decoder.buffered == 5
    decoder.feed(second[5:])
    assert decoder.next_frame() == EXAMPLES[2]


def reframe(frame_type: int, body: bytes) -> bytes:
    """A frame with a valid header and checksum around any body."""
    return struct.pack(">IIB", len(body), zlib.crc32(bytes([frame_type]) + body), frame_type) + body


def malformed(data: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> str:
    decoder = FrameDecoder(max_frame_bytes)
    decoder.feed(data)
    with pytest.raises(ClusterProtocolError) as caught:
        decoder.next_frame()
    with pytest.raises(ClusterProtocolError):  # unusable afterwards
        decoder.next_frame()
    with pytest.raises(ClusterProtocolError):
        decoder.feed(b"more")
    return str(caught.value)


def body_of(frame: Frame) -> bytes:
    return encode_frame(frame)[HEADER_SIZE:]


@pytest.mark.parametrize("frame", EXAMPLES, ids=lambda f: type(f).__name__)
def test_trailing_bytes_inside_a_body(frame: Frame) -> None:
    data = encode_frame(frame)
    malformed(reframe(data[8], body_of(frame) + b"\x00"))


@pytest.mark.parametrize("frame", EXAMPLES, ids=lambda f: type(f).__name__)
def test_truncated_bodies(frame: Frame) -> None:
    data = encode_frame(frame)
    body = body_of(frame)
    for cut in range(len(body)):
        decoder = FrameDecoder()
        decoder.feed(reframe(data[8], body[:cut]))
        try:
            result = decoder.next_frame()
        except ClusterProtocolError:
            continue
        # A shorter body can only be valid when it drops whole trailing variable-length data.
        assert result is not None and result != frame


def test_bad_checksum() -> None:
    data = bytearray(encode_frame(EXAMPLES[1]))
    data[-1] ^= 1
    assert "checksum" in malformed(bytes(data))


def test_a_flipped_type_byte_fails_the_checksum() -> None:
    data = bytearray(encode_frame(Heartbeat(0, 1, 2, 3)))
    data[8] = FrameType.HEARTBEAT_RESPONSE
    assert "checksum" in malformed(bytes(data))


def test_unknown_type_is_refused_from_the_header() -> None:
    assert "unknown frame type 99" in malformed(struct.pack(">IIB", 10, 0, 99))
    assert "unknown frame type 0" in malformed(struct.pack(">IIB", 0, 0, 0))


def test_hostile_length_is_refused_before_the_body_arrives() -> None:
    message = malformed(struct.pack(">IIB", 0xFFFFFFFF, 0, FrameType.APPEND_ENTRIES))
    assert "exceeds" in message
    assert "exceeds" in malformed(struct.pack(">IIB", 4097, 0, 4), max_frame_bytes=4096)
    # exactly at the limit: waits for the body
    decoder = FrameDecoder(4096)
    decoder.feed(struct.pack(">IIB", 4096, 0, 4))
    assert decoder.next_frame() is None


def test_hostile_entry_count_and_lengths() -> None:
    fixed = struct.pack(">iiqqqqI", 0, 1, 1, 0, 0, 0, 0xFFFFFFFF)
    assert "claims" in malformed(reframe(FrameType.APPEND_ENTRIES, fixed))
    one = struct.pack(">iiqqqqI", 0, 1, 1, 0, 0, 0, 1) + struct.pack(">qqI", 1, 1, 0xFFFFFFFF)
    malformed(reframe(FrameType.APPEND_ENTRIES, one))
    heartbeat = struct.pack(">iiqqH", 0, 1, 1, 0, 0xFFFF) + b"x" * 10
    malformed(reframe(FrameType.HEARTBEAT, heartbeat))
    snapshot = struct.pack(">iiqqqqqBI", 0, 1, 1, 1, 1, 0, 10, 1, 0xFFFFFFFF)
    malformed(reframe(FrameType.INSTALL_SNAPSHOT, snapshot))
    hello = b"TFXC" + struct.pack(">HHiBH", PROTOCOL_VERSION, 3, 0, 0, 0xFFFF)
    malformed(reframe(FrameType.HELLO, hello))


@pytest.mark.parametrize(
    "body",
    [
        struct.pack(">iiq", -1, 0, 1),
        struct.pack(">iiq", 0, -5, 1),
        struct.pack(">iiq", 0, 1, -1),
    ],
)
def test_negative_ids_and_terms(body: bytes) -> None:
    assert "negative" in malformed(reframe(FrameType.TIMEOUT_NOW, body))


def test_negative_entry_index_and_hello_node_id() -> None:
    entry = struct.pack(">iiqqqqI", 0, 1, 1, 0, 0, 0, 1) + struct.pack(">qqI", -1, 1, 0)
    malformed(reframe(FrameType.APPEND_ENTRIES, entry))
    hello = b"TFXC" + struct.pack(">HHiBHHBH", 4, 3, -1, 0, 0, 0, 0, 0)
    assert "negative" in malformed(reframe(FrameType.HELLO, hello))


def test_booleans_must_be_zero_or_one() -> None:
    body = struct.pack(">iiqqqBB", 0, 1, 1, 0, 0, 2, 0)
    assert "not 0 or 1" in malformed(reframe(FrameType.REQUEST_VOTE, body))


def test_hello_magic_and_encoding() -> None:
    start = b"TFXC" + struct.pack(">HHiB", PROTOCOL_VERSION, 3, 0, 0)
    assert "magic" in malformed(reframe(FrameType.HELLO, b"HTTP" + struct.pack(">HHiBHHB", 3, 3, 0, 0, 0, 0, 0)))
    assert "UTF-8" in malformed(reframe(FrameType.HELLO, start + struct.pack(">H", 1) + b"\xff\x00\x00\x00\x00\x00"))
    assert "UTF-8" in malformed(reframe(FrameType.HELLO, start + struct.pack(">HH", 0, 1) + b"\xff\x00\x00\x00"))
    assert "UTF-8" in malformed(reframe(FrameType.HELLO, start + struct.pack(">HHBH", 0, 0, 0, 1) + b"\xff"))
    assert "HTTP endpoint length" in malformed(reframe(FrameType.HELLO, start + struct.pack(">HH", 0, 9) + b"short"))
    assert "cluster id length" in malformed(reframe(FrameType.HELLO, start + struct.pack(">HHB", 0, 0, 5) + b"ab"))
    assert "cluster endpoint length" in malformed(reframe(FrameType.HELLO, start + struct.pack(">HHBH", 0, 0, 0, 3)))
    assert "printable" in malformed(reframe(FrameType.HELLO, start + struct.pack(">HHB", 0, 0, 2) + b"a \x00\x00"))
    flags = b"TFXC" + struct.pack(">HHiBHHBH", PROTOCOL_VERSION, 3, 0, 2, 0, 0, 0, 0)
    assert "flags" in malformed(reframe(FrameType.HELLO, flags))


def test_a_hello_of_another_version_is_refused_naming_both_versions() -> None:
    old = reframe(FrameType.HELLO, b"TFXC" + struct.pack(">HHiH", 3, 3, 1, 3) + b"h:1\x00\x00")
    with pytest.raises(ClusterProtocolError, match="version 3, this node 4"):
        check_hello(decode_all(old)[0], 0)


def test_before_the_handshake_only_a_small_hello_is_read() -> None:
    """Refused from the 9-byte header: another frame type, or a body longer than any Hello."""
    heartbeat = encode_frame(Heartbeat(1, 0, 1, 0))
    decoder = FrameDecoder(handshake=True)
    decoder.feed(heartbeat[:HEADER_SIZE])
    with pytest.raises(ClusterProtocolError, match="expected a Hello"):
        decoder.next_frame()
    decoder = FrameDecoder(handshake=True)
    decoder.feed(struct.pack(">IIB", MAX_HELLO_BODY_BYTES + 1, 0, FrameType.HELLO))
    with pytest.raises(ClusterProtocolError, match=f"{MAX_HELLO_BODY_BYTES}-byte limit"):
        decoder.next_frame()
    biggest = Hello(cluster_size=3, node_id=1, client_endpoint="h" * 255, http_endpoint="w" * 255,
                    cluster_id="c" * MAX_CLUSTER_ID_BYTES, established=True, cluster_endpoint="x" * 255)
    assert len(encode_frame(biggest)) == HEADER_SIZE + MAX_HELLO_BODY_BYTES
    decoder = FrameDecoder(handshake=True)
    decoder.feed(encode_frame(biggest) + heartbeat)
    assert decoder.next_frame() == biggest
    decoder.handshake_done()
    assert decoder.next_frame() == Heartbeat(1, 0, 1, 0)
    assert decoder.max_frame_bytes == DEFAULT_MAX_FRAME_BYTES


def test_a_client_speaking_to_the_cluster_port_is_refused() -> None:
    # Anything that is not a frame fails on its header: here a length over the limit.
    malformed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


def test_encoder_refuses_what_the_format_cannot_carry() -> None:
    with pytest.raises(ValueError):
        encode_frame(TimeoutNow(-1, 0, 0))
    with pytest.raises(ValueError):
        encode_frame(Heartbeat(0, 1, 1, 1, b"x" * (MAX_CONTEXT_BYTES + 1)))
    with pytest.raises(ValueError):
        encode_frame(Hello(cluster_size=3, node_id=0, client_endpoint="h" * 256))
    with pytest.raises(ValueError):
        encode_frame(Hello(cluster_size=3, node_id=0, client_endpoint="", cluster_id="c" * 65))
    with pytest.raises(ValueError):
        encode_frame(Hello(cluster_size=3, node_id=0, client_endpoint="", cluster_id="é"))
    with pytest.raises(TypeError):
        encode_frame("not a frame")  # type: ignore[arg-type]


def test_decoder_limits() -> None:
    with pytest.raises(ValueError):
        FrameDecoder(100)
    with pytest.raises(ValueError):
        FrameDecoder(2**31)


def test_check_hello() -> None:
    good = Hello(cluster_size=3, node_id=2, client_endpoint="h:1", cluster_id="blue")
    assert check_hello(good, 0) is good
    assert check_hello(good, 0, "blue") is good
    unknown = Hello(cluster_size=3, node_id=2, client_endpoint="h:1")
    assert check_hello(unknown, 0, "blue") is unknown  # a peer that knows no cluster id yet
    # Sizes may differ (memberships change at run time), and so may the ids: a node added later has a new one.
    assert check_hello(Hello(cluster_size=5, node_id=7, client_endpoint="h:1"), 0) is not None
    removed = {3}.__contains__
    for bad, match in [
        (Hello(cluster_size=3, node_id=2, client_endpoint="h:1", version=1), "version 1, this node 4"),
        (Hello(cluster_size=3, node_id=3, client_endpoint="h:1"), "node id 3, which was removed"),
        (Hello(cluster_size=3, node_id=0, client_endpoint="h:1"), "this node's own id"),
        (good, "peer node 2 belongs to cluster blue, this node 0 to cluster green"),
        (TimeoutNow(0, 1, 1), "expected Hello"),
        (None, "expected Hello"),
    ]:
        with pytest.raises(ClusterProtocolError, match=match):
            check_hello(bad, 0, "green", removed)  # type: ignore[arg-type]


def test_many_frames_keep_the_buffer_small() -> None:
    decoder = FrameDecoder()
    data = encode_frame(Heartbeat(0, 1, 2, 3))
    for _ in range(200_000 // len(data) + 10):
        decoder.feed(data + data[:3])
        assert decoder.next_frame() is not None
        decoder.feed(data[3:])
        assert decoder.next_frame() is not None
    assert decoder.next_frame() is None
    assert len(decoder._buffer) < 2 * 1024 * 1024


# --- fuzzing -------------------------------------------------------------------------------------------


def feed_and_drain(data: bytes, chunk: int) -> None:
    """Feed garbage: only frames, None or ClusterProtocolError may come out."""
    decoder = FrameDecoder(1 << 16)
    try:
        for i in range(0, len(data), chunk):
            decoder.feed(data[i : i + chunk])
            while decoder.next_frame() is not None:
                pass
    except ClusterProtocolError:
        pass


@settings(max_examples=500)
@given(st.binary(max_size=300), st.integers(1, 32))
def test_random_bytes(data: bytes, chunk: int) -> None:
    feed_and_drain(data, chunk)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(frames, st.data())
def test_flipped_and_truncated_frames(frame: Frame, data: st.DataObject) -> None:
    encoded = bytearray(encode_frame(frame))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(encoded) - 1))
        encoded[position] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    feed_and_drain(bytes(encoded[:cut]), data.draw(st.integers(1, 16)))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(list(FrameType)), st.binary(max_size=200))
def test_valid_checksum_around_random_bodies(frame_type: FrameType, body: bytes) -> None:
    """Past the checksum, the body decoders see arbitrary bytes: still only frames or ClusterProtocolError."""
    feed_and_drain(reframe(frame_type, body), 7)


def test_no_large_allocation_on_hostile_headers() -> None:
    tracemalloc.start()
    try:
        for frame_type in FrameType:
            decoder = FrameDecoder()
            decoder.feed(struct.pack(">IIB", DEFAULT_MAX_FRAME_BYTES, 0, frame_type) + b"\x00" * 100)
            assert decoder.next_frame() is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def test_the_documented_examples() -> None:
    """The byte dumps of docs/cluster-protocol.md §4."""
    hello = Hello(cluster_size=3, node_id=1, client_endpoint="127.0.0.1:2612", http_endpoint="127.0.0.1:1616",
                  cluster_id="7f3a2c", established=True, cluster_endpoint="127.0.0.1:5001")
    assert encode_frame(hello) == bytes.fromhex(
        "00000044 0ff6d0f2 01 54465843 0004 0003 00000001 01 000e 3132372e302e302e313a32363132"
        "000e 3132372e302e302e313a31363136 06 376633613263 000e 3132372e302e302e313a35303031"
    )
    assert encode_frame(TimeoutNow(0, 2, 8)) == bytes.fromhex("00000010 dbee8e50 0a 00000000 00000002 0000000000000008")
    append = AppendEntries(0, 1, 2, 5, 2, (Entry(6, 2, b"ab"),), 5)
    assert encode_frame(append) == bytes.fromhex(
        "00000042 45cf2bf9 04 00000000 00000001 0000000000000002 0000000000000005 0000000000000002"
        "0000000000000005 00000001 0000000000000006 0000000000000002 00000002 6162"
    )


@pytest.mark.parametrize(
    ("frame", "size"),
    [
        (EXAMPLES[1], 34),
        (EXAMPLES[2], 18),
        (AppendEntries(0, 1, 1, 0, 0, (), 0), 44),
        (EXAMPLES[5], 49),
        (Heartbeat(0, 1, 1, 1), 26),
        (HeartbeatResponse(0, 1, 1), 18),
        (InstallSnapshot(0, 1, 1, 1, 1, 0, b"", 0, True), 57),
        (EXAMPLES[9], 41),
        (EXAMPLES[10], 16),
    ],
)
def test_documented_body_sizes(frame: Frame, size: int) -> None:
    assert len(encode_frame(frame)) - HEADER_SIZE == size
