"""The client-protocol codec against every byte example of spec/client-protocol.md, fed whole, one byte at a time
and followed by trailing bytes; malformed input and the limits."""

from __future__ import annotations

import tracemalloc

import pytest

from taskflux.domain.errors import ErrorCode, PolicyCode
from taskflux.domain.policies import QueuePolicies
from taskflux.domain.records import Record
from taskflux.wire.client_protocol import (
    Ack,
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
    DeleteQueueCommand,
    DequeueCommand,
    DequeueResponse,
    Direction,
    EnqueueCommand,
    ErrorResponse,
    ListQueuesCommand,
    ListQueuesResponse,
    Nack,
    NotLeader,
    Ok,
    Packet,
    PacketDecoder,
    PolicyViolationResponse,
    QueueInfo,
    encode,
    is_supported_version,
    parse_queue_metadata,
    queue_metadata,
)
from taskflux.wire.primitives import ProtocolError

C2S = Direction.CLIENT_TO_SERVER
S2C = Direction.SERVER_TO_CLIENT

REASON = "Версия клиента не поддерживается"


def h(text: str) -> bytes:
    """Bytes from the spec's hex notation (spaces ignored)."""
    return bytes.fromhex(text.replace(" ", "").replace("\n", ""))


# (hex as the spec writes it, the packet, who sends it)
EXAMPLES: list[tuple[str, Packet, Direction]] = [
    ("41 4E", AuthorizationRequest(), C2S),
    ("61 01", AuthorizationResponse(), S2C),
    ("42 00000001 00000000 00000000", BootstrapRequest(1, 0, 0), C2S),
    ("62 01", BootstrapResponse(), S2C),
    ("62 00 0000003D " + REASON.encode().hex(), BootstrapResponse(False, REASON), S2C),
    ("43 45 04 6A6F6273 0000000000000005 00000005 68656C6C6F",
     CommandRequest(EnqueueCommand("jobs", 5, b"hello")), C2S),
    ("6B", Ok(), S2C),
    ("4B", Ack(), C2S),
    ("4E", Nack(), C2S),
    ("63 65 00000002 00000000", CommandResponse(CommandErrorResponse(ErrorCode.QUEUE_DOES_NOT_EXIST)), S2C),
    ("65 00000001 00000000", ErrorResponse(ErrorCode.INVALID_QUEUE_NAME), S2C),
    ("6C FFFFFFFF", NotLeader(None), S2C),
    ("6C 00000002", NotLeader(2), S2C),
    ("43 44 04 6A6F6273 000003E8", CommandRequest(DequeueCommand("jobs", 1000)), C2S),
    ("63 64 01 0000000000000001 0000000000000005 00000005 68656C6C6F",
     CommandResponse(DequeueResponse(Record(1, 5, b"hello"))), S2C),
    ("63 64 00", CommandResponse(DequeueResponse(None)), S2C),
    ("63 65 00000001 00000000", CommandResponse(CommandErrorResponse(ErrorCode.INVALID_QUEUE_NAME)), S2C),
    ("43 43 04 6A6F6273", CommandRequest(CountCommand("jobs")), C2S),
    ("63 63 00000000", CommandResponse(CountResponse(0)), S2C),
    ("43 51 04 6A6F6273 00000001 00000064 FFFFFFFF 00",
     CommandRequest(CreateQueueCommand("jobs", 1, 100, None, None)), C2S),
    ("43 51 04 6A6F6273 00000002 FFFFFFFE FFFFFFFB 01 FFFFFFFFFFFFFFF6 000000000000000A",
     CommandRequest(CreateQueueCommand("jobs", 2, -2, -5, (-10, 10))), C2S),
    ("63 65 00000003 00000000", CommandResponse(CommandErrorResponse(ErrorCode.QUEUE_ALREADY_EXISTS)), S2C),
    ("43 52 04 6A6F6273", CommandRequest(DeleteQueueCommand("jobs")), C2S),
    ("43 4C", CommandRequest(ListQueuesCommand()), C2S),
    ("""63 6C 00000002
        00 00000000 00000000
        04 6A6F6273 00000002 00000001 0000000E 6D61782D71756575652D73697A65 00000003 313030""",
     CommandResponse(ListQueuesResponse((QueueInfo("", 0, {}), QueueInfo("jobs", 2, {"max-queue-size": "100"})))),
     S2C),
    ("4D", ClusterMetadataRequest(), C2S),
    ("6D 00000001 0000000C 74666C75782E313A35303030 00000000 00000000",
     ClusterMetadataResponse(("tflux.1:5000",), 0, 0), S2C),
    ("6D 00000002 00000000 00000000 FFFFFFFF 00000001", ClusterMetadataResponse(("", ""), None, 1), S2C),
    ("63 70 00000001 00000064", CommandResponse(PolicyViolationResponse(PolicyCode.MAX_QUEUE_SIZE, (100,))), S2C),
    ("63 70 00000002 FFFFFFFFFFFFFFF6 000000000000000A",
     CommandResponse(PolicyViolationResponse(PolicyCode.PRIORITY_RANGE, (-10, 10))), S2C),
    ("63 70 00000003 00010000", CommandResponse(PolicyViolationResponse(PolicyCode.MAX_PAYLOAD_SIZE, (65536,))), S2C),
    ("63 70 00000000 00000002 6869", CommandResponse(PolicyViolationResponse(PolicyCode.GENERIC, (), "hi")), S2C),
    ("63 65 00000000 00000002 6869", CommandResponse(CommandErrorResponse(ErrorCode.UNKNOWN, "hi")), S2C),
    ("61 00 00000000", AuthorizationResponse(False, ""), S2C),
]

IDS = [f"{i}:{type(p).__name__}" for i, (_, p, _) in enumerate(EXAMPLES)]


def decoders(direction: Direction) -> list[PacketDecoder]:
    """A decoder of the packet's direction, plus the server's (which decodes every known packet)."""
    out = [PacketDecoder(direction)]
    if direction is S2C:
        out.append(PacketDecoder(C2S))
    return out


@pytest.mark.parametrize(("hex_text", "packet", "direction"), EXAMPLES, ids=IDS)
def test_encode_matches_spec_bytes(hex_text: str, packet: Packet, direction: Direction) -> None:
    assert encode(packet) == h(hex_text)


@pytest.mark.parametrize(("hex_text", "packet", "direction"), EXAMPLES, ids=IDS)
def test_decode_whole(hex_text: str, packet: Packet, direction: Direction) -> None:
    for decoder in decoders(direction):
        decoder.feed(h(hex_text))
        assert decoder.next_packet() == packet
        assert decoder.next_packet() is None
        assert decoder.pending_bytes == 0


@pytest.mark.parametrize(("hex_text", "packet", "direction"), EXAMPLES, ids=IDS)
def test_decode_one_byte_at_a_time(hex_text: str, packet: Packet, direction: Direction) -> None:
    data = h(hex_text)
    for decoder in decoders(direction):
        for i in range(len(data) - 1):
            decoder.feed(data[i : i + 1])
            assert decoder.next_packet() is None
        decoder.feed(data[-1:])
        assert decoder.next_packet() == packet
        assert decoder.next_packet() is None


@pytest.mark.parametrize(("hex_text", "packet", "direction"), EXAMPLES, ids=IDS)
def test_decode_with_trailing_bytes(hex_text: str, packet: Packet, direction: Direction) -> None:
    data = h(hex_text)
    for decoder in decoders(direction):
        # The packet twice, then the start of an empty-dequeue answer: two packets out, two bytes left pending.
        decoder.feed(data + data + h("63 64"))
        assert decoder.next_packet() == packet
        assert decoder.next_packet() == packet
        assert decoder.next_packet() is None
        assert decoder.pending_bytes == 2
        decoder.feed(h("00") + data)
        assert decoder.packets() == [CommandResponse(DequeueResponse(None)), packet]


def test_a_stream_of_every_example_in_one_feed() -> None:
    decoder = PacketDecoder(C2S)
    decoder.feed(b"".join(h(x) for x, _, _ in EXAMPLES))
    assert decoder.packets() == [p for _, p, _ in EXAMPLES]


def test_handshake_bytes() -> None:
    assert encode(AuthorizationRequest()) + encode(BootstrapRequest()) == h("41 4E 42 00000001 00000001 00000000")
    assert encode(AuthorizationResponse()) + encode(BootstrapResponse()) == h("61 01 62 01")


def test_queue_names_are_latin1_and_not_validated() -> None:
    decoder = PacketDecoder(C2S)
    decoder.feed(h("43 43 03 20FF80"))  # space, 0xFF, 0x80: invalid, but decoded losslessly for the server to refuse
    packet = decoder.next_packet()
    assert packet == CommandRequest(CountCommand(" \xff\x80"))
    assert encode(packet) == h("43 43 03 20FF80")


def test_any_nonzero_bool_is_true() -> None:
    decoder = PacketDecoder(S2C)
    decoder.feed(h("61 7F 62 02 63 64 FF 0000000000000009 0000000000000001 00000000"))
    assert decoder.packets() == [
        AuthorizationResponse(), BootstrapResponse(), CommandResponse(DequeueResponse(Record(9, 1, b""))),
    ]


def test_unknown_error_code_is_kept_as_an_int() -> None:
    decoder = PacketDecoder(S2C)
    decoder.feed(h("65 00000063 00000000"))
    packet = decoder.next_packet()
    assert packet == ErrorResponse(99)


def test_string_with_invalid_utf8_is_replaced_not_refused() -> None:
    decoder = PacketDecoder(S2C)
    decoder.feed(h("65 00000000 00000002 C328"))
    assert decoder.next_packet() == ErrorResponse(0, "\ufffd(")


# --- malformed input --------------------------------------------------------------------------------------------

MALFORMED: list[tuple[str, Direction, str]] = [
    ("00", C2S, "unknown packet marker 0x00"),
    ("5A", C2S, "unknown packet marker 0x5a"),
    ("41 4E", S2C, "unknown packet marker 0x41"),  # a client packet sent by a server
    ("43 4C", S2C, "unknown packet marker 0x43"),
    ("41 41", C2S, "unknown authorization method 0x41"),
    ("43 5A", C2S, "unknown command marker 0x5a"),
    ("63 5A", S2C, "unknown response marker 0x5a"),
    ("63 5A", C2S, "unknown response marker 0x5a"),
    ("63 70 00000009", S2C, "unknown policy code 9"),
    ("63 70 FFFFFFFF", C2S, "unknown policy code -1"),
    ("43 45 00 0000000000000001 FFFFFFFF", C2S, "negative payload length -1"),
    ("43 45 00 0000000000000001 01000001", C2S, "payload length 16777217 exceeds the limit of 16777216"),
    ("65 00000000 80000000", S2C, "negative error message length"),
    ("65 00000000 00010001", S2C, "error message length 65537 exceeds the limit of 65536"),
    ("6D FFFFFFFF", S2C, "negative endpoint array length"),
    ("6D 00100001", S2C, "endpoint array length 1048577 exceeds"),
    ("63 6C FFFFFFFE", S2C, "negative queue list length"),
    ("63 6C 00000001 00 00000000 FFFFFFFF", S2C, "negative metadata dict length"),
    ("63 64 01 0000000000000001 0000000000000001 7FFFFFFF", S2C, "payload length 2147483647 exceeds"),
]


@pytest.mark.parametrize(("hex_text", "direction", "message"), MALFORMED)
def test_malformed_input_is_a_protocol_error(hex_text: str, direction: Direction, message: str) -> None:
    decoder = PacketDecoder(direction)
    decoder.feed(h(hex_text))
    with pytest.raises(ProtocolError, match=message):
        decoder.next_packet()
    # The decoder is unusable afterwards, even if valid bytes follow.
    decoder.feed(h("6B"))
    with pytest.raises(ProtocolError, match="unusable"):
        decoder.next_packet()


@pytest.mark.parametrize(("hex_text", "direction", "message"), MALFORMED)
def test_malformed_input_fed_one_byte_at_a_time(hex_text: str, direction: Direction, message: str) -> None:
    decoder = PacketDecoder(direction)
    data = h(hex_text)
    # The error surfaces as soon as the offending field is complete, at the latest with the last byte.
    with pytest.raises(ProtocolError, match=message):
        for i in range(len(data)):
            decoder.feed(data[i : i + 1])
            assert decoder.next_packet() is None


def test_limits_are_configurable() -> None:
    decoder = PacketDecoder(C2S, max_payload_bytes=4)
    decoder.feed(h("43 45 00 0000000000000001 00000004 61626364"))
    assert decoder.next_packet() == CommandRequest(EnqueueCommand("", 1, b"abcd"))
    decoder.feed(h("43 45 00 0000000000000001 00000005"))
    with pytest.raises(ProtocolError, match="payload length 5 exceeds the limit of 4"):
        decoder.next_packet()
    strings = PacketDecoder(S2C, max_string_bytes=2, max_array_items=1)
    strings.feed(h("6D 00000001 00000002 6162 00000000 00000000"))
    assert strings.next_packet() == ClusterMetadataResponse(("ab",), 0, 0)
    strings.feed(h("6D 00000002"))
    with pytest.raises(ProtocolError, match="endpoint array length 2 exceeds the limit of 1"):
        strings.next_packet()


def test_a_hostile_length_allocates_nothing() -> None:
    # Even with a limit that lets the length through, nothing is reserved for a body that has not arrived.
    decoder = PacketDecoder(C2S, max_payload_bytes=2**31 - 1)
    tracemalloc.start()
    try:
        decoder.feed(h("43 45 00 0000000000000001 7FFFFFFF 00"))
        for _ in range(100):
            assert decoder.next_packet() is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024
    assert decoder.pending_bytes == 16


def test_large_payload_in_chunks_is_not_reparsed_from_scratch() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    data = encode(CommandRequest(EnqueueCommand("q", -1, payload)))
    decoder = PacketDecoder(C2S)
    chunk = 1000
    results = []
    for i in range(0, len(data), chunk):
        decoder.feed(data[i : i + chunk])
        results.extend(decoder.packets())
    assert results == [CommandRequest(EnqueueCommand("q", -1, payload))]


# --- encoder refusals -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "packet",
    [
        CommandRequest(CountCommand("a" * 256)),
        CommandRequest(EnqueueCommand("\u0100", 0, b"")),  # not latin-1
        CommandRequest(EnqueueCommand("q", 2**63, b"")),
        CommandRequest(DequeueCommand("q", -1)),
        CommandRequest(DequeueCommand("q", 2**32)),
        CommandRequest(CreateQueueCommand("q", max_queue_size=2**31)),
        CommandResponse(CountResponse(2**31)),
        CommandResponse(PolicyViolationResponse(PolicyCode.PRIORITY_RANGE, (1,))),
        CommandResponse(PolicyViolationResponse(7, (1,))),  # type: ignore[arg-type]
        NotLeader(2**31),
        CommandResponse(DequeueResponse(Record(-1, 0, b""))),
    ],
)
def test_encoder_refuses_values_that_do_not_fit(packet: Packet) -> None:
    with pytest.raises(ValueError):
        encode(packet)


def test_encoder_refuses_non_packets() -> None:
    with pytest.raises(TypeError):
        encode(CountCommand("q"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode(CommandRequest(CountResponse(1)))  # type: ignore[arg-type]


def test_longest_queue_name_fits() -> None:
    packet = CommandRequest(CountCommand("a" * 255))
    decoder = PacketDecoder(C2S)
    decoder.feed(encode(packet))
    assert decoder.next_packet() == packet


# --- helpers ----------------------------------------------------------------------------------------------------

def test_queue_metadata_in_spec_order_and_format() -> None:
    metadata = queue_metadata(QueuePolicies(1000, 65536, (-10, 10)))
    assert list(metadata.items()) == [
        ("max-queue-size", "1000"), ("max-payload-size", "65536"), ("priority-range", "-10 10"),
    ]
    assert queue_metadata(QueuePolicies()) == {}
    assert queue_metadata(QueuePolicies(priority_range=(5, 5))) == {"priority-range": "5 5"}
    assert parse_queue_metadata(metadata) == QueuePolicies(1000, 65536, (-10, 10))
    assert parse_queue_metadata({"unknown": "x"}) == QueuePolicies()


@pytest.mark.parametrize(
    "metadata",
    [{"max-queue-size": "+5"}, {"max-queue-size": " 5"}, {"max-payload-size": "1_000"}, {"priority-range": "1"},
     {"priority-range": "1  2"}, {"priority-range": "a b"}, {"max-queue-size": ""}, {"max-queue-size": "-"}],
)
def test_malformed_metadata_values(metadata: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        parse_queue_metadata(metadata)


def test_version_rule() -> None:
    assert is_supported_version(1, 0)
    assert is_supported_version(1, 1)
    assert not is_supported_version(1, 2)
    assert not is_supported_version(2, 0)
    assert not is_supported_version(0, 9)
