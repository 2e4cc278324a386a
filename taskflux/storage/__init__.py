"""The durable storage engine: segmented log, hard state, snapshot and data-directory lock.

See docs/storage.md for the layout and every byte of the formats.
"""

from taskflux.storage.disk import (
    DEFAULT_HARD_LIMIT_BYTES,
    DEFAULT_SOFT_LIMIT_BYTES,
    DiskStorage,
)
from taskflux.storage.errors import DataDirLocked, StorageCorrupted
from taskflux.storage.records import DEFAULT_MAX_RECORD_BYTES

__all__ = [
    "DEFAULT_HARD_LIMIT_BYTES",
    "DEFAULT_MAX_RECORD_BYTES",
    "DEFAULT_SOFT_LIMIT_BYTES",
    "DataDirLocked",
    "DiskStorage",
    "StorageCorrupted",
]
