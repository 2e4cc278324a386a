"""Log-entry and snapshot codecs: round trips, strict decoding, fuzzing, snapshot + replay = live."""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskflux.domain.commands import (
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
from taskflux.domain.entry_codec import CodecError, decode_command, encode_command
from taskflux.domain.errors import INT64_MAX, INT64_MIN
from taskflux.domain.manager import QueueManager
from taskflux.domain.policies import Backoff, DeliveryPolicies
from taskflux.domain.snapshot_codec import decode_snapshot, encode_snapshot, state_digest

names = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=255)
int32 = st.integers(-(2**31), 2**31 - 1)
int64 = st.integers(INT64_MIN, INT64_MAX)
uint64 = st.integers(0, 2**64 - 1)
uint32 = st.integers(0, 2**32 - 1)
deliveries = st.builds(DeliveryPolicies, st.one_of(st.none(), st.integers(0, 2**31 - 1)), st.one_of(st.none(), names),
                       uint64, st.sampled_from(Backoff), uint64, uint64, uint32)
new_records = st.builds(NewRecord, int64, st.binary(max_size=16),
                        st.one_of(st.none(), st.binary(min_size=1, max_size=255)), st.integers(0, INT64_MAX))
commands = st.one_of(
    st.builds(CreateQueue, names, int32, int32, int32, st.one_of(st.none(), st.tuples(int64, int64)), deliveries),
    st.builds(DeleteQueue, names),
    st.builds(AddRecord, names, int64, st.binary(max_size=64)),
    st.builds(RemoveRecord, names, uint64, uint64),
    st.builds(AddRecords, names, uint64, st.lists(new_records, min_size=1, max_size=4).map(tuple)),
    st.builds(ReturnRecords, names, uint64, uint64,
              st.lists(st.tuples(uint64, int64), min_size=1, max_size=4).map(tuple)),
    st.builds(RemoveRecords, names, uint64, st.lists(uint64, min_size=1, max_size=4).map(tuple)),
    st.builds(MoveRecords, names, uint64, uint64, st.lists(uint64, min_size=1, max_size=4).map(tuple)),
    st.builds(Tick, uint64),
)


@given(commands)
def test_every_command_round_trips(command: Command) -> None:
    assert decode_command(encode_command(command)) == command


def test_add_record_bytes() -> None:
    encoded = encode_command(AddRecord("jobs", 10, b"hi"))
    assert encoded.hex(" ") == "01 41 04 6a 6f 62 73 00 00 00 00 00 00 00 0a 00 00 00 02 68 69"


@given(commands, st.data())
def test_truncated_or_extended_entries_are_refused(command: Command, data: st.DataObject) -> None:
    encoded = encode_command(command)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(CodecError):
        decode_command(encoded[:cut])
    with pytest.raises(CodecError):
        decode_command(encoded + data.draw(st.binary(min_size=1, max_size=8)))


@settings(max_examples=500)
@given(st.binary(max_size=80))
def test_random_bytes_decode_or_raise_codec_error(raw: bytes) -> None:
    try:
        command = decode_command(raw)
    except CodecError:
        return
    assert encode_command(command) == raw


@pytest.mark.parametrize("raw", [b"\x02A\x00", b"\x01Z\x00", b"\x01A\x01 " + bytes(12), b"\x01D\x01\x80"])
def test_bad_version_type_or_name_is_refused(raw: bytes) -> None:
    with pytest.raises(CodecError):
        decode_command(raw)


def test_unencodable_values_are_refused_at_encoding() -> None:
    with pytest.raises((ValueError, struct.error)):
        encode_command(AddRecord("bad name", 0, b""))
    with pytest.raises(struct.error):
        encode_command(AddRecord("q", INT64_MAX + 1, b""))


# --- snapshots ---

replayable = st.lists(
    st.one_of(
        st.builds(CreateQueue, st.sampled_from(["a", "b", "c"]), st.sampled_from([1, 2]), st.sampled_from([-1, 3, 50]),
                  st.sampled_from([-1, 4]), st.one_of(st.none(), st.just((INT64_MIN, INT64_MAX)), st.just((-2, 9)))),
        st.builds(DeleteQueue, st.sampled_from(["a", "b", "c"])),
        st.builds(AddRecord, st.sampled_from(["", "a", "b", "c"]), st.integers(-3, 12), st.binary(max_size=6)),
        st.builds(RemoveRecord, st.sampled_from(["", "a", "b", "c"]), st.integers(0, 4), st.integers(1, 8)),
        st.builds(CreateQueue, st.sampled_from(["a", "b", "c"]), delivery=st.builds(
            DeliveryPolicies, st.just(2), st.sampled_from(["", "a", "dead"]), st.sampled_from([0, 5]),
            st.sampled_from(Backoff), st.just(40), st.sampled_from([0, 30, 1000]), st.sampled_from([0, 2, 100]))),
        st.builds(AddRecords, st.sampled_from(["", "a", "dead"]), st.integers(0, 100), st.lists(st.builds(
            NewRecord, st.integers(-3, 12), st.binary(max_size=3), st.one_of(st.none(), st.sampled_from([b"k", b"l"])),
            st.sampled_from([0, 20, 60])), min_size=1, max_size=3).map(tuple)),
        st.builds(ReturnRecords, st.sampled_from(["", "a", "b"]), st.integers(0, 4), st.integers(0, 100),
                  st.lists(st.tuples(st.integers(1, 8), st.sampled_from([-1, 0, 10])), min_size=1,
                           max_size=3).map(tuple)),
        st.builds(RemoveRecords, st.sampled_from(["", "a", "dead"]), st.integers(0, 4),
                  st.lists(st.integers(1, 8), min_size=1, max_size=3).map(tuple)),
        st.builds(MoveRecords, st.sampled_from(["", "a", "dead"]), st.integers(0, 4), st.integers(0, 100),
                  st.lists(st.integers(1, 8), min_size=1, max_size=3).map(tuple)),
        st.builds(Tick, st.integers(0, 100)),
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(replayable, st.data())
def test_snapshot_plus_replay_of_the_rest_equals_the_live_state(log: list[Command], data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(log)))
    live = QueueManager()
    snapshot = b""
    for position, command in enumerate(log):
        if position == cut:
            snapshot = b"".join(encode_snapshot(live, chunk_bytes=32))
        live.apply(command)
    if cut == len(log):
        snapshot = b"".join(encode_snapshot(live))
    restored = decode_snapshot(io.BytesIO(snapshot))
    for command in log[cut:]:
        restored.apply(decode_command(encode_command(command)))
    assert state_digest(restored) == state_digest(live)
    assert [queue.name for queue in restored.queues()] == [queue.name for queue in live.queues()]


def sample_state() -> QueueManager:
    manager = QueueManager()
    manager.apply(CreateQueue("wide", 2, 10, 100, (INT64_MIN, INT64_MAX)))
    manager.apply(CreateQueue("plain"))
    for priority in (3, -1, 3, INT64_MAX):
        manager.apply(AddRecord("wide", priority, b"p%d" % priority))
        manager.apply(AddRecord("plain", priority, b"x" * 3))
    manager.apply(DeleteQueue("plain"))
    return manager


def test_snapshot_keeps_reserved_records_and_the_incarnation_counter() -> None:
    live = sample_state()
    wide = live.get("wide")
    assert wide is not None
    taken = wide.reserve()
    assert taken is not None
    restored = decode_snapshot(io.BytesIO(b"".join(encode_snapshot(live))))
    assert restored.get("wide").stored == 4  # type: ignore[union-attr]
    assert restored.next_incarnation == live.next_incarnation == 3
    assert restored.apply(CreateQueue("new")) == live.apply(CreateQueue("new"))
    assert restored.get("new").incarnation == 3  # type: ignore[union-attr]  # "plain" had 2: never reused


def test_every_truncation_of_a_snapshot_is_refused() -> None:
    encoded = b"".join(encode_snapshot(sample_state()))
    for cut in range(len(encoded)):
        with pytest.raises(CodecError):
            decode_snapshot(io.BytesIO(encoded[:cut]))
    with pytest.raises(CodecError):
        decode_snapshot(io.BytesIO(encoded + b"\x00"))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_corrupted_snapshot_is_refused_or_decodes_to_a_valid_state(data: st.DataObject) -> None:
    encoded = bytearray(b"".join(encode_snapshot(sample_state())))
    for _ in range(data.draw(st.integers(1, 4))):
        encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
    try:
        manager = decode_snapshot(io.BytesIO(bytes(encoded)))
    except CodecError:
        return
    assert manager.get("") is not None
    assert decode_snapshot(io.BytesIO(b"".join(encode_snapshot(manager)))) is not None


def test_a_huge_declared_payload_length_does_not_allocate_it() -> None:
    encoded = bytearray(b"".join(encode_snapshot(sample_state())))
    # the first record of "wide" has payload length "p-1" (3 bytes): claim 4 GiB - 1 instead
    position = encoded.index(b"p-1") - 4
    encoded[position : position + 4] = b"\xff\xff\xff\xff"
    with pytest.raises(CodecError, match="truncated"):
        decode_snapshot(io.BytesIO(bytes(encoded)))


def test_a_snapshot_without_the_default_queue_is_refused() -> None:
    manager = QueueManager(with_default_queue=False)
    with pytest.raises(CodecError, match="default queue"):
        decode_snapshot(io.BytesIO(b"".join(encode_snapshot(manager))))
