"""The node: one greenlet that owns the raft core, the storage and the queue state machine.

Everything that changes them goes through the node's inbox (a bounded gevent queue): proposals from
client sessions, read barriers, raft messages from peers. Each turn of the loop takes every event that
has arrived, ticks the raft clock when due, and then drives the raft core's Ready batches (the contract
in ``taskflux.raft.ready.Ready``): leader messages leave at once, the loop writes the batch's entries and
waits for their one fsync in the node's disk thread (so the hub keeps serving while the disk works, and
every proposal that arrives meanwhile joins the next batch: group commit), then acknowledgements leave,
committed entries are applied and their waiting sessions woken.

Sessions read the state machine directly (``node.manager``) and take leader-local reservations on it:
under gevent only one greenlet runs at a time, and none of those calls blocks, so they never observe a
half-applied entry.
"""

from __future__ import annotations

import contextlib
import io
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import gevent
from gevent.event import AsyncResult, Event
from gevent.queue import Empty, Full, Queue

from taskflux.domain.commands import AddRecord, Command, DeleteQueue, Tick
from taskflux.domain.entry_codec import decode_command, encode_command
from taskflux.domain.manager import QueueManager
from taskflux.domain.results import OK, Result
from taskflux.domain.snapshot_codec import FrozenState, decode_snapshot, encode_snapshot, freeze
from taskflux.raft.config import RaftConfig
from taskflux.raft.core import Raft
from taskflux.raft.genesis import genesis_cluster_id, is_no_op
from taskflux.raft.members import ConfChange, Members, MembershipError
from taskflux.raft.messages import Heartbeat, Message
from taskflux.raft.ready import NO_LEADER, Ready, Role, Snapshot, SoftState
from taskflux.raft.types import Entry, SnapshotMeta
from taskflux.server.disk_thread import DiskThread
from taskflux.storage.disk import DiskStorage
from taskflux.storage.fileops import OffloadedSyncs
from taskflux.storage.snapshot import SnapshotFile

if TYPE_CHECKING:
    from taskflux.server.membership import Membership
    from taskflux.server.metrics import NodeMetrics

logger = logging.getLogger("taskflux.node")

INBOX_SIZE = 65536
CAMPAIGNING = (Role.PRE_CANDIDATE, Role.CANDIDATE)
MAX_EVENTS_PER_TURN = 4096
STAGING_STOP_SECONDS = 30.0  # a stop waits this long at most for a snapshot's worker thread to give up
STALL_WORTH_LOGGING = 0.1  # seconds: a loop turn this long delays heartbeats noticeably
SLOW_INLINE_FSYNC = 0.02  # seconds: an fsync on the hub this slow sends the next ones to the disk thread...
INLINE_FSYNC_PAUSE = 30.0  # ...for this long


class NotLeader(Exception):
    """This node cannot serve the request: it is not the leader (or stopped being one before the
    request completed). ``leader_id`` is the leader it knows of, or -1."""

    def __init__(self, leader_id: int) -> None:
        super().__init__(f"not the leader (leader: {leader_id})")
        self.leader_id = leader_id


class OutcomeUnknown(Exception):
    """A proposed entry's fate is unknown: it may still commit (a retry could apply it twice)."""


class CommitTimeout(OutcomeUnknown):
    """A proposed entry was neither committed nor overwritten within the request timeout: it may still
    commit later, so the outcome of the request is unknown."""


class NodeStopped(Exception):
    """The node is shutting down (or its loop failed); raised as such only when the request certainly did
    not take effect: nothing of it was proposed."""


class StoppedAfterProposing(OutcomeUnknown, NodeStopped):
    """The node stopped (or its loop failed) after proposing the entry: peers may hold it and a next
    leader may commit it, so the outcome is unknown. Catch ``OutcomeUnknown`` before ``NodeStopped``."""


class StorageFailed(NodeStopped):
    """The node's storage failed a write (a full disk, an I/O error) and the node stopped: it can no
    longer persist, so it can neither acknowledge nor vote. A write in flight may still be committed by
    the other nodes (the leader sends entries before its own fsync): its outcome is unknown."""


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """Runtime settings of a node (the raft timing is in ``RaftConfig``)."""

    tick_interval: float = 0.05
    request_timeout: float = 5.0
    snapshot_segments_threshold: int = 5
    disk_io_in_thread: bool = True  # False only to measure what an fsync on the hub costs the loop
    # A batch of at least this many entries is written and fsynced on the hub itself (0: never), while the
    # disk is healthy: see _persist_inline.
    inline_fsync_entries: int = 0
    max_payload_size: int | None = None  # this node's client limit: a larger replicated record is warned about


TICK_RECHECK_SECONDS = 1.0  # the longest the ticker sleeps without looking at the earliest due time again


def leader_time_ms() -> int:
    """This node's wall clock in ms since the epoch: the time a leader stamps on the entries it proposes."""
    return int(time.time() * 1000)


class Reply(Protocol):
    """Where a proposal's outcome goes (``Node.propose``): exactly one of the two is called, once, by the node
    loop or its watcher greenlet — never blocking. A gevent ``AsyncResult`` is one."""

    def set(self, value: Result) -> None:
        """The command committed and was applied: its result."""
        ...

    def set_exception(self, error: BaseException) -> None:
        """NotLeader, CommitTimeout, NodeStopped or StoppedAfterProposing (see ``Node.submit``)."""
        ...


class _Proposal:
    """A command on its way through the loop, and where its outcome goes (once)."""

    __slots__ = ("answered", "command", "data", "deadline", "reply")

    def __init__(self, command: Command | None, data: bytes, reply: Reply, deadline: float) -> None:
        self.command = command
        self.data = data
        self.reply = reply
        self.deadline = deadline
        self.answered = False

    def resolve(self, result: Result) -> None:
        if not self.answered:
            self.answered = True
            self.reply.set(result)

    def fail(self, error: BaseException) -> None:
        if not self.answered:
            self.answered = True
            self.reply.set_exception(error)


@dataclass(slots=True)
class _ReadBarrier:
    result: AsyncResult


_ABSTAIN = object()  # the inbox event of abstain()
_TICK = object()  # the inbox event of a raft tick (posted by _watch every tick interval)


@dataclass(slots=True)
class _LinkClosed:
    peer: int


@dataclass(slots=True)
class _MembershipChange:
    change: ConfChange
    force: bool
    proposal: _Proposal  # no command: it resolves with Ok once the change committed


@dataclass(slots=True)
class _Transfer:
    to: int
    result: AsyncResult


class Node:
    """A TaskFlux node's state and its single owner greenlet."""

    def __init__(
        self,
        raft_config: RaftConfig,
        storage: DiskStorage,
        send: Callable[[Message], None],
        settings: NodeSettings | None = None,
        rng: random.Random | None = None,
        metrics: NodeMetrics | None = None,
        membership: Membership | None = None,
    ) -> None:
        self.id = raft_config.node_id
        self.settings = settings or NodeSettings()
        self._storage = storage
        self._send = send
        self.manager = self._restore_state()
        self._membership = membership
        caught_up = membership is None or membership.caught_up
        self._raft = Raft(raft_config, storage, rng or random.Random(), caught_up=caught_up)
        # Called with (the membership in force, the last committed one) whenever either changes: see _follow_members.
        self.members_changed: Callable[[Members, Members], None] = lambda in_force, committed: None
        self._followed: tuple[Members, Members] | None = None
        if membership is not None:
            membership.attach(self.abstain)
        self._follow_members()
        self._applied_index = storage.snapshot_meta().index
        self.soft_state = SoftState(Role.FOLLOWER, storage.hard_state().term, NO_LEADER)
        self._inbox: Queue = Queue(INBOX_SIZE)
        # log index -> (term, proposal) of this leader's proposals
        self._pending: dict[int, tuple[int, _Proposal]] = {}
        self._deadlines: deque[_Proposal] = deque()  # every proposal, in submit order
        self._reads: dict[bytes, list[AsyncResult]] = {}  # ReadIndex context -> waiting sessions
        self._reads_waiting_apply: list[tuple[int, list[AsyncResult]]] = []
        self._next_read = 0
        self._read_started: dict[bytes, float] = {}  # ReadIndex context -> when it was registered
        # The leader lease (see ensure_lease): followers that acknowledged a heartbeat round sent at time t refuse
        # to vote for anyone else until at least t + lease, by their own clocks, which run no faster than ours.
        ticks = raft_config.election_ticks - 2  # a follower's first tick may come just after it heard us
        self._lease_seconds = max(1, ticks) * self.settings.tick_interval
        self._heartbeat_seconds = raft_config.heartbeat_ticks * self.settings.tick_interval
        self._lease_until = 0.0
        self._next_lease_round = 0.0
        self._lease_renewed = Event()
        self._closes_queued: dict[int, int] = {}  # peer -> its link closes still in the inbox (see peer_closed)
        self._term_start_index = 0  # a new leader serves from its state once it has applied this far
        self._consumers: dict[str, deque[Event]] = {}
        # A snapshot being written by a worker thread (its meta, the thread's result: the staged file).
        self._staging: tuple[SnapshotMeta, AsyncResult] | None = None
        # A leader's snapshot being decoded by a worker thread, and the entries committed after it meanwhile.
        self._decoding: tuple[SnapshotMeta, AsyncResult] | None = None
        self._deferred: list[tuple[Entry, ...]] = []
        self._snapshot_started = 0.0
        self.longest_stall = 0.0  # seconds: the longest loop turn (heartbeats and answers wait that long)
        self._turn_disk_seconds = 0.0  # of the current turn, how long the loop waited for the disk
        # While the loop waits for the disk (between ready() and advance()): since when, and when it last sent
        # heartbeats meanwhile (see _watch).
        self._disk_wait_since: float | None = None
        self._inline_paused_until = 0.0  # no write on the hub before this (see _persist_inline)
        self._waiting_heartbeat_at = 0.0
        self._tick_queued = False  # a _TICK is in the inbox: _watch posts no second one
        self.heartbeats_while_waiting = 0  # heartbeat messages sent or answered while the loop waited
        self._heartbeat_at = time.monotonic()  # when a heartbeat last arrived (said when this node campaigns)
        self._leadership_changed = Event()
        self._greenlet: gevent.Greenlet | None = None
        self._disk_thread: DiskThread | None = None
        self._file_ops: OffloadedSyncs | None = None  # the storage's calls while the loop runs
        self._sweeper: gevent.Greenlet | None = None
        self._ticker: gevent.Greenlet | None = None
        self._delays_changed = Event()
        self._stopping = False
        self._storage_failure: StorageFailed | None = None
        self._warned_payload_size = False
        self._failure: Exception | None = None
        self.ended = Event()  # set once the loop is over, stopped or failed
        self.applied_entries = 0
        self.batches = 0
        self.leader_changes = 0  # times a new leader became known (etcd's leader_changes_seen)
        self._metrics = metrics
        if metrics is not None:
            metrics.watch_node(self)

    # --- life cycle -------------------------------------------------------------------------------

    def start(self) -> None:
        if self.settings.disk_io_in_thread:
            self._disk_thread = DiskThread()
            self._file_ops = OffloadedSyncs(self._storage.file_ops, self._disk_thread)
            self._storage.file_ops = self._file_ops
        self._greenlet = gevent.spawn(self._run)
        self._sweeper = gevent.spawn(self._watch)
        self._ticker = gevent.spawn(self._propose_ticks)

    def stop(self) -> None:
        """Stop the loop; waiting sessions get NodeStopped. The storage is the caller's to close. Also
        safe (and quick) after the loop failed, and when called again."""
        self._stopping = True
        if self._greenlet is not None:
            self._inbox.put(None)
            self._greenlet.join(timeout=10)
            self._greenlet.kill()
        if self._sweeper is not None:
            self._sweeper.kill()
        if self._ticker is not None:
            self._ticker.kill()
        if self._disk_thread is not None:
            self._disk_thread.close()
        if self._file_ops is not None and self._storage.file_ops is self._file_ops:
            self._storage.file_ops = self._file_ops.inner
        if self._staging is not None:  # its worker gives up at its next chunk; the staged file goes with tmp/
            staging = self._staging[1]
            self._staging = None
            staging.wait(timeout=STAGING_STOP_SECONDS)
            staged = staging.get() if staging.successful() else None
            if staged is not None:
                staged.close()
        self._fail_waiting()
        logger.info("the node loop's longest turn took %.3f s", self.longest_stall)

    def _crashed(self, error: Exception) -> None:
        """The loop ended on an exception: the node serves nothing more (one log line says why)."""
        self._failure = error
        logger.critical("the node loop failed, the node stops: %s: %s", type(error).__name__, error)
        logger.debug("the node loop failed", exc_info=error)
        self._stopping = True
        self._observe(SoftState(Role.FOLLOWER, self.soft_state.term, NO_LEADER))
        self._fail_waiting()

    def _fail_waiting(self) -> None:
        """The loop is over: every session still waiting on it gets NodeStopped (StorageFailed if that is
        why) if its request never left the inbox, StoppedAfterProposing if the loop took it (it may have been
        proposed and replicated)."""
        failure = self._storage_failure
        stopped = failure or NodeStopped()
        while True:
            try:
                event = self._inbox.get_nowait()
            except Empty:
                break
            if isinstance(event, _Proposal):
                event.fail(stopped)
            elif isinstance(event, (_ReadBarrier, _Transfer)) and not event.result.ready():
                event.result.set_exception(stopped)
        # Every other submit still waiting was taken by the loop (or, rarely, is still blocked on a full
        # inbox: answered conservatively too).
        reason = str(failure) if failure is not None else "the node stopped"
        unknown = StoppedAfterProposing(f"{reason}; the write was proposed before: its outcome is unknown")
        for proposal in self._deadlines:
            proposal.fail(unknown)
        self._deadlines.clear()
        self._pending.clear()

    @property
    def failed(self) -> Exception | None:
        """The exception that ended the node loop, if it ended that way."""
        return self._failure

    # --- what sessions call -------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.soft_state.role is Role.LEADER

    @property
    def leader_id(self) -> int:
        return self.soft_state.leader_id

    @property
    def commit_index(self) -> int:
        """The highest log index known to be committed: held durably by a majority, this node included (the
        core counts a leader's own copy before its fsync, see docs/raft.md)."""
        log = self._raft.log
        return min(log.commit_index, log.stable_index())

    @property
    def applied_index(self) -> int:
        """The highest log index applied to the state machine."""
        return self._applied_index

    @property
    def last_index(self) -> int:
        """The highest index in this node's log."""
        return self._raft.log.last_index()

    # --- read-only views (metrics) -----------------------------------------------------------------

    @property
    def storage(self) -> DiskStorage:
        return self._storage

    def replication_lag(self) -> dict[int, int]:
        """Entries each follower lacks (last index - match index), by peer; empty when not leader."""
        if not self.is_leader:
            return {}
        last = self._raft.log.last_index()
        return {peer: last - progress.match_index for peer, progress in self._raft.progress.items()
                if peer != self.id}

    def submit(self, command: Command) -> Result:
        """Replicate ``command`` and return the result of applying it, once it is committed (durable
        on a majority). Raises NotLeader when the command certainly did not take effect (this node was
        not the leader, or another leader's entry took its place in the log), CommitTimeout when it
        neither committed nor was overwritten within the request timeout (it may still commit),
        NodeStopped when the node stopped before proposing it, StoppedAfterProposing when it stopped
        after (it may still commit on a next leader)."""
        result = AsyncResult()
        self.propose(command, result)
        return result.get()

    def propose(self, command: Command, reply: Reply) -> None:
        """``submit`` without waiting: the outcome goes to ``reply`` (called by the loop, once), so a session
        can have the loop write its answer instead of being woken to write it. Raises NotLeader at once
        when this node is not the leader (nothing was proposed)."""
        self._require_leader()
        # No timer per request: one watcher answers the proposals past their deadline.
        proposal = _Proposal(command, encode_command(command), reply, time.monotonic() + self.settings.request_timeout)
        self._deadlines.append(proposal)
        self._post(proposal)

    @property
    def members(self) -> Members:
        """The membership in force on this node (the latest in its log, committed or not)."""
        return self._raft.members

    @property
    def followed_members(self) -> tuple[Members, Members]:
        """The membership in force and the last committed one, as last given to ``members_changed``."""
        assert self._followed is not None
        return self._followed

    def change_membership(self, change: ConfChange, force: bool = False) -> Members:
        """Propose a membership change at this leader and wait until it commits; the membership then in force.
        Raises NotLeader, MembershipError (refused now, with the reason: see ``Raft.propose_conf_change``),
        CommitTimeout (it may still commit) or NodeStopped."""
        self._require_leader()
        result = AsyncResult()
        proposal = _Proposal(None, b"", result, time.monotonic() + self.settings.request_timeout)
        self._deadlines.append(proposal)
        self._post(_MembershipChange(change, force, proposal))
        result.get()
        return self._raft.members

    def ensure_serving(self) -> None:
        """Return once this leader's state machine has caught up with everything committed before its
        term (a new leader, or a restarted single node, re-applies its log first). Raises NotLeader."""
        self._require_leader()
        if self._applied_index < self._term_start_index:
            self.read_barrier()

    @property
    def lease_valid(self) -> bool:
        """Whether no other node can have become leader yet, by real elapsed time (not raft ticks, which a
        slow fsync delays): a quorum acknowledged a heartbeat round of this leader within the lease."""
        return self.is_leader and (self._sole_voter or time.monotonic() < self._lease_until)

    @property
    def _sole_voter(self) -> bool:
        """This node is the only voter: its leadership needs nobody's confirmation."""
        voters = self._raft.members.voters
        return len(voters) == 1 and self.id in voters

    def ensure_lease(self) -> None:
        """Return once this leader's lease is valid (what handing out a record needs: a deposed leader must
        not). Waits up to an election timeout for a heartbeat round to renew it; NotLeader otherwise."""
        self._require_leader()
        deadline = time.monotonic() + self._raft.config.election_ticks * self.settings.tick_interval
        while not self.lease_valid:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NotLeader(NO_LEADER)
            gevent.wait([self._lease_renewed, self._leadership_changed], timeout=remaining, count=1)
            self._require_leader()

    def read_barrier(self) -> None:
        """Return once a read of the state machine is linearizable (ReadIndex: leadership confirmed
        by a majority and everything committed before the read applied). Raises NotLeader."""
        self._require_leader()
        result = AsyncResult()
        self._post(_ReadBarrier(result))
        try:
            result.get(timeout=self.settings.request_timeout)
        except gevent.Timeout:
            raise NotLeader(-1) from None

    def transfer_leadership(self, to: int, timeout: float) -> bool:
        """Ask the raft core to hand leadership to ``to``; True once this node is no longer leader.
        False when it could not be done in time, or the loop is over."""
        if self._stopping:
            return False
        result = AsyncResult()
        self._post(_Transfer(to, result))
        try:
            if not result.get(timeout=timeout):
                return False
        except (NodeStopped, gevent.Timeout):
            return False
        deadline = time.monotonic() + timeout
        while self.is_leader and time.monotonic() < deadline:
            self._leadership_changed.wait(timeout=max(0.0, deadline - time.monotonic()))
        return not self.is_leader

    def transfer_candidates(self) -> list[int]:
        """Voters to hand leadership to, the most up to date first (empty when not leader)."""
        if not self.is_leader:
            return []
        progress = self._raft.progress
        voters = self._raft.members.voters
        return sorted((peer for peer in progress if peer != self.id and peer in voters),
                      key=lambda p: -progress[p].match_index)

    def deliver(self, message: Message) -> None:
        """A raft message from a peer (blocks while the inbox is full: back-pressure on the link).

        While the loop waits for the disk, a heartbeat from this follower's leader is also answered at
        once (``Raft.answer_heartbeat``): a slow fsync here must not look like a dead node to the leader.
        """
        if type(message) is Heartbeat:
            self._heartbeat_at = time.monotonic()
            if self._disk_wait_since is not None and not self._closes_queued:
                answer = self._raft.answer_heartbeat(message)
                if answer is not None:
                    self.heartbeats_while_waiting += 1
                    self._send(answer)
        self._inbox.put(message)

    def peer_closed(self, peer: int) -> None:
        """``peer``'s process closed its link to this node (it crashed or stopped; a leader gives up its
        lease before it closes a link itself, see ``end_lease``): if it was this follower's leader, stop
        honouring its leadership and campaign without waiting for the election timeout
        (``Raft.leader_link_closed``). Queued like a message, after every message of that link; until the loop
        has taken it, heartbeats are not answered ahead of the queue (the answer would promise the lease)."""
        self._closes_queued[peer] = self._closes_queued.get(peer, 0) + 1
        self._inbox.put(_LinkClosed(peer))

    def end_lease(self) -> None:
        """This node is about to close a link it dialled (``PeerNetwork``'s ``closing_link``): the peer may
        vote for another node at once from then on (``peer_closed`` on its side), so the lease ends now, before
        the close, and no heartbeat round started before now renews it: records are handed out again once a
        quorum acknowledges a round started after this call."""
        self._lease_until = 0.0
        self._read_started.clear()
        self._next_lease_round = 0.0  # a new round at the loop's next turn

    def abstain(self) -> None:
        """The cluster has a history this node, started empty, has not caught up with: stop voting until it
        has (``Raft.abstain``). Queued like a message, so it takes effect before any later message."""
        self._inbox.put(_ABSTAIN)

    def wait_for_record(self, queue: str, timeout: float | None) -> bool:
        """Block until a record may be available in ``queue`` (an enqueue applied, a record released)
        or ``timeout`` passes (None: no limit). Waiters are woken oldest first."""
        event = Event()
        waiters = self._consumers.setdefault(queue, deque())
        waiters.append(event)
        try:
            return event.wait(timeout)
        finally:
            with contextlib.suppress(ValueError):  # already popped by the waker
                waiters.remove(event)
            if not waiters and self._consumers.get(queue) is waiters:
                del self._consumers[queue]

    def record_available(self, queue: str) -> None:
        """Wake the oldest consumer waiting on ``queue`` (a record was added or released)."""
        waiters = self._consumers.get(queue)
        if waiters:
            waiters.popleft().set()

    def leader_time(self) -> int:
        """The time this node stamps on an entry it proposes: its wall clock in ms since the epoch, never behind
        the state machine's clock."""
        return max(leader_time_ms(), self.manager.clock)

    def _propose_ticks(self) -> None:
        """On the leader: when a delayed record falls due by this node's clock, propose a Tick carrying the time
        (records become ready only as entries are applied, so that every node makes them ready at the same
        point of the log). One Tick at a time; woken early when a delay is added or the leadership changes."""
        while not self._stopping:
            self._delays_changed.clear()
            due = self.manager.next_due() if self.is_leader else None
            wait = None if due is None else due / 1000 - time.time()
            if wait is None or wait > 0:
                self._delays_changed.wait(TICK_RECHECK_SECONDS if wait is None else min(wait, TICK_RECHECK_SECONDS))
                continue
            result = AsyncResult()
            try:
                self.propose(Tick(self.leader_time()), result)
                result.get()
            except (NotLeader, NodeStopped, OutcomeUnknown):
                gevent.sleep(self.settings.tick_interval)

    def _require_leader(self) -> None:
        if self._stopping:
            raise self._storage_failure or NodeStopped()
        if not self.is_leader:
            raise NotLeader(self.leader_id)

    def _post(self, event: object) -> None:
        self._inbox.put(event)  # may block while the inbox is full, and the node stop meanwhile
        if self._stopping:
            self._fail_waiting()

    # --- the loop ---------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as error:
            self._crashed(error)
        finally:
            self.ended.set()

    def _loop(self) -> None:
        inbox = self._inbox
        while not self._stopping:
            events = [inbox.get()]  # ticks arrive as events too (_watch): no timer per wait
            try:
                # Let every greenlet that is ready run first: sessions woken by the last apply propose
                # their next request now, and join this batch instead of waiting for the next fsync.
                gevent.sleep(0)
                while len(events) < MAX_EVENTS_PER_TURN:
                    events.append(inbox.get_nowait())
            except Empty:
                pass
            turn_started = time.monotonic()
            self._turn_disk_seconds = 0.0
            reads: list[AsyncResult] = []
            for event in events:
                self._handle(event, reads)
            if reads:
                self._start_read(reads)
            now = time.monotonic()
            if self.soft_state.role is Role.LEADER and now >= self._next_lease_round:
                self._renew_lease(now)
            while self._raft.has_ready():
                self._handle_ready(self._raft.ready())
            if self._decoding is not None and self._decoding[1].ready():
                self._decoded()
            if self._staging is not None and self._staging[1].ready():
                self._staged()
            self._maybe_snapshot()
            self._observe_turn(time.monotonic() - turn_started)

    def _watch(self) -> None:
        """What must go on beside the loop, every tick interval:

        - post a raft tick to the loop (one at a time: a loop that fell behind, in a long fsync, does not tick
          in a burst afterwards);
        - answer CommitTimeout to every submit still waiting at its deadline (the entry may still commit
          later; it is then applied like any other);
        - as the leader, send heartbeats every heartbeat interval (``Raft.heartbeats``), so that the
          followers do not start an election because this node's fsync is slow.
        """
        deadlines = self._deadlines
        interval = self.settings.tick_interval
        while True:
            gevent.sleep(interval)
            now = time.monotonic()
            if not self._tick_queued:
                with contextlib.suppress(Full):  # a full inbox: the loop has work enough; tick next time
                    self._inbox.put_nowait(_TICK)
                    self._tick_queued = True
            waiting_since = self._disk_wait_since
            last_sent = max(waiting_since or 0.0, self._waiting_heartbeat_at)
            if waiting_since is not None and now - last_sent >= self._heartbeat_seconds:
                self._waiting_heartbeat_at = now
                for message in self._raft.heartbeats():
                    self.heartbeats_while_waiting += 1
                    self._send(message)
            while deadlines and (deadlines[0].answered or deadlines[0].deadline <= now):
                deadlines.popleft().fail(CommitTimeout(f"not committed within {self.settings.request_timeout} s"))

    def _handle(self, event: object, reads: list[AsyncResult]) -> None:
        if isinstance(event, _Proposal):
            if event.answered:  # its session was already told CommitTimeout: not worth proposing
                return
            index = self._raft.propose(event.data)
            if index is None:
                event.fail(NotLeader(self._raft.leader_id))
            else:
                self._pending[index] = (self._raft.current_term, event)
        elif isinstance(event, _ReadBarrier):
            reads.append(event.result)
        elif isinstance(event, _MembershipChange):
            self._propose_membership(event)
        elif isinstance(event, _Transfer):
            event.result.set(self._raft.transfer_leadership(event.to))
        elif event is _TICK:
            self._tick_queued = False
            self._raft.tick()
        elif event is _ABSTAIN:
            self._raft.abstain()
        elif isinstance(event, _LinkClosed):
            self._link_close_taken(event.peer)
            self._raft.leader_link_closed(event.peer)
        elif event is not None:
            self._raft.step(event)  # type: ignore[arg-type]

    def _link_close_taken(self, peer: int) -> None:
        queued = self._closes_queued.pop(peer) - 1
        if queued:
            self._closes_queued[peer] = queued

    def _renew_lease(self, now: float) -> None:
        """A heartbeat round (a ReadIndex round without readers) whose acknowledgement renews the lease: one
        per heartbeat interval (reads' rounds renew it too)."""
        self._next_lease_round = now + self._heartbeat_seconds
        if not self._sole_voter:
            self._start_read([])

    def _start_read(self, waiters: list[AsyncResult]) -> None:
        """One ReadIndex round serves every read that arrived in this turn (and renews the lease)."""
        self._next_read += 1
        context = self._next_read.to_bytes(8, "big")
        if self._raft.read_index(context):
            self._reads[context] = waiters
            self._read_started[context] = time.monotonic()
        else:
            error = NotLeader(self._raft.leader_id)
            for waiter in waiters:
                waiter.set_exception(error)

    def _propose_membership(self, event: _MembershipChange) -> None:
        proposal = event.proposal
        if proposal.answered:
            return
        if self._raft.role != Role.LEADER:
            proposal.fail(NotLeader(self._raft.leader_id))
            return
        try:
            index = self._raft.propose_conf_change(event.change, event.force)
        except MembershipError as error:
            proposal.fail(error)
            return
        logger.info("membership change proposed at index %d: %s %d%s", index, event.change.kind.value,
                    event.change.node_id, f" at {event.change.address}" if event.change.address else "")
        self._pending[index] = (self._raft.current_term, proposal)

    def _follow_members(self) -> None:
        """Tell the links (and the handshake checks) the membership in force and the last committed one: a node
        removed by a change not yet committed keeps its links, since it may be the leader that must hear the
        acknowledgements of its own removal."""
        raft = self._raft
        log = raft.log
        in_force = raft.members
        committed = in_force if log.last_members_index() <= log.commit_index else log.members_at(log.commit_index)
        if self._followed is not None and self._followed[0] is in_force and self._followed[1] is committed:
            return
        if self._followed is None or self._followed[0] is not in_force:
            logger.info("membership in force: voters %s, learners %s", sorted(in_force.voters),
                        sorted(in_force.learners))
        if in_force.was_removed(self.id) and (self._followed is None or not self._followed[0].was_removed(self.id)):
            logger.error("this node (%d) was removed from the cluster: it takes no part any more; stop it (its id "
                         "is never used again: to bring the machine back, add it anew with an empty data directory)",
                         self.id)
        self._followed = (in_force, committed)
        if self._membership is not None:
            self._membership.members = in_force
            self._membership.committed_members = committed
        self.members_changed(in_force, committed)

    def _handle_ready(self, ready: Ready) -> None:
        self._observe(ready.soft_state)
        if ready.members is not None:
            self._follow_members()  # new members get their links before the messages
        for message in ready.messages:
            self._send(message)
        if ready.snapshot is not None:
            self._install_snapshot(ready.snapshot)
        if ready.hard_state is not None or ready.entries:
            started = time.perf_counter()
            inline = self._persist_inline(len(ready.entries))
            self._disk_io(self._persist, ready.hard_state, ready.entries, inline=inline, syncs_only=True)
            if self._metrics is not None:
                self._metrics.observe_persist(time.perf_counter() - started, len(ready.entries))
            self.batches += 1
        for message in ready.messages_after_persist:
            self._send(message)
        if ready.caught_up and self._membership is not None:
            self._membership.caught_up_now()
        if ready.committed_entries:
            if self._decoding is None:
                self._apply(ready.committed_entries)
            else:  # applied once the leader's snapshot they follow is decoded
                self._deferred.append(ready.committed_entries)
        if self._followed is not None and self._followed[1] is not self._followed[0] and ready.committed_entries:
            self._follow_members()  # a membership change may have committed
        for read in ready.read_states:
            waiters = self._reads.pop(read.context, [])
            started = self._read_started.pop(read.context, 0.0)
            if read.ok and started and started + self._lease_seconds > self._lease_until:
                self._lease_until = started + self._lease_seconds
                self._lease_renewed.set()
                self._lease_renewed = Event()
            if not read.ok:
                error = NotLeader(self._raft.leader_id)
                for waiter in waiters:
                    waiter.set_exception(error)
            elif read.index <= self._applied_index:
                for waiter in waiters:
                    waiter.set(None)
            else:
                self._reads_waiting_apply.append((read.index, waiters))
        self._raft.advance()

    def _disk_io(
        self, function: Callable[..., None], *args: object, inline: bool = False, syncs_only: bool = False
    ) -> None:
        """Run a storage write (fsyncs included) in the disk thread: the loop waits for it, the hub
        keeps serving every other greenlet meanwhile. With ``syncs_only`` the loop makes the writes itself
        (small ones: into the page cache, microseconds) and hands only the fsyncs to the disk thread
        (``OffloadedSyncs``): the thread then runs one C call per fsync and hardly ever waits for the GIL,
        which the hub holds most of the time on a busy node. With ``inline`` (see ``_persist_inline``) on the
        hub itself, fsyncs included, once every ready greenlet has run (the peers send this batch's
        AppendEntries, sessions write their first-phase Oks); an inline write slower than SLOW_INLINE_FSYNC
        sends the next ones to the disk thread for INLINE_FSYNC_PAUSE.

        A failed write ends the loop with StorageFailed: after a failed write or fsync the files may
        not hold what the raft core believes was stored, and only a fresh start (which rescans the
        disk) can tell what they hold. Nothing was acknowledged on the strength of the failed write.
        """
        if inline:
            gevent.sleep(0)
        started = time.monotonic()
        if not inline:
            self._disk_wait_since = started
        ops = self._file_ops
        try:
            if inline and ops is not None:
                ops.direct = True
            if inline or syncs_only or self._disk_thread is None:
                function(*args)
            else:
                self._disk_thread.call(function, *args)
        except OSError as error:
            raise self._storage_failed(error) from error
        finally:
            if ops is not None:
                ops.direct = False
            self._disk_wait_since = None
            elapsed = time.monotonic() - started
            self._turn_disk_seconds += elapsed
            if inline and elapsed > SLOW_INLINE_FSYNC:
                self._inline_paused_until = time.monotonic() + INLINE_FSYNC_PAUSE
                logger.info("an fsync on the hub took %.3f s: the next %d s of writes go through the disk thread",
                            elapsed, INLINE_FSYNC_PAUSE)

    def _persist_inline(self, entries: int) -> bool:
        """Whether to write this batch on the hub instead of the disk thread. A large batch means many requests
        wait on it, and the hand-off to the thread costs more than the hub's pause; a small one means few wait,
        and the hub is better off serving meanwhile. Never while the disk is slow: an inline fsync blocks
        everything (heartbeats included)."""
        limit = self.settings.inline_fsync_entries
        return 0 < limit <= entries and time.monotonic() >= self._inline_paused_until

    def _storage_failed(self, error: OSError) -> StorageFailed:
        """The failure that ends the loop when a storage write failed (see ``_disk_io``)."""
        self._storage_failure = StorageFailed(
            f"storage failed: {error}. The node stops: it cannot write to its data directory "
            f"{self._storage.data_dir}. Free space or repair the disk, then start it again; nothing it "
            "acknowledged is lost"
        )
        return self._storage_failure

    def _persist(self, hard_state: object, entries: tuple[Entry, ...]) -> None:
        """The loop's write of one Ready batch; other greenlets run while its fsyncs wait for the disk (the
        storage publishes the new entries only once they are durable, so none of them reads a half-written
        batch)."""
        if hard_state is not None:
            self._storage.set_hard_state(hard_state)  # type: ignore[arg-type]
        if entries:
            self._storage.append(entries)

    def _observe(self, soft_state: SoftState) -> None:
        previous = self.soft_state
        if soft_state == previous:
            return
        self.soft_state = soft_state
        if soft_state.role != previous.role or soft_state.leader_id != previous.leader_id:
            logger.info(
                "role %s, term %d, leader %d", soft_state.role.name.lower(), soft_state.term, soft_state.leader_id
            )
            if previous.role is Role.FOLLOWER and previous.leader_id != NO_LEADER and soft_state.role in CAMPAIGNING:
                logger.warning(
                    "campaigning: leader %d's last heartbeat arrived %.3f s ago (the longest loop turn so far: "
                    "%.3f s)", previous.leader_id, time.monotonic() - self._heartbeat_at, self.longest_stall,
                )
            self._leadership_changed.set()
            self._leadership_changed = Event()
            self._delays_changed.set()
            if soft_state.leader_id != previous.leader_id and soft_state.leader_id != NO_LEADER:
                self.leader_changes += 1
        if soft_state.role != previous.role:
            self._lease_until = self._next_lease_round = 0.0  # a term's lease starts with its first acked round
            self._read_started.clear()  # rounds of an earlier term renew nothing
        if soft_state.role is Role.LEADER and previous.role is not Role.LEADER:
            self._term_start_index = self._raft.log.last_index()  # at least the new term's no-op entry
        if previous.role is Role.LEADER and soft_state.role is not Role.LEADER:
            # Consumers waiting on this node must go and find the new leader.
            for waiters in self._consumers.values():
                for event in waiters:
                    event.set()

    def _apply(self, entries: tuple[Entry, ...]) -> None:
        manager = self.manager
        pending = self._pending
        for entry in entries:
            proposed = pending.pop(entry.index, None)
            waiting = None
            if proposed is not None:
                term, waiting = proposed
                if term != entry.term:  # another leader's entry took the index
                    waiting.fail(NotLeader(self._raft.leader_id))
                    waiting = None
            if is_no_op(entry.data):  # a new term's no-op (the first one names the cluster), or a membership
                cluster_id = genesis_cluster_id(entry.data)
                if cluster_id is not None and self._membership is not None:
                    self._membership.genesis_applied(cluster_id)
                if waiting is not None:
                    waiting.resolve(OK)  # a membership change: committed
                continue
            # The proposer's own command object spares decoding the entry it was encoded into.
            if waiting is not None and waiting.command is not None:
                command = waiting.command
            else:
                command = decode_command(entry.data)
                if isinstance(command, AddRecord) and not self._warned_payload_size:
                    self._check_payload_size(command)
            result = manager.apply(command)
            self.applied_entries += 1
            if waiting is not None:
                waiting.resolve(result)
            if manager.delayed_added:
                manager.delayed_added = False
                self._delays_changed.set()  # maybe a new earliest due time: the ticker looks again
            woken = manager.woken
            if woken:
                for name in woken:
                    self.record_available(name)
                woken.clear()
            elif isinstance(command, DeleteQueue):
                for event in self._consumers.get(command.name, ()):
                    event.set()
        self._applied_index = entries[-1].index
        self._storage.set_committed(self._applied_index)
        self._release_reads()

    def _release_reads(self) -> None:
        """Answer the reads that waited for the state machine to reach their index."""
        if self._reads_waiting_apply:
            still_waiting = []
            for index, waiters in self._reads_waiting_apply:
                if index <= self._applied_index:
                    for waiter in waiters:
                        waiter.set(None)
                else:
                    still_waiting.append((index, waiters))
            self._reads_waiting_apply = still_waiting

    def _check_payload_size(self, command: AddRecord) -> None:
        """A replicated record is never refused for this node's own limit (the leader enforces the client
        limit); a larger one means the nodes' settings differ, which is worth one warning."""
        limit = self.settings.max_payload_size
        if limit is not None and len(command.payload) > limit:
            self._warned_payload_size = True
            logger.warning(
                "a replicated record of %d bytes is larger than this node's max_payload_size (%d bytes): it is "
                "stored all the same, but the nodes' max_payload_size settings differ; give every node the same",
                len(command.payload), limit,
            )

    # --- snapshots --------------------------------------------------------------------------------

    def _restore_state(self) -> QueueManager:
        """The state of the snapshot, read before the node serves anything (the loop is not running yet)."""
        meta = self._storage.snapshot_meta()
        if meta.index == 0:
            return QueueManager()
        started = time.monotonic()
        with self._storage.open_snapshot_data() as data:
            manager = decode_snapshot(data)
        logger.info("loaded the snapshot up to index %d in %.3f s", meta.index, time.monotonic() - started)
        return manager

    def _install_snapshot(self, snapshot: Snapshot) -> None:
        """A snapshot from the leader replaces the whole state. It is made durable at once (the raft core
        counts on it), then decoded in a worker thread while the loop goes on: entries committed meanwhile
        wait, and the new state replaces the old one when complete. Reservations die with the old state."""
        started = time.monotonic()
        self._disk_io(self._storage.save_snapshot, snapshot.meta, [snapshot.data])
        if self._metrics is not None:
            self._metrics.observe_snapshot("leader", len(snapshot.data), time.monotonic() - started)
        self._deferred.clear()  # entries before a newer snapshot: it holds their effect
        decoding = gevent.get_hub().threadpool.spawn(decode_snapshot, io.BytesIO(snapshot.data))
        self._decoding = (snapshot.meta, decoding)

    def _decoded(self) -> None:
        assert self._decoding is not None
        meta, decoding = self._decoding
        self._decoding = None
        self.manager = decoding.get()  # a corrupt snapshot from the leader ends the loop: nothing else is safe
        self._applied_index = meta.index
        logger.info("installed a snapshot from the leader up to index %d", meta.index)
        deferred, self._deferred = self._deferred, []
        for entries in deferred:
            self._apply(entries)
        self._release_reads()

    def _maybe_snapshot(self) -> None:
        threshold = self.settings.snapshot_segments_threshold
        applied = self._applied_index
        if self._staging is not None or self._decoding is not None:
            return
        if applied <= self._storage.snapshot_meta().index:
            return
        if self._storage.sealed_segments_through(applied) < max(1, threshold):
            return
        self._take_snapshot()

    def _take_snapshot(self) -> None:
        """Snapshot the applied state: on the loop, only a frozen copy of it (no Python code per record);
        a worker thread encodes it and writes the file aside, and the loop puts it in place once written."""
        applied = self._applied_index
        meta = self._raft.snapshot_meta(applied)
        frozen = freeze(self.manager)
        self._snapshot_started = time.monotonic()
        self._staging = (meta, gevent.get_hub().threadpool.spawn(self._stage, meta, frozen))

    def _stage(self, meta: SnapshotMeta, frozen: FrozenState) -> SnapshotFile | None:
        """In a worker thread: encode and write the snapshot aside; None when the node stopped meanwhile."""
        try:
            return self._storage.stage_snapshot(meta, self._encode(frozen))
        except NodeStopped:
            return None

    def _encode(self, frozen: FrozenState) -> Iterator[bytes]:
        """The snapshot's chunks, given up when the node stops (the worker thread then ends early)."""
        for chunk in encode_snapshot(frozen):
            if self._stopping:
                raise NodeStopped()
            yield chunk

    def _staged(self) -> None:
        """The worker thread has written the snapshot aside: put it in place and compact the log."""
        assert self._staging is not None
        meta, staging = self._staging
        self._staging = None
        try:
            staged = staging.get()
        except OSError as error:  # writing the snapshot aside failed: a storage failure like any other
            raise self._storage_failed(error) from error
        if staged is None:
            return
        self._disk_io(self._storage.install_staged_snapshot, staged)
        if self._storage.snapshot_meta() != meta:  # a newer snapshot from a leader came first
            return
        self._raft.compacted(meta)
        seconds = time.monotonic() - self._snapshot_started
        logger.info("snapshot at index %d: %d bytes in %.3f s", meta.index, staged.data_size, seconds)
        if self._metrics is not None:
            self._metrics.observe_snapshot("local", staged.data_size, seconds)

    def _observe_turn(self, seconds: float) -> None:
        """Keep the longest loop turn, and say so when a new longest one is long enough to matter."""
        if seconds > self.longest_stall:
            self.longest_stall = seconds
            if seconds >= STALL_WORTH_LOGGING:
                logger.warning("the node loop was busy for %.3f s in one turn (the longest so far; %.3f s of it "
                               "waiting for the disk)", seconds, self._turn_disk_seconds)
