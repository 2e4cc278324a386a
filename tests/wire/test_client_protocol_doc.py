"""docs/client-protocol.md against the codec: the golden-bytes appendix (encoder and decoder), every one-line byte
example of the page, the marker and code tables, and the numbers the page quotes from the code."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from taskflux.domain import names
from taskflux.domain.errors import ErrorCode, PolicyCode
from taskflux.server.tcp import UNSUPPORTED_VERSION
from taskflux.wire import client_protocol as wire
from taskflux.wire.client_protocol import (
    DEFAULT_MAX_ARRAY_ITEMS,
    DEFAULT_MAX_STRING_BYTES,
    SERVER_PACKETS,
    SERVER_VERSION,
    CommandMarker,
    CommandRequest,
    CommandResponse,
    Direction,
    Marker,
    Packet,
    PacketDecoder,
    ResponseMarker,
    encode,
)
from taskflux.wire.primitives import MAX_QUEUE_NAME_BYTES

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "client-protocol.md"
DOC = DOC_PATH.read_text(encoding="utf-8")

DIRECTIONS = {"C→S": Direction.CLIENT_TO_SERVER, "S→C": Direction.SERVER_TO_CLIENT}
HEX_BYTES = re.compile(r"[0-9a-f]{2}(?: +[0-9a-f]{2})*")


def section(heading: str) -> str:
    """The text under the heading that starts with ``heading``, up to the next heading of the same or a higher
    level."""
    lines = DOC.splitlines()
    for start, line in enumerate(lines):
        match = re.match(r"(#+) (.*)", line)
        if match and match.group(2).startswith(heading):
            level = len(match.group(1))
            end = start + 1
            while end < len(lines):
                other = re.match(r"(#+) ", lines[end])
                if other and len(other.group(1)) <= level and not _in_code_block(lines, end):
                    break
                end += 1
            return "\n".join(lines[start + 1 : end])
    raise AssertionError(f"docs/client-protocol.md: no heading starting with {heading!r}")


def _in_code_block(lines: list[str], index: int) -> bool:
    return sum(1 for line in lines[:index] if line.lstrip().startswith("```")) % 2 == 1


def table_rows(text: str) -> list[list[str]]:
    """The data rows (below the |---| line) of every table in ``text``, as stripped cells."""
    rows: list[list[str]] = []
    in_table = False
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("|"):
            in_table = False
            continue
        cells = [cell.strip() for cell in stripped.strip("|").split("|")]
        if all(re.fullmatch(r":?-+:?", cell) for cell in cells):
            in_table = True
            continue
        if in_table:
            rows.append(cells)
    return rows


def code(cell: str) -> str:
    """The text of a cell that is one code span."""
    assert cell.startswith("`") and cell.endswith("`"), f"not a code span: {cell!r}"
    return cell[1:-1]


def build(expression: str) -> Packet:
    """A packet written as a Python expression over the names of taskflux.wire.client_protocol."""
    return eval(expression, {"__builtins__": {}}, dict(vars(wire)))  # the doc is ours, not input


def decode_all(data: bytes, direction: Direction) -> list[Packet]:
    decoder = PacketDecoder(direction)
    decoder.feed(data)
    packets = decoder.packets()
    assert decoder.pending_bytes == 0, f"{decoder.pending_bytes} bytes left over"
    return packets


def snake(name: str) -> str:
    """``CreateQueue`` -> ``CREATE_QUEUE``: the doc's names as the code's constants."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


# --- the appendix --------------------------------------------------------------------------------------------

GOLDEN = table_rows(section("Appendix: golden bytes"))
GOLDEN_IDS = [f"{row[0]}:{code(row[2]).split('(')[0]}" for row in GOLDEN]


def test_the_golden_table_is_numbered_and_covers_every_type() -> None:
    assert len(GOLDEN) >= 30
    assert [row[0] for row in GOLDEN] == [str(n) for n in range(1, len(GOLDEN) + 1)]
    assert len({code(row[3]) for row in GOLDEN}) == len(GOLDEN), "two rows with the same bytes"
    seen: set[type] = set()
    for row in GOLDEN:
        packet = build(code(row[2]))
        seen.add(type(packet))
        if isinstance(packet, CommandRequest):
            seen.add(type(packet.command))
        if isinstance(packet, CommandResponse):
            seen.add(type(packet.response))
    expected = {*typing.get_args(Packet), *typing.get_args(wire.Command), *typing.get_args(wire.Response)}
    assert expected - seen == set(), "packet, command or response types without a golden row"
    policies = {build(code(row[2])).response.policy for row in GOLDEN if "PolicyViolationResponse" in row[2]}
    assert policies == set(PolicyCode)


@pytest.mark.parametrize("row", GOLDEN, ids=GOLDEN_IDS)
def test_golden_row_matches_the_encoder(row: list[str]) -> None:
    number, sent_by, expression, hex_text = row
    packet = build(code(expression))
    assert encode(packet).hex(" ") == code(hex_text), f"row {number}"
    assert sent_by in DIRECTIONS
    assert (DIRECTIONS[sent_by] is Direction.SERVER_TO_CLIENT) == isinstance(packet, SERVER_PACKETS), (
        f"row {number}: {type(packet).__name__} is not sent by {sent_by[0]}"
    )


@pytest.mark.parametrize("row", GOLDEN, ids=GOLDEN_IDS)
def test_golden_row_matches_the_decoder(row: list[str]) -> None:
    number, sent_by, expression, hex_text = row
    packet = build(code(expression))
    data = bytes.fromhex(code(hex_text))
    direction = DIRECTIONS[sent_by]
    # The reader of that direction, and the server's reader, which decodes every known packet.
    for reader in {direction, Direction.CLIENT_TO_SERVER}:
        assert decode_all(data, reader) == [packet], f"row {number}"
    decoder = PacketDecoder(direction)
    for i in range(len(data)):
        assert decoder.next_packet() is None, f"row {number}: a packet before byte {i}"
        decoder.feed(data[i : i + 1])
    assert decoder.next_packet() == packet


# --- the byte examples of the page ---------------------------------------------------------------------------

def byte_examples() -> list[tuple[str, bytes]]:
    """Every line of a code block that is ``C→S`` or ``S→C`` followed by nothing but hex bytes (and an optional
    ``# comment``). Lines with placeholders (``<QueueName>``) or quoted text are schematic and skipped."""
    examples = []
    lines = DOC.splitlines()
    for index, line in enumerate(lines):
        match = re.match(r"(C→S|S→C) +(.*)", line)
        if not match or not _in_code_block(lines, index):
            continue
        body = match.group(2).split("#", 1)[0].strip()
        if HEX_BYTES.fullmatch(body):
            examples.append((match.group(1), bytes.fromhex(body)))
    return examples


EXAMPLES = byte_examples()


def test_there_are_byte_examples() -> None:
    assert len(EXAMPLES) >= 20


@pytest.mark.parametrize(("sent_by", "data"), EXAMPLES, ids=[data.hex() for _, data in EXAMPLES])
def test_byte_example_is_one_packet(sent_by: str, data: bytes) -> None:
    packets = decode_all(data, DIRECTIONS[sent_by])
    assert len(packets) == 1
    assert encode(packets[0]) == data


# --- tables and numbers ---------------------------------------------------------------------------------------

def marker_table(heading: str) -> dict[str, int]:
    """Name -> marker byte of the table under ``heading`` (columns: marker, char, name, ...)."""
    table: dict[str, int] = {}
    for row in table_rows(section(heading)):
        if len(row) < 3 or not re.fullmatch(r"`[0-9a-f]{2}`", row[0]):
            continue
        marker = int(code(row[0]), 16)
        assert code(row[1]) == chr(marker), f"{row[2]}: char {row[1]} is not 0x{marker:02x}"
        table[snake(row[2])] = marker
    return table


@pytest.mark.parametrize(
    ("heading", "markers"),
    [("4. Packets", Marker), ("5. Commands", CommandMarker), ("6. Responses", ResponseMarker)],
)
def test_marker_tables(heading: str, markers: type) -> None:
    expected = {name: value for name, value in vars(markers).items() if name.isupper()}
    assert marker_table(heading) == expected


@pytest.mark.parametrize(("heading", "codes"), [("7. Error codes", ErrorCode), ("9. Policy violations", PolicyCode)])
def test_code_tables(heading: str, codes: type[ErrorCode] | type[PolicyCode]) -> None:
    table = {snake(row[1]): int(row[0]) for row in table_rows(section(heading)) if row[0].isdigit()}
    assert table == {member.name: member.value for member in codes}


def test_numbers_quoted_from_the_code() -> None:
    assert UNSUPPORTED_VERSION in DOC
    assert f"speaks protocol **{SERVER_VERSION[0]}.{SERVER_VERSION[1]}**" in DOC
    limits = section("11. Limits")
    assert f"{DEFAULT_MAX_STRING_BYTES:,} bytes" in limits
    assert f"{DEFAULT_MAX_ARRAY_ITEMS:,} items" in limits
    assert f"0–{MAX_QUEUE_NAME_BYTES} bytes" in limits
    assert MAX_QUEUE_NAME_BYTES == names.MAX_QUEUE_NAME_BYTES
