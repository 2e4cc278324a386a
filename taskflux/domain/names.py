"""Queue names (docs/client-protocol.md §11): 0–255 bytes, every byte printable ASCII 0x21–0x7E; "" is the
default queue."""

from __future__ import annotations

import re

DEFAULT_QUEUE = ""
MAX_QUEUE_NAME_BYTES = 255

_VALID_NAME = re.compile(rb"[\x21-\x7e]{0,255}")


def is_valid_queue_name_bytes(raw: bytes) -> bool:
    """True when ``raw`` is a valid queue name as it appears on the wire."""
    return _VALID_NAME.fullmatch(raw) is not None


def is_valid_queue_name(name: str) -> bool:
    """True when ``name`` is a valid queue name (str form, as the domain holds it)."""
    return name.isascii() and is_valid_queue_name_bytes(name.encode("ascii"))
