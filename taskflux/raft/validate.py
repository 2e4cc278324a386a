"""Sanity checks of messages from peers: anything a correct peer could never send is dropped."""

from __future__ import annotations

from taskflux.raft.members import MEMBERS_PREFIX, Members, MembershipError, members_of
from taskflux.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from taskflux.raft.types import Entry

_KNOWN = (
    RequestVote,
    RequestVoteResponse,
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    TimeoutNow,
)


def _nat(*values: object) -> bool:
    """All values are ints (not bools) and not negative."""
    return all(type(v) is int and v >= 0 for v in values)


def is_valid(m: Message, self_id: int) -> bool:
    """Whether ``m`` is well formed and addressed to ``self_id`` from another node. The sender need not be a
    member in this node's eyes: a node that has not yet appended the change that added a peer still hears
    from it (the node runtime decides which peers may connect at all)."""
    if not isinstance(m, _KNOWN):
        return False
    if not _nat(m.src, m.dst, m.term) or m.src == self_id or m.dst != self_id:
        return False
    if isinstance(m, RequestVote):
        return _nat(m.last_log_index, m.last_log_term) and m.last_log_term <= m.term
    if isinstance(m, AppendEntries):
        return _valid_append(m)
    if isinstance(m, AppendEntriesResponse):
        return _nat(m.match_index, m.reject_index, m.hint_term, m.hint_index)
    if isinstance(m, Heartbeat):
        return _nat(m.commit) and isinstance(m.context, bytes)
    if isinstance(m, HeartbeatResponse):
        return isinstance(m.context, bytes)
    if isinstance(m, InstallSnapshot):
        return (
            _nat(m.snapshot_index, m.snapshot_term, m.offset, m.total_size)
            and m.snapshot_index > 0
            and 0 < m.snapshot_term <= m.term
            and isinstance(m.data, bytes)
            and m.offset + len(m.data) <= m.total_size
            and (m.members is None or isinstance(m.members, Members))
        )
    if isinstance(m, InstallSnapshotResponse):
        return _nat(m.snapshot_index, m.offset, m.match_index)
    return True


def _valid_append(m: AppendEntries) -> bool:
    if not _nat(m.prev_log_index, m.prev_log_term, m.leader_commit) or m.prev_log_term > m.term:
        return False
    if m.prev_log_index == 0 and m.prev_log_term != 0:
        return False
    if not isinstance(m.entries, tuple):
        return False
    expected_index, min_term = m.prev_log_index + 1, m.prev_log_term
    for entry in m.entries:
        if not isinstance(entry, Entry) or not isinstance(entry.data, bytes) or type(entry.term) is not int:
            return False
        if entry.index != expected_index or not min_term <= entry.term <= m.term or entry.term == 0:
            return False
        if entry.data[:1] == b"\x00" and entry.data.startswith(MEMBERS_PREFIX):
            try:
                members_of(entry.data)
            except MembershipError:
                return False
        expected_index, min_term = expected_index + 1, entry.term
    return True
