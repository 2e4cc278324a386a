"""The client-protocol decoder's packet-size limits and its cost: a packet that needs more bytes than its type allows
is refused as soon as that is known, server packets read by a server have a tight limit of their own, and the
parse work is linear in the bytes received however the stream is cut."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from taskflux.domain.records import Record
from taskflux.wire.client_protocol import (
    DEFAULT_MAX_IGNORED_PACKET_BYTES,
    MAX_KEY_BYTES,
    UNLIMITED,
    ClusterMetadataResponse,
    CommandRequest,
    CommandResponse,
    DequeueResponse,
    Direction,
    EnqueueCommand,
    EnqueueItem,
    EnqueueManyCommand,
    ErrorResponse,
    ListQueuesResponse,
    Packet,
    PacketDecoder,
    QueueInfo,
    client_packet_limit,
    encode,
)
from taskflux.wire.primitives import I32, ProtocolError, Reader

C2S = Direction.CLIENT_TO_SERVER
S2C = Direction.SERVER_TO_CLIENT


def metadata_packet(endpoints: int, endpoint: str = "") -> bytes:
    return encode(ClusterMetadataResponse((endpoint,) * endpoints, 0, 0))


# --- sizes ------------------------------------------------------------------------------------------------------

def test_the_client_packet_limit_is_the_largest_batch() -> None:
    # The largest EnqueueMany: 1000 records with the longest keys, whose payloads together fill one payload's limit.
    items = (EnqueueItem(-1, b"x" * 1000, b"k" * MAX_KEY_BYTES),) + (EnqueueItem(-1, b"", b"k" * MAX_KEY_BYTES),) * 999
    largest = encode(CommandRequest(EnqueueManyCommand("q" * 255, items)))
    assert client_packet_limit(1000) == len(largest)
    assert client_packet_limit(1000) > len(encode(CommandRequest(EnqueueCommand("q" * 255, -1, b"x" * 1000))))
    decoder = PacketDecoder(C2S, max_payload_bytes=1000)  # the limit follows max_payload_bytes by default
    decoder.feed(largest)
    assert decoder.next_packet() == CommandRequest(EnqueueManyCommand("q" * 255, items))
    one_byte_more = (items[0], EnqueueItem(-1, b"x", b"k" * MAX_KEY_BYTES), *items[2:])
    decoder = PacketDecoder(C2S, max_payload_bytes=1000)
    decoder.feed(encode(CommandRequest(EnqueueManyCommand("q" * 255, one_byte_more))))
    with pytest.raises(ProtocolError, match="over the limit"):
        decoder.next_packet()


def test_a_packet_claiming_more_than_its_limit_is_refused_before_its_body_arrives() -> None:
    decoder = PacketDecoder(C2S, max_payload_bytes=1000, max_packet_bytes=100)
    decoder.feed(bytes.fromhex("43 45 01 71 0000000000000001") + I32.pack(200))  # a 200-byte payload claimed
    with pytest.raises(ProtocolError, match="packet 0x43 needs 216 bytes or more, over the limit of 100"):
        decoder.next_packet()


def test_a_whole_packet_over_its_limit_is_refused() -> None:
    decoder = PacketDecoder(C2S, max_payload_bytes=1000, max_packet_bytes=100)
    decoder.feed(encode(CommandRequest(EnqueueCommand("q", 1, b"x" * 90))))  # 105 bytes in one feed
    with pytest.raises(ProtocolError, match="over the limit of 100"):
        decoder.next_packet()


# --- server packets sent to a server: parsed and ignored, under a limit of their own -----------------------------

def test_server_packets_under_their_limit_are_decoded_for_the_server_to_ignore() -> None:
    at_limit = metadata_packet(1, "x" * (DEFAULT_MAX_IGNORED_PACKET_BYTES - 17))
    assert len(at_limit) == DEFAULT_MAX_IGNORED_PACKET_BYTES
    decoder = PacketDecoder(C2S)
    decoder.feed(at_limit + encode(ErrorResponse(1, "x" * 100)))
    assert isinstance(decoder.next_packet(), ClusterMetadataResponse)
    assert decoder.next_packet() == ErrorResponse(1, "x" * 100)


def test_a_server_packet_claiming_a_long_string_is_refused_at_once() -> None:
    # The confirmed attack: 6D claiming a million 60 kB endpoints. Refused after its first 9 bytes.
    decoder = PacketDecoder(C2S)
    decoder.feed(bytes.fromhex("6D 000F4240") + I32.pack(60_000))
    limit = DEFAULT_MAX_IGNORED_PACKET_BYTES
    with pytest.raises(ProtocolError, match=f"packet 0x6d .* over the limit of {limit}"):
        decoder.next_packet()


def test_a_server_packet_growing_past_its_limit_is_refused_as_it_grows() -> None:
    decoder = PacketDecoder(C2S)
    decoder.feed(bytes.fromhex("6D 000F4240"))
    fed = 5
    with pytest.raises(ProtocolError, match="packet 0x6d"):
        for _ in range(10_000):
            decoder.feed(I32.pack(0))  # one more empty endpoint
            fed += 4
            assert decoder.next_packet() is None
    assert fed <= DEFAULT_MAX_IGNORED_PACKET_BYTES + 4


def test_one_byte_over_the_limit_is_refused() -> None:
    too_big = metadata_packet(1, "x" * (DEFAULT_MAX_IGNORED_PACKET_BYTES - 16))
    assert len(too_big) == DEFAULT_MAX_IGNORED_PACKET_BYTES + 1
    decoder = PacketDecoder(C2S)
    decoder.feed(too_big)
    with pytest.raises(ProtocolError, match="over the limit"):
        decoder.next_packet()


def test_a_client_has_no_packet_limit_by_default_only_field_limits() -> None:
    big = metadata_packet(50_000)
    decoder = PacketDecoder(S2C)
    decoder.feed(big)
    packet = decoder.next_packet()
    assert isinstance(packet, ClusterMetadataResponse) and len(packet.endpoints) == 50_000


# --- linear cost ------------------------------------------------------------------------------------------------

@pytest.fixture
def field_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts every primitive field the decoder reads (Reader._advance): the parse work."""
    counter = [0]
    advance = Reader._advance

    def counting(self: Reader, size: int) -> int:
        counter[0] += 1
        return advance(self, size)

    monkeypatch.setattr(Reader, "_advance", counting)
    yield counter


def work_to_decode(counter: list[int], decoder: PacketDecoder, data: bytes, chunk: int) -> tuple[int, list[Packet]]:
    before = counter[0]
    out: list[Packet] = []
    for i in range(0, len(data), chunk):
        decoder.feed(data[i : i + chunk])
        out.extend(decoder.packets())
    return counter[0] - before, out


LARGE_SERVER_PACKETS = [
    pytest.param(metadata_packet(3000), id="many-endpoints"),
    pytest.param(encode(CommandResponse(ListQueuesResponse(tuple(
        QueueInfo(f"q{i}", i, {"max-queue-size": "10"}) for i in range(1000))))), id="many-queues"),
    pytest.param(encode(CommandResponse(ListQueuesResponse((
        QueueInfo("q", 1, {f"k{i}": "" for i in range(2000)}),)))), id="one-queue-many-metadata-entries"),
    pytest.param(encode(CommandResponse(DequeueResponse(Record(1, 1, b"x" * 100_000)))), id="one-large-payload"),
]


@pytest.mark.parametrize("data", LARGE_SERVER_PACKETS)
@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_parse_work_is_linear_however_the_stream_is_cut(field_reads: list[int], data: bytes, chunk: int) -> None:
    whole, expected = work_to_decode(field_reads, PacketDecoder(S2C), data, len(data))
    cut, packets = work_to_decode(field_reads, PacketDecoder(S2C), data, chunk)
    assert packets == expected and len(packets) == 1
    # Each attempt re-reads only the few fields before the array it stopped in (and its enclosing items). Re-parsing
    # from the first byte on every read (the quadratic behaviour) costs hundreds of times more on these packets.
    assert cut <= 10 * whole, (cut, whole)


def test_ignored_packets_streamed_by_a_client_cost_linear_work(field_reads: list[int]) -> None:
    packet = metadata_packet(1000)  # 4013 bytes: under the limit, so the server parses and ignores it
    stream = packet * 20
    whole, expected = work_to_decode(field_reads, PacketDecoder(C2S), stream, len(stream))
    cut, packets = work_to_decode(field_reads, PacketDecoder(C2S), stream, 5)
    assert packets == expected and len(packets) == 20
    assert cut <= 10 * whole, (cut, whole)


def test_the_decoder_counts_the_bytes_it_consumed() -> None:
    decoder = PacketDecoder(C2S, max_ignored_packet_bytes=UNLIMITED)
    first, second = metadata_packet(3), encode(ErrorResponse(1, "x"))
    decoder.feed(first + second + b"\x6d")
    assert len(decoder.packets()) == 2
    assert decoder.consumed_bytes == len(first) + len(second)
