"""The leader's half of the core: heartbeats, check-quorum, replication with flow control,
snapshots in chunks, the commit rule and ReadIndex. Mixed into ``Raft`` (taskflux.raft.core)."""

from __future__ import annotations

from collections.abc import Callable

from taskflux.raft.config import RaftConfig
from taskflux.raft.log import RaftLog
from taskflux.raft.members import Members
from taskflux.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    TimeoutNow,
)
from taskflux.raft.progress import Progress, ProgressState
from taskflux.raft.read_only import ReadOnly
from taskflux.raft.ready import NO_LEADER, ReadState, Role

_FROM_LEADER = (AppendEntries, Heartbeat, InstallSnapshot)


class LeaderRole:
    """The leader's tick and step handlers and what they send. State lives in ``Raft``."""

    config: RaftConfig
    id: int
    peers: tuple[int, ...]
    members: Members
    log: RaftLog
    role: Role
    current_term: int
    ticks: int
    heartbeat_elapsed: int
    election_elapsed: int
    progress: dict[int, Progress]
    lead_transferee: int
    read_only: ReadOnly
    anomalies: int
    _reads_before_commit: list[bytes]
    _read_states: list[ReadState]
    _append_pending: bool
    _send: Callable[[Message], None]
    _become_follower: Callable[[int, int], None]
    _heard_recently: Callable[[int], bool]
    _forget_departed: Callable[[], None]

    def _tick_leader(self) -> None:
        cfg = self.config
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if cfg.check_quorum:
            voters = self.members.voters
            heard = sum(1 for p in voters if p == self.id or self._heard_recently(p))
            if heard < self.members.quorum:
                self._become_follower(self.current_term, NO_LEADER)
                return
        if self.election_elapsed >= cfg.election_ticks:
            self.election_elapsed = 0
            self.lead_transferee = NO_LEADER  # a transfer that did not finish in time is abandoned
        if self.heartbeat_elapsed >= cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _step_leader(self, m: Message) -> None:
        pr = self.progress.get(m.src)
        if pr is None:
            return  # a node that is no member (any more): a removed node's late answer
        if isinstance(m, AppendEntriesResponse | HeartbeatResponse | InstallSnapshotResponse):
            pr.last_heard = self.ticks
        if isinstance(m, AppendEntriesResponse):
            self._handle_append_response(m, pr)
        elif isinstance(m, HeartbeatResponse):
            self._handle_heartbeat_response(m, pr)
        elif isinstance(m, InstallSnapshotResponse):
            self._handle_snapshot_response(m, pr)
        elif isinstance(m, (*_FROM_LEADER, TimeoutNow)):
            self.anomalies += 1  # another leader in our term: impossible in an honest cluster

    def _handle_append_response(self, m: AppendEntriesResponse, pr: Progress) -> None:
        log = self.log
        if m.success:
            if m.match_index > log.last_index():
                self.anomalies += 1
                return
            if pr.maybe_update(m.match_index):
                if pr.state == ProgressState.PROBE:
                    pr.become_replicate()
                elif pr.state == ProgressState.SNAPSHOT and pr.match_index >= pr.snapshot_index:
                    pr.become_probe()
                self._maybe_commit()
                if m.src == self.lead_transferee and pr.match_index == log.last_index():
                    self._send(TimeoutNow(self.id, m.src, self.current_term))
            self._append_pending = True
        elif m.reject_index:
            if m.reject_index > log.last_index():
                self.anomalies += 1
                return
            if m.hint_term == 0 and m.hint_index <= pr.match_index:
                pr.lost_entries(m.hint_index)
                self._append_pending = True
                return
            if m.hint_term == 0:
                hint_next = m.hint_index
            else:
                found = log.last_index_of_term(m.hint_term, m.reject_index)
                hint_next = found + 1 if found else m.hint_index
            if pr.maybe_decrease(m.reject_index, hint_next):
                self._append_pending = True

    def _handle_heartbeat_response(self, m: HeartbeatResponse, pr: Progress) -> None:
        pr.probe_sent = False
        if pr.state == ProgressState.SNAPSHOT:
            self._send_snapshot_chunk(m.src, pr)  # a lost chunk is sent again
        elif pr.match_index < self.log.last_index():
            if pr.state == ProgressState.REPLICATE and pr.is_paused():
                pr.free_one_inflight()
            # An empty append at next_index-1 tells whether entries sent in between were lost.
            self._send_append(m.src, allow_empty=True)
        if m.context:
            for read in self.read_only.ack(m.context, m.src, self.members.voters, self.members.quorum):
                self._read_states.append(ReadState(read.context, read.index))

    def _handle_snapshot_response(self, m: InstallSnapshotResponse, pr: Progress) -> None:
        if m.done:
            if m.match_index > self.log.last_index():
                self.anomalies += 1
                return
            pr.maybe_update(m.match_index)
            if pr.state == ProgressState.SNAPSHOT:
                pr.become_probe()
            self._maybe_commit()
            self._append_pending = True
        elif pr.state == ProgressState.SNAPSHOT and m.snapshot_index == pr.snapshot_index:
            if m.offset > self.log.storage.snapshot_size():
                self.anomalies += 1
                return
            pr.snapshot_offset = m.offset
            self._send_snapshot_chunk(m.src, pr)

    def _maybe_commit(self) -> None:
        """Commit what a quorum of the voters in force holds (a leader that removed itself does not count)."""
        progress = self.progress
        matches = sorted((progress[v].match_index for v in self.members.voters if v in progress), reverse=True)
        quorum = self.members.quorum
        if len(matches) < quorum:
            return
        committed = self.log.maybe_commit(matches[quorum - 1], self.current_term)
        if not committed:
            return
        if self._reads_before_commit:
            waiting, self._reads_before_commit = self._reads_before_commit, []
            for context in waiting:
                self._start_read(context)
        if self.log.commit_index >= self.log.last_members_index():
            if self.id not in self.members.voters:
                self._hand_over_removed()
            elif len(self.peers) > len(self.members.ids) - 1:
                self._forget_departed()

    def _hand_over_removed(self) -> None:
        """The change that removed this leader has committed: tell the most up-to-date voter to campaign
        at once (when it holds the whole log), and step down."""
        last = self.log.last_index()
        best = max(self.members.voters, key=lambda v: (self.progress[v].match_index, -v))
        if self.progress[best].match_index == last:
            self._send(TimeoutNow(self.id, best, self.current_term))
        self._become_follower(self.current_term, NO_LEADER)

    def _start_read(self, context: bytes) -> None:
        if self.members.voters == {self.id}:
            self._read_states.append(ReadState(context, self.log.commit_index))
            return
        self.read_only.add(context, self.log.commit_index, self.id)
        self._broadcast_heartbeat()

    def _broadcast_heartbeat(self) -> None:
        for message in self._heartbeat_messages():
            self._send(message)

    def _heartbeat_messages(self) -> list[Heartbeat]:
        """One heartbeat per peer from the current state (changes nothing): the newest pending read's
        context, and a commit index never above what the peer is known to hold."""
        context = self.read_only.last_context()
        commit = self._commit_for_peers()
        term = self.current_term
        return [
            Heartbeat(self.id, peer, term, min(self.progress[peer].match_index, commit), context)
            for peer in self.peers
        ]

    def _flush_appends(self) -> None:
        """Count what proposals added since the last Ready as the leader's own copy, and send each peer what
        it lacks, once per Ready: what proposals added (many proposals per AppendEntries), and what answers
        made sendable (acknowledgements that freed the pipeline, rejections that moved ``next_index``). An
        answer only marks the sending as due, so a turn that handles several answers and proposals sends each
        peer one AppendEntries, not one per event.

        The leader's copy counts before it is durable: the Ready that hands these entries out persists them
        before it applies anything, so an entry this node applies or answers for is durable here too. A
        single node thus commits and applies its proposals in one Ready. What the leader tells followers
        is capped at its durable index (``_commit_for_peers``): a follower applies only entries a majority
        holds durably."""
        if self._append_pending:
            self._append_pending = False
            if self.role == Role.LEADER:
                if self.progress[self.id].maybe_update(self.log.last_index()):
                    self._maybe_commit()
                if self.role != Role.LEADER:
                    return  # it removed itself, and that change just committed
                for peer in self.peers:
                    self._send_appends(peer)

    def _commit_for_peers(self) -> int:
        """The commit index to tell followers: never past this leader's durable log (see _flush_appends)."""
        return min(self.log.commit_index, self.log.stable_index())

    def _send_appends(self, to: int) -> None:
        pr = self.progress[to]
        while self._send_append(to) and pr.state == ProgressState.REPLICATE:
            pass

    def _send_append(self, to: int, allow_empty: bool = False) -> bool:
        """Send one AppendEntries from ``next_index`` (or start a snapshot); False if nothing went out."""
        pr = self.progress[to]
        if pr.is_paused():
            return False
        log = self.log
        prev_index = pr.next_index - 1
        prev_term = log.term(prev_index)
        entries = None
        if prev_term is not None:
            entries = log.entries(pr.next_index, log.last_index() + 1, self.config.replication_max_send_size)
        if prev_term is None or entries is None:
            if log.storage.snapshot_meta().index < pr.next_index - 1 or log.pending_snapshot is not None:
                return False  # nothing to send yet (our own snapshot is not persisted)
            meta = log.storage.snapshot_meta()
            pr.become_snapshot(meta.index, meta.term)
            self._send_snapshot_chunk(to, pr)
            return True
        if not entries and not allow_empty:
            return False
        self._send(AppendEntries(self.id, to, self.current_term, prev_index, prev_term, tuple(entries),
                                 self._commit_for_peers()))  # fmt: skip
        pr.sent_entries(entries[-1].index if entries else prev_index, sum(len(e.data) for e in entries))
        return True

    def _send_snapshot_chunk(self, to: int, pr: Progress) -> None:
        storage = self.log.storage
        meta = storage.snapshot_meta()
        if (meta.index, meta.term) != (pr.snapshot_index, pr.snapshot_term):
            pr.become_snapshot(meta.index, meta.term)  # compacted again meanwhile: start over
        size = storage.snapshot_size()
        data = storage.read_snapshot(pr.snapshot_offset, self.config.snapshot_chunk_size)
        done = pr.snapshot_offset + len(data) >= size
        self._send(InstallSnapshot(self.id, to, self.current_term, meta.index, meta.term, pr.snapshot_offset,
                                   data, size, done, meta.members))  # fmt: skip
