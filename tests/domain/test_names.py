"""Queue names (docs/client-protocol.md §11)."""

import pytest

from taskflux.domain.names import is_valid_queue_name, is_valid_queue_name_bytes

VALID = ["", "queue", "messages:main:1", "GRAPH.EVENTS>5.30", "_", "-", "---hello---world---!", "@@@@@", "a" * 255,
         "!~"]
INVALID = ["a" * 256, "with space", "tab\t", "del\x7f", "nul\x00", "caf\u00e9", "ключ", "\n"]


@pytest.mark.parametrize("name", VALID)
def test_valid_names(name: str) -> None:
    assert is_valid_queue_name(name)
    assert is_valid_queue_name_bytes(name.encode())


@pytest.mark.parametrize("name", INVALID)
def test_invalid_names(name: str) -> None:
    assert not is_valid_queue_name(name)


def test_every_byte_outside_printable_ascii_is_refused() -> None:
    for byte in range(256):
        assert is_valid_queue_name_bytes(bytes([byte])) == (0x21 <= byte <= 0x7E)
