"""ReadIndex bookkeeping of a leader: reads waiting for a heartbeat round to confirm leadership."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class PendingRead:
    """A read registered at ``index`` (the commit index when it arrived), with the peers that acked."""

    context: bytes
    index: int
    acks: set[int] = field(default_factory=set)


class ReadOnly:
    """Pending reads, in arrival order. A heartbeat round acknowledged by a quorum for one read
    confirms it and every read registered before it (the leader was still leader after all of them)."""

    def __init__(self) -> None:
        self._pending: dict[bytes, PendingRead] = {}

    def __contains__(self, context: bytes) -> bool:
        return context in self._pending

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, context: bytes, index: int, self_id: int) -> None:
        self._pending[context] = PendingRead(context, index, {self_id})

    def last_context(self) -> bytes:
        """The context to put in the next heartbeat (the newest read), or b"" when none waits."""
        return next(reversed(self._pending)) if self._pending else b""

    def ack(self, context: bytes, peer: int, voters: frozenset[int], quorum: int) -> list[PendingRead]:
        """Record ``peer``'s ack; the reads confirmed by it (acks from a quorum of ``voters``), oldest first
        (possibly none)."""
        read = self._pending.get(context)
        if read is None:
            return []
        read.acks.add(peer)
        if len(read.acks & voters) < quorum:
            return []
        confirmed: list[PendingRead] = []
        for key in list(self._pending):
            confirmed.append(self._pending.pop(key))
            if key == context:
                break
        return confirmed

    def drain(self) -> list[PendingRead]:
        """Every pending read (leadership is lost: they are refused)."""
        reads = list(self._pending.values())
        self._pending.clear()
        return reads
