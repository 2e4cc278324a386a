"""Property tests of the client-protocol codec: round trips of every packet, fed in arbitrary chunks; random and
mutated input never raises anything but ProtocolError and never allocates from a declared length."""

from __future__ import annotations

import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from taskflux.domain.errors import PolicyCode
from taskflux.domain.records import Origin, Record
from taskflux.wire.client_protocol import (
    MAX_KEY_BYTES,
    SERVER_PACKETS,
    UNLIMITED,
    Ack,
    AddedResponse,
    AuthorizationRequest,
    AuthorizationResponse,
    BootstrapRequest,
    BootstrapResponse,
    ClusterMetadataRequest,
    ClusterMetadataResponse,
    CommandErrorResponse,
    CommandRequest,
    CommandResponse,
    CountCommand,
    CountResponse,
    CreateQueueCommand,
    CreateQueueWithPoliciesCommand,
    DeleteQueueCommand,
    DequeueCommand,
    DequeueManyCommand,
    DequeueResponse,
    Direction,
    EnqueueCommand,
    EnqueueItem,
    EnqueueManyCommand,
    ErrorResponse,
    ListQueuesCommand,
    ListQueuesResponse,
    Nack,
    NackAfter,
    NotLeader,
    Ok,
    Packet,
    PacketDecoder,
    PeekCommand,
    PolicyViolationResponse,
    QueueInfo,
    RecordsResponse,
    encode,
)
from taskflux.wire.primitives import I32, I64, ProtocolError

int32 = st.integers(-(2**31), 2**31 - 1)
uint32 = st.integers(0, 2**32 - 1)
int64 = st.integers(-(2**63), 2**63 - 1)
uint64 = st.integers(0, 2**64 - 1)
node_id = st.integers(0, 2**31 - 1)
optional_size = st.none() | int32.filter(lambda v: v != -1)
names = st.text(st.characters(max_codepoint=255), max_size=255)
texts = st.text(max_size=40)
payloads = st.binary(max_size=300)

commands = st.one_of(
    st.builds(EnqueueCommand, names, int64, payloads),
    st.builds(DequeueCommand, names, uint32),
    st.builds(CountCommand, names),
    st.builds(CreateQueueCommand, names, int32, optional_size, optional_size, st.none() | st.tuples(int64, int64)),
    st.builds(DeleteQueueCommand, names),
    st.just(ListQueuesCommand()),
    st.builds(EnqueueManyCommand, names, st.lists(st.builds(
        EnqueueItem, int64, payloads, st.binary(max_size=MAX_KEY_BYTES), int64, int64), max_size=4).map(tuple)),
    st.builds(DequeueManyCommand, names, uint32, int32),
    st.builds(PeekCommand, names, int32),
    st.builds(CreateQueueWithPoliciesCommand, names, int32, optional_size, optional_size, st.none() | st.tuples(
        int64, int64), optional_size, st.none() | names, int64, st.integers(0, 255), int64, int64, int32),
)

policy_violations = st.one_of(
    st.builds(PolicyViolationResponse, st.just(PolicyCode.GENERIC), st.just(()), texts),
    st.builds(PolicyViolationResponse, st.just(PolicyCode.MAX_QUEUE_SIZE), st.tuples(int32)),
    st.builds(PolicyViolationResponse, st.just(PolicyCode.PRIORITY_RANGE), st.tuples(int64, int64)),
    st.builds(PolicyViolationResponse, st.just(PolicyCode.MAX_PAYLOAD_SIZE), st.tuples(int32)),
)

responses = st.one_of(
    st.builds(CountResponse, int32),
    st.builds(DequeueResponse, st.none() | st.builds(lambda *fields: Record(*fields), uint64, int64, payloads)),
    st.builds(CommandErrorResponse, int32, texts),
    st.builds(
        ListQueuesResponse,
        st.lists(st.builds(QueueInfo, names, int32, st.dictionaries(texts, texts, max_size=4)), max_size=5).map(tuple),
    ),
    policy_violations,
    st.builds(AddedResponse, st.lists(st.tuples(uint64, st.booleans()), max_size=5).map(tuple)),
    st.builds(RecordsResponse, st.lists(st.builds(
        lambda record_id, priority, payload, failures, origin: Record(record_id, priority, payload, failures, 0,
                                                                       origin),
        uint64, int64, payloads, int32, st.none() | st.builds(Origin, names, uint64)), max_size=4).map(tuple)),
)

packets: st.SearchStrategy[Packet] = st.one_of(
    st.just(AuthorizationRequest()),
    st.builds(AuthorizationResponse, st.just(True)),
    st.builds(AuthorizationResponse, st.just(False), texts),
    st.builds(BootstrapRequest, int32, int32, int32),
    st.builds(BootstrapResponse, st.just(True)),
    st.builds(BootstrapResponse, st.just(False), texts),
    st.just(ClusterMetadataRequest()),
    st.builds(ClusterMetadataResponse, st.lists(texts, max_size=5).map(tuple), st.none() | node_id, int32),
    st.builds(CommandRequest, commands),
    st.builds(CommandResponse, responses),
    st.just(Ack()),
    st.just(Nack()),
    st.just(Ok()),
    st.builds(ErrorResponse, int32, texts),
    st.builds(NotLeader, st.none() | node_id),
    st.builds(NackAfter, int64),
)


def feed_in_chunks(decoder: PacketDecoder, data: bytes, cuts: list[int]) -> list[Packet]:
    """Feed ``data`` split at ``cuts`` and collect every packet decoded on the way."""
    out: list[Packet] = []
    previous = 0
    for cut in [*sorted(cuts), len(data)]:
        decoder.feed(data[previous:cut])
        out.extend(decoder.packets())
        previous = cut
    return out


@given(st.lists(packets, min_size=1, max_size=6), st.data())
def test_round_trip_in_arbitrary_chunks(stream: list[Packet], data: st.DataObject) -> None:
    raw = b"".join(encode(p) for p in stream)
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=10))
    server = PacketDecoder(Direction.CLIENT_TO_SERVER, max_ignored_packet_bytes=UNLIMITED)  # ListQueues: ~8 kB
    assert feed_in_chunks(server, raw, cuts) == stream
    assert server.pending_bytes == 0
    if all(isinstance(p, SERVER_PACKETS) for p in stream):
        client = PacketDecoder(Direction.SERVER_TO_CLIENT)
        assert feed_in_chunks(client, raw, cuts) == stream


@given(packets)
def test_round_trip_one_byte_at_a_time(packet: Packet) -> None:
    raw = encode(packet)
    decoder = PacketDecoder(Direction.CLIENT_TO_SERVER, max_ignored_packet_bytes=UNLIMITED)
    assert feed_in_chunks(decoder, raw, list(range(1, len(raw)))) == [packet]


def drain(decoder: PacketDecoder, data: bytes, cuts: list[int]) -> None:
    """Feed everything; only ProtocolError may escape, and once raised the decoder stays refused."""
    try:
        feed_in_chunks(decoder, data, cuts)
    except ProtocolError:
        try:
            decoder.next_packet()
        except ProtocolError:
            return
        raise AssertionError("decoder usable after a protocol error") from None
    assert decoder.pending_bytes <= len(data)


@settings(max_examples=300)
@given(st.binary(max_size=200), st.sampled_from(list(Direction)), st.data())
def test_random_bytes_only_raise_protocol_error(raw: bytes, direction: Direction, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=5))
    drain(PacketDecoder(direction, max_string_bytes=100, max_array_items=10, max_payload_bytes=100), raw, cuts)


mutations = st.one_of(
    st.tuples(st.just("replace"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("length"), st.integers(0, 10_000), st.sampled_from([-1, -(2**31), 2**31 - 1, 2**24 + 1, 255])),
)


def mutate(raw: bytes, changes: list[tuple[str, int, int]]) -> bytes:
    """Apply byte-level changes: replace, insert or delete one byte, or overwrite 4 bytes with an Int32."""
    out = bytearray(raw)
    for kind, position, value in changes:
        if not out:
            break
        index = position % len(out)
        if kind == "replace":
            out[index] = value
        elif kind == "insert":
            out.insert(index, value)
        elif kind == "delete":
            del out[index]
        else:
            out[index : index + 4] = I32.pack(value)
    return bytes(out)


@settings(max_examples=300)
@given(st.lists(packets, min_size=1, max_size=4), st.lists(mutations, min_size=1, max_size=4),
       st.sampled_from(list(Direction)), st.data())
def test_mutated_packets_only_raise_protocol_error(
    stream: list[Packet], changes: list[tuple[str, int, int]], direction: Direction, data: st.DataObject
) -> None:
    raw = mutate(b"".join(encode(p) for p in stream), changes)
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=5))
    drain(PacketDecoder(direction), raw, cuts)


hostile_prefixes = st.sampled_from([
    b"CE\x00" + I64.pack(1),  # Enqueue payload length
    b"cd\x01" + bytes(16),  # Dequeue record payload length
    b"e" + bytes(4),  # ErrorResponse message length
    b"m",  # endpoint count
    b"cl",  # queue count
    b"cl" + I32.pack(1) + b"\x00" + bytes(4),  # metadata entries
])


@settings(max_examples=60)
@given(hostile_prefixes, st.integers(2**20, 2**31 - 1))
def test_hostile_lengths_allocate_nothing(prefix: bytes, length: int) -> None:
    # Limits wide open, so only the absence of a body stops the parser: it must wait, not reserve.
    decoder = PacketDecoder(
        Direction.CLIENT_TO_SERVER, max_payload_bytes=2**31, max_string_bytes=2**31, max_array_items=2**31,
        max_ignored_packet_bytes=UNLIMITED,
    )
    tracemalloc.start()
    try:
        decoder.feed(prefix + I32.pack(length) + b"\x00\x00\x00")
        assert decoder.next_packet() is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024
