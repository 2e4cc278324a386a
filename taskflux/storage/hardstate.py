"""The hard-state file: current term and vote, replaced atomically on every change."""

from __future__ import annotations

import os
import struct
from zlib import crc32

from taskflux.raft.types import NO_VOTE, HardState
from taskflux.storage.errors import StorageCorrupted
from taskflux.storage.fileops import FileOps
from taskflux.storage.fsutil import write_new_file

HARD_STATE_MAGIC = b"TFHS"
HARD_STATE_VERSION = 1
# magic, format version, term, vote (-1 = none), CRC32 of the 24 bytes before it.
HARD_STATE_FORMAT = struct.Struct(">4sIQqI")
HARD_STATE_SIZE = HARD_STATE_FORMAT.size  # 28
_BODY = struct.Struct(">4sIQq")


def encode_hard_state(state: HardState) -> bytes:
    if state.term < 0 or state.vote < NO_VOTE:
        raise ValueError(f"invalid hard state {state}: term must be >= 0, vote >= {NO_VOTE}")
    body = _BODY.pack(HARD_STATE_MAGIC, HARD_STATE_VERSION, state.term, state.vote)
    return body + struct.pack(">I", crc32(body))


def load_hard_state(path: str) -> HardState:
    """Read the hard state at ``path``; a missing file is ``HardState()``, a bad one StorageCorrupted."""
    try:
        with open(path, "rb") as f:
            raw = f.read(HARD_STATE_SIZE + 1)
    except FileNotFoundError:
        return HardState()
    if len(raw) != HARD_STATE_SIZE:
        raise StorageCorrupted(path, 0, f"hard state file is {os.path.getsize(path)} bytes, "
                               f"expected {HARD_STATE_SIZE}")
    magic, version, term, vote, checksum = HARD_STATE_FORMAT.unpack(raw)
    if magic != HARD_STATE_MAGIC:
        raise StorageCorrupted(path, 0, f"bad hard state magic {magic!r}")
    if crc32(raw[:-4]) != checksum:
        raise StorageCorrupted(path, HARD_STATE_SIZE - 4, "hard state checksum mismatch")
    if version != HARD_STATE_VERSION:
        raise StorageCorrupted(path, 4, f"unsupported hard state format version {version}")
    if vote < NO_VOTE:
        raise StorageCorrupted(path, 16, f"invalid vote {vote}")
    return HardState(term=term, vote=vote)


def save_hard_state(ops: FileOps, tmp_path: str, path: str, state: HardState) -> None:
    """Durably replace the hard state: temp file, fsync, rename, fsync of the directory."""
    write_new_file(ops, tmp_path, path, [encode_hard_state(state)])
