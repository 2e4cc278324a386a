"""The messages raft nodes exchange. Plain values (ints, bytes, bools, tuples of Entry, Members) so that a
wire codec can encode every field; ``src``/``dst`` are node ids and ``term`` is the
sender's current term (for a pre-vote request: the term the sender would campaign at)."""

from __future__ import annotations

from dataclasses import dataclass

from taskflux.raft.members import Members
from taskflux.raft.types import Entry


@dataclass(frozen=True, slots=True)
class RequestVote:
    """A candidate asks for a vote (or, with ``pre_vote``, whether it would get one). ``transfer``
    marks a campaign started by leadership transfer: it overrides the receiver's leader lease."""

    src: int
    dst: int
    term: int
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class RequestVoteResponse:
    """The answer to RequestVote; a granted pre-vote carries the request's (future) term."""

    src: int
    dst: int
    term: int
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendEntries:
    """The leader replicates ``entries`` after (prev_log_index, prev_log_term) and tells its commit index."""

    src: int
    dst: int
    term: int
    prev_log_index: int
    prev_log_term: int
    entries: tuple[Entry, ...]
    leader_commit: int


@dataclass(frozen=True, slots=True)
class AppendEntriesResponse:
    """On success ``match_index`` is the last index known to match the leader's log. On rejection
    ``reject_index`` is the rejected prev_log_index, and the hint says where the follower's log
    differs: ``hint_term`` is the term of its entry at that index (0 when the log is shorter) and
    ``hint_index`` the first index of that term in its log (its last index + 1 when shorter)."""

    src: int
    dst: int
    term: int
    success: bool
    match_index: int = 0
    reject_index: int = 0
    hint_term: int = 0
    hint_index: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Keeps followers from campaigning; ``commit`` is never above the follower's known match.
    ``context`` is the ReadIndex round this heartbeat confirms (empty: none)."""

    src: int
    dst: int
    term: int
    commit: int
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    """Echoes the heartbeat's ReadIndex context."""

    src: int
    dst: int
    term: int
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """One chunk of the leader's snapshot covering (snapshot_index, snapshot_term): bytes
    ``[offset, offset + len(data))`` of ``total_size``; ``done`` marks the last chunk. ``members``: the
    membership in force at ``snapshot_index`` (in every chunk; None only from a snapshot that predates
    recorded memberships)."""

    src: int
    dst: int
    term: int
    snapshot_index: int
    snapshot_term: int
    offset: int
    data: bytes
    total_size: int
    done: bool
    members: Members | None = None


@dataclass(frozen=True, slots=True)
class InstallSnapshotResponse:
    """``offset`` is how many bytes of the snapshot the follower holds (the next chunk to send).
    ``done`` means the follower has the whole snapshot durable (or already had what it covers):
    its log then matches the leader's up to ``match_index``."""

    src: int
    dst: int
    term: int
    snapshot_index: int
    offset: int = 0
    done: bool = False
    match_index: int = 0


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leadership transfer: the receiver campaigns at once, skipping pre-vote and the lease."""

    src: int
    dst: int
    term: int


Message = (
    RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | Heartbeat
    | HeartbeatResponse
    | InstallSnapshot
    | InstallSnapshotResponse
    | TimeoutNow
)

# The messages a leader sends from its log and term: they never depend on state not yet persisted,
# so the driver may send them while the same Ready is being made durable.
LEADER_MESSAGES = (AppendEntries, Heartbeat, InstallSnapshot, TimeoutNow)


def message_size(message: Message) -> int:
    """A rough size in bytes, for flow control and statistics."""
    if isinstance(message, AppendEntries):
        return 48 + sum(len(e.data) + 16 for e in message.entries)
    if isinstance(message, InstallSnapshot):
        return 64 + len(message.data)
    return 32
