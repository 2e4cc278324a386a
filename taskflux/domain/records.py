"""A record of a queue: its per-queue id, its priority and its opaque payload."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Record:
    """One stored record. Ids are per queue, the first is 1, never reused within a queue instance."""

    id: int
    priority: int
    payload: bytes
