"""Raft: the consensus core of one node, a deterministic state machine without I/O.

Inputs: ``tick()``, ``step(message)``, ``propose(data)``, ``propose_conf_change(change)``,
``read_index(context)``, ``transfer_leadership(to)``, ``compacted(meta)``. Outputs: ``ready()`` returns a
Ready batch for the driver, which handles it (see ``Ready``) and calls ``advance()``. Roles switch by swapping the tick
and step handlers; terms are compared once, in ``step()``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from taskflux.raft.coalesce import coalesce_append_responses
from taskflux.raft.config import RaftConfig
from taskflux.raft.genesis import genesis_data
from taskflux.raft.leader import LeaderRole
from taskflux.raft.log import RaftLog
from taskflux.raft.members import MEMBERS_PREFIX, ChangeKind, ConfChange, Members, MembershipError, members_data
from taskflux.raft.messages import (
    LEADER_MESSAGES,
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
from taskflux.raft.progress import Progress, ProgressState
from taskflux.raft.read_only import ReadOnly
from taskflux.raft.ready import NO_LEADER, ReadState, Ready, Role, Snapshot, SoftState
from taskflux.raft.storage import LogStorage
from taskflux.raft.types import NO_VOTE, Entry, HardState, SnapshotMeta
from taskflux.raft.validate import is_valid

_FROM_LEADER = (AppendEntries, Heartbeat, InstallSnapshot)


class _IncomingSnapshot:
    """A snapshot being received chunk by chunk (kept in memory until complete)."""

    __slots__ = ("data", "index", "term", "total_size")

    def __init__(self, index: int, term: int, total_size: int) -> None:
        self.index, self.term, self.total_size = index, term, total_size
        self.data = bytearray()


class Raft(LeaderRole):
    """One raft node's consensus state (Figure 2 of the paper, plus pre-vote, check-quorum,
    ReadIndex, leadership transfer, snapshots, flow control and membership changes)."""

    def __init__(
        self, config: RaftConfig, storage: LogStorage, rng: random.Random, *, caught_up: bool = True
    ) -> None:
        """``caught_up=False``: this node's data directory started empty and it has not yet caught up from a
        leader (see ``abstain()``); the driver keeps that fact durable."""
        self.config = config
        self.id = config.node_id
        self.log = RaftLog(storage, config.bootstrap_members)
        self.members = self.log.members
        self.peers = tuple(p for p in self.members.ids if p != self.id)  # see _forget_departed
        self._members_unreported = False
        self.log.on_members_changed = self._members_changed
        self._rng = rng
        hard_state = storage.hard_state()
        self.current_term = hard_state.term
        self.voted_for = hard_state.vote
        self.role = Role.FOLLOWER
        self.leader_id = NO_LEADER
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_ticks
        self.ticks = 0  # ticks since this incarnation started (the leader's clock for check-quorum)
        self.votes: dict[int, bool] = {}
        self.progress: dict[int, Progress] = {}
        self.lead_transferee = NO_LEADER
        self.read_only = ReadOnly()
        self._reads_before_commit: list[bytes] = []
        self._incoming: _IncomingSnapshot | None = None
        self._messages: list[Message] = []
        self._messages_after_persist: list[Message] = []
        self._read_states: list[ReadState] = []
        self._append_pending = False
        self._persisted_hard_state = hard_state
        self._handed_soft_state: SoftState | None = None
        self._handed: tuple[HardState, int, SnapshotMeta | None, int] | None = None
        self.caught_up = caught_up
        self.abstaining = False  # refusing votes and pre-votes, not campaigning: see abstain()
        self._caught_up_unreported = False
        self.dropped_messages = 0  # invalid messages from peers
        self.anomalies = 0  # messages an honest cluster never sends (counted, then ignored)
        self._tick_handler: Callable[[], None] = self._tick_election
        self._step_handler: Callable[[Message], None] = self._step_follower
        self._become_follower(self.current_term, NO_LEADER)

    # ------------------------------------------------------------------ public API

    def tick(self) -> None:
        """Advance the logical clock by one tick."""
        self._check_not_in_ready()
        self.ticks += 1
        self._tick_handler()

    def step(self, message: Message) -> None:
        """Handle a message from a peer. Invalid or stale messages are dropped."""
        self._check_not_in_ready()
        if not is_valid(message, self.id):
            self.dropped_messages += 1
            return
        m = message
        if m.term > self.current_term:
            if isinstance(m, RequestVote):
                in_lease = (
                    self.config.check_quorum
                    and self.leader_id != NO_LEADER
                    and self.election_elapsed < self.config.election_ticks
                )
                if in_lease and not m.transfer:
                    return  # we heard from a live leader recently: do not let a returning node depose it
                if not m.pre_vote:
                    self._become_follower(m.term, NO_LEADER)
            elif isinstance(m, RequestVoteResponse) and m.pre_vote and m.granted:
                pass  # a granted pre-vote carries the term we would campaign at
            else:
                self._become_follower(m.term, m.src if isinstance(m, _FROM_LEADER) else NO_LEADER)
        elif m.term < self.current_term:
            if isinstance(m, AppendEntries | Heartbeat):
                # A deposed leader learns the new term (it would otherwise never hear of it).
                self._send(AppendEntriesResponse(self.id, m.src, self.current_term, success=False))
            elif isinstance(m, RequestVote) and m.pre_vote:
                self._send(RequestVoteResponse(self.id, m.src, self.current_term, False, pre_vote=True))
            return
        if isinstance(m, RequestVote):
            self._handle_vote_request(m)
        else:
            self._step_handler(m)

    def abstain(self) -> None:
        """The driver learned that the cluster already has a history while this node has not caught up
        since it started with an empty log (a replaced or wiped node). Until it has caught up from a leader,
        it grants no vote and no pre-vote and does not campaign on its own (a leader's TimeoutNow still
        starts a campaign): its empty log cannot vouch for entries the cluster committed, and a vote from it
        could elect a candidate that lacks one. Caught up means its commit index covers an entry of the
        current leader's term (so every entry committed before that term is in its log); the next Ready
        then says ``caught_up``."""
        if not self.caught_up:
            self.abstaining = True

    def campaign(self) -> None:
        """Start an election now, as if the election timeout had elapsed (no-op on a leader, on a node that
        does not vote, or while abstaining)."""
        self._check_not_in_ready()
        if self.role != Role.LEADER and not self.abstaining:
            self._campaign(pre_vote=self.config.pre_vote, transfer=False)

    def leader_link_closed(self, peer: int) -> None:
        """The driver saw ``peer``'s process close its link to this node (its crash or its stop: a leader ends
        its lease before it closes a link itself). A follower of ``peer`` forgets it, so it no longer refuses
        (pre-)votes on its behalf, and campaigns (pre-vote first) without waiting for its election timeout:
        at once if it has the lowest id among the other nodes (and its pre-vote once more at the next tick),
        otherwise after one more tick per node ranked before it, so that followers learning of the crash
        together do not split the vote. Nothing on any
        other node, or for any other peer (a node that still hears from a live leader keeps refusing)."""
        self._check_not_in_ready()
        if self.role != Role.FOLLOWER or self.leader_id != peer or peer == self.id:
            return
        self.leader_id = NO_LEADER
        rank = sum(1 for other in self.members.voters if other not in (peer, self.id) and other < self.id)
        if rank == 0:
            if not self.abstaining:
                self._campaign(pre_vote=self.config.pre_vote, transfer=False)
            if self.role == Role.PRE_CANDIDATE:
                # Refused by a voter that has not heard of the close yet? One more pre-vote at the next tick,
                # before the node ranked next campaigns.
                self.randomized_election_timeout = 1
        else:
            # The campaign starts at the (rank + 1)th tick from now, at least ``rank`` whole tick intervals away;
            # a leader's message meanwhile restarts the normal timeout.
            self.election_elapsed = max(0, self.randomized_election_timeout - rank - 1)

    def propose(self, data: bytes) -> int | None:
        """Append ``data`` to the log if this node is the leader; its index, or None when refused."""
        self._check_not_in_ready()
        if self.role != Role.LEADER or self.lead_transferee != NO_LEADER:
            return None
        if data[:1] == b"\x00" and data.startswith(MEMBERS_PREFIX):
            raise ValueError("membership entries are proposed with propose_conf_change")
        index = self.log.last_index() + 1
        self.log.append([Entry(index, self.current_term, data)], carries_members=False)
        self._append_pending = True
        return index

    def propose_conf_change(self, change: ConfChange, force: bool = False) -> int:
        """Append the membership ``change`` (in force at once, on every node as soon as it appends it) and
        return its index; it is done when that index commits. Raises MembershipError with the reason when
        the change cannot be made now:

        - this node is not the leader, or a leadership transfer runs;
        - the previous change has not committed, or no entry of this leader's term has (one change at a
          time: see taskflux.raft.members);
        - the change itself is impossible (``Members.apply``: an ADD_LEARNER carries ``members.next_id`` or
          ``NEXT_ID``, and an address no member has);
        - a PROMOTE of a learner that has not caught up (it answered within an election timeout and lags
          at most ``promote_max_lag`` entries);
        - a REMOVE that would leave fewer voters that answered within an election timeout than a quorum of
          the new membership, unless ``force``.

        A leader that removes itself goes on leading until the change commits, without counting its own
        copy, then hands over (TimeoutNow to the most up-to-date voter) and steps down."""
        self._check_not_in_ready()
        if self.role != Role.LEADER:
            raise MembershipError("this node is not the leader", "not_leader")
        if self.lead_transferee != NO_LEADER:
            raise MembershipError(f"leadership is being transferred to node {self.lead_transferee}", "not_leader")
        log = self.log
        if log.last_members_index() > log.commit_index:
            raise MembershipError(f"the previous membership change (index {log.last_members_index()}) "
                                  "has not committed yet", "change_in_progress")  # fmt: skip
        if log.term(log.commit_index) != self.current_term:
            raise MembershipError("this leader has not committed an entry of its term yet", "change_in_progress")
        new = self.members.apply(change)
        live = {p for p in self.progress if p == self.id or self._heard_recently(p)}
        if change.kind is ChangeKind.PROMOTE:
            pr = self.progress[change.node_id]
            lag = log.last_index() - pr.match_index
            if change.node_id not in live or pr.state != ProgressState.REPLICATE or lag > self.config.promote_max_lag:
                raise MembershipError(f"node {change.node_id} has not caught up (it holds the log to index "
                                      f"{pr.match_index} of {log.last_index()})", "not_caught_up")  # fmt: skip
        if change.kind is ChangeKind.REMOVE and not force:
            reachable = len(new.voters & live)
            if reachable < new.quorum:
                raise MembershipError(
                    f"removing node {change.node_id} would leave {reachable} reachable voter(s) of "
                    f"{len(new.voters)}, fewer than a quorum ({new.quorum}); force it to remove it anyway",
                    "would_lose_quorum",
                )
        index = log.last_index() + 1
        log.append([Entry(index, self.current_term, members_data(new))])
        self._append_pending = True
        return index

    def read_index(self, context: bytes) -> bool:
        """Start a linearizable read; its ReadState comes in a later Ready. False when refused
        (not the leader, leadership being transferred, or ``context`` already pending)."""
        self._check_not_in_ready()
        if self.role != Role.LEADER or self.lead_transferee != NO_LEADER:
            return False
        if context in self.read_only or context in self._reads_before_commit:
            return False
        if self.log.term(self.log.commit_index) != self.current_term:
            # The commit index is only known to be current once an entry of this term commits.
            self._reads_before_commit.append(context)
        else:
            self._start_read(context)
        return True

    def transfer_leadership(self, to: int) -> bool:
        """Hand leadership to ``to``: catch its log up, then tell it to campaign (TimeoutNow).
        Proposals are refused until the transfer ends (or times out after an election timeout)."""
        self._check_not_in_ready()
        if self.role != Role.LEADER or to not in self.members.voters or to not in self.progress or to == self.id:
            return False
        if self.lead_transferee == to:
            return True
        self.lead_transferee = to
        self.election_elapsed = 0
        if self.progress[to].match_index == self.log.last_index():
            self._send(TimeoutNow(self.id, to, self.current_term))
        else:
            self._send_append(to)
        return True

    def compacted(self, meta: SnapshotMeta) -> None:
        """The compaction hook: the driver saved a snapshot of its applied state up to ``meta``
        (``storage.save_snapshot``). Followers that fall behind ``meta.index`` now get the snapshot."""
        self._check_not_in_ready()
        if meta.index > self.log.applied_index:
            raise RuntimeError(
                f"snapshot at {meta.index} covers entries not applied (applied {self.log.applied_index})"
            )
        if self.log.storage.snapshot_meta().index < meta.index:
            raise RuntimeError(f"compacted({meta}) called before storage.save_snapshot")
        if meta.members != self.log.members_at(meta.index):
            raise RuntimeError(f"a snapshot at {meta.index} must carry the membership then in force "
                               "(build it with snapshot_meta)")  # fmt: skip
        self.log.compacted_to(meta)

    def snapshot_meta(self, index: int) -> SnapshotMeta:
        """What a snapshot of the state applied up to ``index`` covers: (index, its term, the membership in
        force there). For the driver's compaction: ``storage.save_snapshot(raft.snapshot_meta(i), …)``."""
        term = self.log.term(index)
        if term is None or index > self.log.commit_index:
            raise RuntimeError(f"no snapshot at {index}: not committed, or compacted away")
        return SnapshotMeta(index, term, self.log.members_at(index))

    # The two calls a driver may make between ready() and advance(): neither changes the core, so a
    # driver whose loop waits for a slow disk can keep the cluster's liveness signals flowing meanwhile.

    def heartbeats(self) -> list[Heartbeat]:
        """A leader's heartbeats to every peer, as its next tick would send them; empty on any other
        node. Changes nothing: a leader whose driver waits for a slow disk sends these so that its
        followers do not start an election meanwhile."""
        if self.role != Role.LEADER or self.current_term != self._persisted_hard_state.term:
            return []
        return self._heartbeat_messages()

    def answer_heartbeat(self, m: Message) -> HeartbeatResponse | None:
        """The answer this follower's ``step(m)`` would send to its leader's heartbeat ``m`` (None when
        ``m`` is anything else, or not from the leader of this node's persisted term). Changes nothing:
        a follower whose driver waits for a slow disk answers with it so that its leader keeps its quorum
        meanwhile; ``m`` is still stepped afterwards (a second answer is harmless)."""
        if (
            not isinstance(m, Heartbeat)
            or self.role != Role.FOLLOWER
            or m.term != self.current_term
            or m.term != self._persisted_hard_state.term
            or m.src != self.leader_id
            or not is_valid(m, self.id)
        ):
            return None
        return HeartbeatResponse(self.id, m.src, m.term, m.context)

    @property
    def soft_state(self) -> SoftState:
        return SoftState(self.role, self.current_term, self.leader_id)

    @property
    def hard_state(self) -> HardState:
        return HardState(self.current_term, self.voted_for)

    def has_ready(self) -> bool:
        """Whether ``ready()`` would hand out any work."""
        self._flush_appends()
        self._note_caught_up()
        log = self.log
        return bool(
            self._caught_up_unreported
            or self._members_unreported
            or self._messages
            or self._messages_after_persist
            or log.unstable
            or log.pending_snapshot is not None
            or self._read_states
            or self.hard_state != self._persisted_hard_state
            or self.soft_state != self._handed_soft_state
            or log.commit_index > max(log.applied_index, log.snapshot_index())
        )

    def ready(self) -> Ready:
        """The next batch of work for the driver; ``advance()`` must follow before any other call."""
        self._check_not_in_ready()
        self._flush_appends()
        self._note_caught_up()
        hard_state = self.hard_state
        persisted_term = self._persisted_hard_state.term
        for m in self._messages:
            assert m.term <= persisted_term, f"{m} sent before term {m.term} was persisted"
        snapshot = None
        if self.log.pending_snapshot is not None:
            snapshot = Snapshot(*self.log.pending_snapshot)
        entries = tuple(self.log.unstable)
        committed = tuple(self.log.committed_to_apply(self.config.max_apply_bytes))
        changed = hard_state != self._persisted_hard_state
        soft_state = self.soft_state
        ready = Ready(
            soft_state=soft_state,
            messages=tuple(self._messages),
            snapshot=snapshot,
            hard_state=hard_state if changed else None,
            entries=entries,
            must_sync=bool(entries) or changed or snapshot is not None,
            messages_after_persist=coalesce_append_responses(self._messages_after_persist),
            committed_entries=committed,
            read_states=tuple(self._read_states),
            caught_up=self._caught_up_unreported,
            members=self.members if self._members_unreported else None,
        )
        self._caught_up_unreported = False
        self._members_unreported = False
        self._handed = (
            hard_state,
            entries[-1].index if entries else 0,
            snapshot.meta if snapshot else None,
            committed[-1].index if committed else 0,
        )
        self._handed_soft_state = soft_state
        self._messages = []
        self._messages_after_persist = []
        self._read_states = []
        return ready

    def advance(self) -> None:
        """The driver has handled the last Ready: persisted, sent and applied it."""
        if self._handed is None:
            raise RuntimeError("advance() without a ready()")
        hard_state, last_entry, snapshot, applied = self._handed
        self._handed = None
        self._persisted_hard_state = hard_state
        if snapshot is not None:
            self.log.snapshot_persisted()
            self.log.applied_to(snapshot.index)
        if last_entry:
            self.log.stable_to(last_entry)
        if applied:
            self.log.applied_to(applied)
        if self.role == Role.LEADER and self.progress[self.id].maybe_update(self.log.stable_index()):
            self._maybe_commit()

    def _note_caught_up(self) -> None:
        if self.caught_up:
            return
        commit = self.log.commit_index
        # Commit indexes only advance from a leader's messages (or as the leader): covering an entry of the
        # current term means holding everything committed before this term.
        if commit and self.log.term(commit) == self.current_term:
            self.caught_up = True
            self.abstaining = False
            self._caught_up_unreported = True

    def _members_changed(self, members: Members) -> None:
        """A membership entry was appended (or truncated away, or a snapshot replaced the log): it is in
        force from now on. A leader starts tracking new members and forgets removed ones."""
        self.members = members
        self._members_unreported = True
        if self.role == Role.LEADER:
            for p in members.ids:
                if p not in self.progress:
                    self.progress[p] = self._new_progress()
            if self.lead_transferee not in members.voters:
                self.lead_transferee = NO_LEADER
        self._forget_departed()

    def _forget_departed(self) -> None:
        """The nodes this node sends to: the members in force and, on a leader, the nodes a change not yet
        committed removed (they still get the log, so that a removed node learns of its removal and stops
        campaigning); their progress goes once the change has committed."""
        members = self.members
        if self.role == Role.LEADER and self.log.last_members_index() <= self.log.commit_index:
            for p in [p for p in self.progress if p != self.id and p not in members.ids]:
                del self.progress[p]
        keep = set(members.ids) | (set(self.progress) if self.role == Role.LEADER else set())
        self.peers = tuple(sorted(keep - {self.id}))

    def _new_progress(self) -> Progress:
        cfg = self.config
        pr = Progress(self.log.last_index() + 1, cfg.max_inflight, cfg.max_inflight_bytes)
        pr.last_heard = self.ticks
        return pr

    def _heard_recently(self, peer: int) -> bool:
        """A leader's view: ``peer`` answered within an election timeout."""
        pr = self.progress.get(peer)
        return pr is not None and self.ticks - pr.last_heard < self.config.election_ticks

    def _check_not_in_ready(self) -> None:
        if self._handed is not None:
            raise RuntimeError("the driver must call advance() before using the core again")

    # ------------------------------------------------------------------ roles

    def _reset(self, term: int) -> None:
        if term != self.current_term:
            self.current_term = term
            self.voted_for = NO_VOTE
        self.leader_id = NO_LEADER
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.config.election_ticks + self._rng.randrange(
            self.config.election_ticks
        )
        self.votes = {}
        self.lead_transferee = NO_LEADER
        if self.role == Role.LEADER:
            for read in self.read_only.drain():
                self._read_states.append(ReadState(read.context, 0, ok=False))
            for context in self._reads_before_commit:
                self._read_states.append(ReadState(context, 0, ok=False))
            self._reads_before_commit = []
        self.progress = {}
        self._forget_departed()

    def _become_follower(self, term: int, leader_id: int) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader_id = leader_id
        self._tick_handler = self._tick_election
        self._step_handler = self._step_follower

    def _become_pre_candidate(self) -> None:
        # Pre-vote changes neither the term nor the vote: a node cut off from the cluster cannot
        # inflate its term and disrupt the leader when it comes back.
        self._reset(self.current_term)
        self.role = Role.PRE_CANDIDATE
        self._tick_handler = self._tick_election
        self._step_handler = self._step_candidate

    def _become_candidate(self) -> None:
        self._reset(self.current_term + 1)
        self.voted_for = self.id
        self.role = Role.CANDIDATE
        self._tick_handler = self._tick_election
        self._step_handler = self._step_candidate

    def _become_leader(self) -> None:
        assert self.role == Role.CANDIDATE, f"becoming leader from {self.role.name}"
        self._reset(self.current_term)
        self.role = Role.LEADER
        self.leader_id = self.id
        self._tick_handler = self._tick_leader
        self._step_handler = self._step_leader
        last = self.log.last_index()
        for p in (*self.peers, self.id):
            self.progress[p] = self._new_progress()
        own = self.progress[self.id]
        own.match_index = self.log.stable_index()
        own.state = ProgressState.REPLICATE
        # A no-op entry of the new term lets earlier entries commit (§5.4.2) and fixes the read index. In a
        # brand-new cluster (nothing in the log, no snapshot) it is the genesis entry naming the cluster.
        data = genesis_data(self._rng) if last == 0 else b""
        self.log.append([Entry(last + 1, self.current_term, data)])
        self._append_pending = True

    # ------------------------------------------------------------------ elections

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.abstaining:
            return
        if self.members.voters == {self.id} or self.election_elapsed >= self.randomized_election_timeout:
            self._campaign(pre_vote=self.config.pre_vote, transfer=False)

    def _campaign(self, pre_vote: bool, transfer: bool) -> None:
        if self.id not in self.members.voters:
            return  # a learner, a removed node, or one that has not learned its cluster's membership yet
        if pre_vote:
            self._become_pre_candidate()
            term = self.current_term + 1
        else:
            self._become_candidate()
            term = self.current_term
        if self._poll(self.id, True):
            return
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for peer in sorted(self.members.voters - {self.id}):
            self._send(RequestVote(self.id, peer, term, last_index, last_term, pre_vote, transfer))

    def _poll(self, voter: int, granted: bool) -> bool:
        """Count a vote (only voters' count); True when the election is decided (won or lost)."""
        self.votes.setdefault(voter, granted)
        voters, quorum = self.members.voters, self.members.quorum
        yes = sum(1 for v, g in self.votes.items() if g and v in voters)
        no = sum(1 for v, g in self.votes.items() if not g and v in voters)
        if yes >= quorum:
            if self.role == Role.PRE_CANDIDATE:
                self._campaign(pre_vote=False, transfer=False)
            else:
                self._become_leader()
            return True
        if no >= quorum:
            self._become_follower(self.current_term, NO_LEADER)
            return True
        return False

    def _handle_vote_request(self, m: RequestVote) -> None:
        can_vote = (
            self.voted_for == m.src
            or (self.voted_for == NO_VOTE and self.leader_id == NO_LEADER)
            or (m.pre_vote and m.term > self.current_term)
        )
        if can_vote and not self.abstaining and self.log.is_up_to_date(m.last_log_index, m.last_log_term):
            self._send(RequestVoteResponse(self.id, m.src, m.term, True, m.pre_vote))
            if not m.pre_vote:
                self.election_elapsed = 0
                self.voted_for = m.src
        else:
            self._send(RequestVoteResponse(self.id, m.src, self.current_term, False, m.pre_vote))

    def _step_candidate(self, m: Message) -> None:
        if isinstance(m, _FROM_LEADER):
            # A leader of our term exists (§5.2): give up the election and follow it.
            self._become_follower(self.current_term, m.src)
            self._step_follower(m)
        elif isinstance(m, RequestVoteResponse):
            pre = self.role == Role.PRE_CANDIDATE
            expected_term = self.current_term + 1 if pre and m.granted else self.current_term
            if m.pre_vote == pre and m.term == expected_term:
                self._poll(m.src, m.granted)

    # ------------------------------------------------------------------ follower

    def _step_follower(self, m: Message) -> None:
        if isinstance(m, _FROM_LEADER):
            self.election_elapsed = 0
            self.leader_id = m.src
            if isinstance(m, AppendEntries):
                self._handle_append(m)
            elif isinstance(m, Heartbeat):
                last = self.log.last_index()
                if m.commit > last:
                    # The leader only sends a commit index this node acknowledged: its log lost entries (a
                    # node replaced under the same id). Say where it ends, so the leader sends them again.
                    self._send(AppendEntriesResponse(self.id, m.src, self.current_term, False,
                                                     reject_index=m.commit, hint_index=last + 1))
                self.log.commit_to(min(m.commit, last))
                self._send(HeartbeatResponse(self.id, m.src, self.current_term, m.context))
            else:
                self._handle_snapshot_chunk(m)
        elif isinstance(m, TimeoutNow):
            # Even while abstaining: the leader sends it only to a follower whose log matches its own to the end.
            self._campaign(pre_vote=False, transfer=True)

    def _handle_append(self, m: AppendEntries) -> None:
        log = self.log
        if m.prev_log_index < log.commit_index:
            self._send(AppendEntriesResponse(self.id, m.src, self.current_term, True, log.commit_index))
            return
        last_new = log.maybe_append(m.prev_log_index, m.prev_log_term, m.leader_commit, m.entries)
        if last_new is not None:
            self._send(AppendEntriesResponse(self.id, m.src, self.current_term, True, last_new))
            return
        if m.prev_log_index > log.last_index():
            hint_term, hint_index = 0, log.last_index() + 1
        else:
            hint_term = log.term(m.prev_log_index) or 0
            hint_index = log.first_index_of_term(m.prev_log_index)
        self._send(
            AppendEntriesResponse(
                self.id, m.src, self.current_term, False,
                reject_index=m.prev_log_index, hint_term=hint_term, hint_index=hint_index,
            )
        )  # fmt: skip

    def _handle_snapshot_chunk(self, m: InstallSnapshot) -> None:
        log = self.log

        def reply(offset: int = 0, done: bool = False, match_index: int = 0) -> None:
            self._send(
                InstallSnapshotResponse(
                    self.id, m.src, self.current_term, m.snapshot_index, offset, done, match_index
                )
            )

        if m.snapshot_index <= log.commit_index:
            self._incoming = None
            reply(done=True, match_index=log.commit_index)
            return
        if m.offset == 0:
            self._incoming = _IncomingSnapshot(m.snapshot_index, m.snapshot_term, m.total_size)
        incoming = self._incoming
        if incoming is None or (incoming.index, incoming.term, incoming.total_size) != (
            m.snapshot_index,
            m.snapshot_term,
            m.total_size,
        ):
            reply(offset=0)
            return
        if m.offset == len(incoming.data):
            incoming.data += m.data
        if len(incoming.data) < incoming.total_size:
            reply(offset=len(incoming.data))
            return
        self._incoming = None
        if log.match_term(m.snapshot_index, m.snapshot_term):
            log.commit_to(m.snapshot_index)  # our log already holds what the snapshot covers
        else:
            log.restore(SnapshotMeta(m.snapshot_index, m.snapshot_term, m.members), bytes(incoming.data))
        reply(offset=len(incoming.data), done=True, match_index=m.snapshot_index)

    def _send(self, m: Message) -> None:
        # A leader's messages may go out before the Ready is persisted, unless its term is not durable yet
        # (a sole voter elects itself at once, yet its learners must not hear of the term before it is).
        if isinstance(m, LEADER_MESSAGES) and self.role == Role.LEADER and m.term <= self._persisted_hard_state.term:
            self._messages.append(m)
        else:
            self._messages_after_persist.append(m)
