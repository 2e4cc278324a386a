"""The settings of one raft node: its id, the initial membership, timing in ticks, flow-control bounds."""

from __future__ import annotations

from dataclasses import dataclass

from taskflux.raft.members import Members


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Settings of a raft node.

    ``initial_members``: the membership of a brand-new cluster, in force until the log or a snapshot carries
    one (an empty ``Members()``: a node joining an existing cluster, which knows nothing until a leader
    reaches it). When None, the initial membership is ``cluster_size`` voters with ids 0..cluster_size-1.

    Timing is in ticks (the driver calls ``tick()`` at a fixed interval, e.g. every 100 ms). A
    follower campaigns after a randomized timeout drawn uniformly from
    ``[election_ticks, 2 * election_ticks)``; a leader sends heartbeats every ``heartbeat_ticks`` and,
    with check-quorum, steps down when it has not heard from a quorum within ``election_ticks``.
    """

    node_id: int
    cluster_size: int
    election_ticks: int = 10
    heartbeat_ticks: int = 2
    pre_vote: bool = True
    check_quorum: bool = True
    replication_max_send_size: int = 1024 * 1024  # bytes of entries per AppendEntries (at least one entry)
    max_inflight: int = 64  # unacknowledged AppendEntries per follower
    max_inflight_bytes: int = 16 * 1024 * 1024  # unacknowledged entry bytes per follower
    snapshot_chunk_size: int = 256 * 1024  # bytes per InstallSnapshot chunk
    max_apply_bytes: int = 16 * 1024 * 1024  # committed entry bytes per Ready (at least one entry)
    promote_max_lag: int = 1000  # a learner is caught up (may be promoted) this many entries behind at most
    initial_members: Members | None = None

    def __post_init__(self) -> None:
        if self.initial_members is None:
            if self.cluster_size < 1:
                raise ValueError(f"cluster_size must be at least 1, got {self.cluster_size}")
            if not 0 <= self.node_id < self.cluster_size:
                raise ValueError(f"node_id {self.node_id} is not in 0..{self.cluster_size - 1}")
        elif self.node_id < 0:
            raise ValueError(f"node_id must not be negative, got {self.node_id}")
        if self.heartbeat_ticks < 1 or self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("need 1 <= heartbeat_ticks < election_ticks")
        for name in ("replication_max_send_size", "max_inflight", "max_inflight_bytes", "snapshot_chunk_size",
                     "promote_max_lag"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")

    @property
    def bootstrap_members(self) -> Members:
        """The membership in force while neither the log nor a snapshot carries one."""
        if self.initial_members is not None:
            return self.initial_members
        return Members.initial([""] * self.cluster_size)
