"""Progress: what a leader knows of one follower's log, and how it paces replication to it.

PROBE: the leader does not know where the follower's log matches; it sends one AppendEntries and
waits for the answer (or a heartbeat response) before sending again.
REPLICATE: the logs match up to ``match_index``; the leader streams entries optimistically
(``next_index`` runs ahead), at most ``max_inflight`` messages / ``max_inflight_bytes`` unacknowledged.
SNAPSHOT: the follower needs entries the leader compacted away; the leader sends its snapshot in
chunks, one at a time, and resumes probing once the follower has it.
"""

from __future__ import annotations

from collections import deque
from enum import IntEnum


class ProgressState(IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Progress:
    """The leader's view of one peer (match_index, next_index, flow control, activity)."""

    __slots__ = (
        "inflight",
        "inflight_bytes",
        "last_heard",
        "match_index",
        "max_inflight",
        "max_inflight_bytes",
        "next_index",
        "probe_sent",
        "snapshot_index",
        "snapshot_offset",
        "snapshot_term",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int, max_inflight_bytes: int) -> None:
        self.match_index = 0
        self.next_index = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.last_heard = 0  # the leader's tick count when this peer last answered
        self.max_inflight = max_inflight
        self.max_inflight_bytes = max_inflight_bytes
        self.inflight: deque[tuple[int, int]] = deque()  # (last index sent, bytes)
        self.inflight_bytes = 0
        self.snapshot_index = 0
        self.snapshot_term = 0
        self.snapshot_offset = 0

    def __repr__(self) -> str:
        return (
            f"Progress({self.state.name} match={self.match_index} next={self.next_index} "
            f"inflight={len(self.inflight)})"
        )

    def _reset(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.inflight.clear()
        self.inflight_bytes = 0
        self.snapshot_index = self.snapshot_term = self.snapshot_offset = 0

    def become_probe(self) -> None:
        self._reset(ProgressState.PROBE)
        self.next_index = self.match_index + 1

    def become_replicate(self) -> None:
        self._reset(ProgressState.REPLICATE)
        self.next_index = self.match_index + 1

    def become_snapshot(self, index: int, term: int) -> None:
        self._reset(ProgressState.SNAPSHOT)
        self.snapshot_index = index
        self.snapshot_term = term

    def is_paused(self) -> bool:
        """Whether a new AppendEntries must wait."""
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return len(self.inflight) >= self.max_inflight or self.inflight_bytes >= self.max_inflight_bytes
        return True

    def sent_entries(self, last_index: int, size: int) -> None:
        """An AppendEntries with entries up to ``last_index`` (``size`` bytes) went out."""
        if self.state == ProgressState.REPLICATE:
            if last_index >= self.next_index:
                self.next_index = last_index + 1
                self.inflight.append((last_index, size))
                self.inflight_bytes += size
        elif self.state == ProgressState.PROBE:
            self.probe_sent = True

    def maybe_update(self, index: int) -> bool:
        """A success up to ``index``; False if it brings nothing new (stale or duplicate)."""
        updated = index > self.match_index
        if updated:
            self.match_index = index
            self.probe_sent = False
        self.next_index = max(self.next_index, index + 1)
        while self.inflight and self.inflight[0][0] <= index:
            self.inflight_bytes -= self.inflight.popleft()[1]
        return updated

    def lost_entries(self, next_index: int) -> None:
        """The follower's log ends before ``next_index`` although it acknowledged more: it lost its data
        (a node replaced under the same id). Probe again from there. Lowering ``match_index`` is safe:
        it only delays later commits (a stale rejection that lands here costs a resend, nothing more)."""
        self.match_index = next_index - 1
        self.become_probe()

    def maybe_decrease(self, rejected: int, hint_next: int) -> bool:
        """A rejection of prev_log_index ``rejected``; False if it is stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match_index:
                return False
        elif self.next_index - 1 != rejected:
            return False
        self.become_probe()
        self.next_index = max(self.match_index + 1, min(rejected, hint_next))
        return True

    def free_one_inflight(self) -> None:
        if self.inflight:
            self.inflight_bytes -= self.inflight.popleft()[1]
