"""A seeded, deterministic simulator of a raft cluster, with safety checks after every step.

One ``Simulation(seed)`` owns everything random (one ``random.Random``), so a seed replays exactly.
Time is counted in ticks. Each step is one event: deliver one due message (chosen at random among
the due ones: reordering), advance the clock one tick (ticking every live node; faults strike then),
propose client data, or start a ReadIndex read. After the event every node touched handles its
Ready batches as a driver would (``SimNode.handle_ready``), and ``Checker`` verifies the invariants.

Faults: messages dropped (``loss``), duplicated, delayed up to ``max_delay`` ticks; partitions
that split the cluster in two and heal later; crashes that lose everything not persisted (the core,
its unstable log, the state machine, a Ready not yet written, possibly after only part of it was)
and restarts from the MemoryStorage alone; wipes (a node replaced by an empty one under the same id, as
``docs/operations.md`` replaces a failed node: it restarts with empty storage after at least two election
timeouts and, once the cluster has a history, abstains from voting until it has caught up from a leader);
compaction into snapshots, so lagging followers are caught up by chunked InstallSnapshot; with ``membership``,
changes proposed at the leader: a new empty node added as a learner, a learner promoted, a member removed (the
leader itself included), so a node is replaced the safe way (removed, and a new one added). A crash also
closes the crashed node's links: each other node may learn it (``Raft.leader_link_closed``), delivered like
a message (late, or not at all across a partition); once it is, nothing the crashed incarnation sent on that
link arrives any more (TCP delivers a link's messages before its close).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from taskflux.raft.checker import Checker, Violation
from taskflux.raft.config import RaftConfig
from taskflux.raft.core import Raft
from taskflux.raft.members import ChangeKind, ConfChange, Members, MembershipError
from taskflux.raft.memory import MemoryStorage
from taskflux.raft.messages import Message
from taskflux.raft.ready import Role

__all__ = ["LinkClosed", "SimConfig", "SimNode", "SimResult", "Simulation", "Violation", "Workload"]


class Workload(Protocol):
    """A state machine and its clients on top of the simulated cluster (the default: opaque entries, no state
    machine). It proposes at the leader, applies what each node applies, and checks its own invariants, raising
    Violation through ``sim.checker.fail``."""

    def on_start(self, node: SimNode) -> None:
        """``node`` (re)started, or installed a snapshot: its state machine is what ``node.applied`` made it."""
        ...

    def on_apply(self, node: SimNode, data: bytes, index: int) -> None:
        """``node`` applies the committed entry ``index``."""
        ...

    def propose(self, leader: SimNode) -> set[int]:
        """A client's step at a node that believes it leads; the nodes touched."""
        ...

    def after_step(self) -> None:
        ...

    def final_check(self) -> None:
        ...


@dataclass(frozen=True, slots=True)
class LinkClosed:
    """Node ``dst`` sees its link from node ``src`` closed by ``src``'s process (``src`` crashed)."""

    src: int
    dst: int


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Fault rates and sizes of a simulated run. ``nodes=0`` picks 1, 3 or 5 from the seed."""

    steps: int = 2000
    nodes: int = 0
    loss: float = 0.0  # probability a message is dropped
    duplicate: float = 0.01  # probability a message is delivered twice
    max_delay: int = 2  # ticks
    partitions: bool = True
    partition_rate: float = 0.001  # per tick
    crashes: bool = False
    crash_rate: float = 0.001  # per tick, a crash of some live node
    ready_crash_rate: float = 0.0005  # per Ready with writes, a crash part way through it
    pause_rate: float = 0.0  # per tick, a node stops for up to 4 election timeouts (0.002 with --pauses)
    disk_stall_rate: float = 0.0  # per tick, a node's disk stalls for up to 4 election timeouts (see SimNode)
    heartbeats_while_stalled: bool = True  # False: a stalled node sends no heartbeats and answers none
    link_closed: float = 0.8  # per other node, the chance that a crash closes its link from the crashed node
    wipe_rate: float = 0.0005  # per tick, a node of 3 or more loses its storage (when no other is catching up)
    abstain: bool = True  # False: a wiped node votes at once (the checker then finds lost entries)
    clock_skew: float = 0.02  # per node and tick, a clock that misses a tick or ticks twice
    propose_rate: float = 0.08  # per step
    read_rate: float = 0.04  # per step
    membership: bool = False  # membership changes at ``member_rate`` per step
    member_rate: float = 0.01
    max_voters: int = 5
    force_rate: float = 0.1  # the share of removals forced past the reachable-quorum check
    election_ticks: int = 10
    heartbeat_ticks: int = 2

    @classmethod
    def stress(cls, steps: int = 2000) -> SimConfig:
        """Every fault at a high rate: for finding bugs, not for measuring availability."""
        return cls(
            steps=steps,
            loss=0.02,
            duplicate=0.03,
            partition_rate=0.004,
            crashes=True,
            crash_rate=0.005,
            ready_crash_rate=0.02,
            pause_rate=0.01,
            disk_stall_rate=0.005,
            wipe_rate=0.002,
            clock_skew=0.05,
            read_rate=0.05,
        )

    @classmethod
    def members(cls, steps: int = 2000, stress: bool = False) -> SimConfig:
        """The membership profile: adds, promotions and removals (nodes replaced by new ones, never wiped
        under their old id) racing with crashes, restarts and partitions."""
        from dataclasses import replace

        base = cls.stress(steps) if stress else cls(steps=steps, crashes=True, loss=0.01)
        return replace(base, membership=True, wipe_rate=0.0)


def encode_state(applied: list[bytes]) -> bytes:
    """The snapshot of a simulated state machine: the applied entry data, each after its 4-byte length."""
    return b"".join(len(data).to_bytes(4, "big") + data for data in applied)


def decode_state(data: bytes) -> list[bytes]:
    items = []
    pos = 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        items.append(data[pos + 4 : pos + 4 + length])
        pos += 4 + length
    assert pos == len(data), "a corrupt simulated snapshot"
    return items


class SimNode:
    """One simulated server: durable storage that survives crashes, and a core + state machine that do not."""

    def __init__(self, sim: Simulation, node_id: int, joining: bool = False) -> None:
        self.sim = sim
        self.id = node_id
        self.joining = joining  # added at run time: it starts knowing no membership, from an empty log
        self.storage = MemoryStorage()
        # Durable, like the storage: False from a wipe (or for a new node) until the core reports caught_up.
        self.caught_up = not joining
        self.raft: Raft | None = None
        self.applied: list[bytes] = []
        self.restart_at = 0
        self.paused_until = 0  # a paused process (GC, VM stall) neither ticks nor reads its messages
        # A paused node whose disk stalled: its loop waits for an fsync, between ready() and advance(), so it
        # neither ticks nor steps; but it sends heartbeats as a leader and answers them as a follower.
        self.disk_stalled = False
        self.start()

    def start(self) -> None:
        sim = self.sim
        cfg = RaftConfig(
            node_id=self.id,
            cluster_size=sim.initial_n,
            election_ticks=sim.config.election_ticks,
            heartbeat_ticks=sim.config.heartbeat_ticks,
            snapshot_chunk_size=sim.chunk_size,
            replication_max_send_size=sim.max_send_size,
            max_inflight=sim.max_inflight,
            initial_members=Members() if self.joining else None,
        )
        self.raft = Raft(cfg, self.storage, random.Random(sim.rng.getrandbits(64)), caught_up=self.caught_up)
        if not self.caught_up and sim.config.abstain and sim.checker.committed_terms:
            self.raft.abstain()  # a peer's handshake says the cluster has a history
        self.applied = decode_state(self.storage.snapshot_data())
        sim.checker.on_start(self)
        if sim.workload is not None:
            sim.workload.on_start(self)

    def crash(self) -> None:
        self.raft = None
        self.applied = []
        self.restart_at = self.sim.now + self.sim.rng.randint(1, 4 * self.sim.config.election_ticks)
        self.sim.checker.on_crash(self)
        self.sim.close_links(self.id)

    def wipe(self) -> None:
        """Crash and lose the storage; restart empty after at least two election timeouts."""
        self.crash()
        self.storage = MemoryStorage()
        self.caught_up = False
        election = self.sim.config.election_ticks
        self.restart_at = self.sim.now + self.sim.rng.randint(2 * election, 4 * election)
        self.sim.checker.on_wipe(self)

    def handle_ready(self) -> bool:
        """Handle one Ready like the node runtime does; False if the node crashed part way."""
        raft = self.raft
        assert raft is not None
        sim = self.sim
        rd = raft.ready()
        crash_at = -1
        if sim.config.crashes and rd.must_sync and sim.rng.random() < sim.config.ready_crash_rate:
            crash_at = sim.rng.randrange(5)
        sim.send_all(rd.messages)
        if crash_at == 0:
            return self._crash_mid_ready()
        if rd.snapshot is not None:
            self.storage.save_snapshot(rd.snapshot.meta, [rd.snapshot.data])
            self.applied = decode_state(rd.snapshot.data)
            sim.checker.on_snapshot_installed(self, rd.snapshot.meta)
            if sim.workload is not None:
                sim.workload.on_start(self)
        if crash_at == 1:
            return self._crash_mid_ready()
        if rd.hard_state is not None:
            self.storage.set_hard_state(rd.hard_state)
            sim.checker.on_hard_state(self, rd.hard_state)
        if crash_at == 2:
            return self._crash_mid_ready()
        if rd.entries:
            sim.checker.on_persist(self, rd.entries)
            self.storage.append(rd.entries)
        if rd.caught_up:
            self.caught_up = True  # durable only with the entries it caught up with
        if crash_at == 3:
            return self._crash_mid_ready()
        sim.send_all(rd.messages_after_persist)
        for entry in rd.committed_entries:
            sim.checker.on_apply(self, entry)
            self.applied.append(entry.data)
            if sim.workload is not None:
                sim.workload.on_apply(self, entry.data, entry.index)
        if crash_at == 4:
            return self._crash_mid_ready()
        for read in rd.read_states:
            sim.checker.on_read_state(self, read)
        raft.advance()
        self._maybe_compact(raft)
        return True

    def _crash_mid_ready(self) -> bool:
        self.sim.stats_ready_crashes += 1
        self.crash()
        return False

    def _maybe_compact(self, raft: Raft) -> None:
        """Snapshot the state machine every ``compact_every`` applied entries (the compaction hook)."""
        applied = raft.log.applied_index
        meta = self.storage.snapshot_meta()
        if applied - meta.index >= self.sim.compact_every:
            new_meta = raft.snapshot_meta(applied)
            self.storage.save_snapshot(new_meta, [encode_state(self.applied)])
            raft.compacted(new_meta)
            self.sim.checker.on_snapshot_installed(self, new_meta)
            self.sim.stats_compactions += 1


@dataclass(slots=True)
class SimResult:
    """What a run measured."""

    seed: int
    steps: int
    ticks: int = 0
    leader_ticks: int = 0  # ticks after the first election with a working leader
    counted_ticks: int = 0  # ticks after the first election
    elections: list[int] = field(default_factory=list)  # lengths of leaderless periods, in ticks
    committed: int = 0


class Simulation:
    """A simulated cluster; ``run()`` executes the steps and returns a SimResult (or raises Violation)."""

    def __init__(self, seed: int, config: SimConfig | None = None,
                 workload: Callable[[Simulation], Workload] | None = None) -> None:
        self.seed = seed
        self.config = config or SimConfig()
        self.workload: Workload | None = None
        self.rng = random.Random(seed)
        rng = self.rng
        self.n = self.initial_n = self.config.nodes or rng.choice((1, 3, 3, 3, 5, 5))
        self.chunk_size = rng.choice((16, 64, 256))
        self.max_send_size = rng.choice((8, 64, 1024 * 1024))
        self.max_inflight = rng.choice((1, 4, 64))
        self.compact_every = rng.choice((4, 16, 64))
        self.now = 0
        self.step_no = 0
        self._seq = 0
        self._in_flight: list[tuple[int, int, Message | LinkClosed]] = []  # heap of (deliver_at, seq, message)
        self._due: list[tuple[int, Message | LinkClosed]] = []  # (seq, message)
        self._closed: dict[tuple[int, int], int] = {}  # (src, dst) -> seq of its last LinkClosed delivered
        self.group = [0] * self.n
        self.heal_at = 0
        self.result = SimResult(seed, self.config.steps)
        self._leaderless_ticks = 0
        self._first_elected = False
        self._read_seq = 0
        self._proposal_seq = 0
        self.stats_ready_crashes = 0
        self.stats_compactions = 0
        self.stats_disk_stalls = 0
        self.stats_changes = 0
        self.stats_changes_refused = 0
        self.stats_leader_removals = 0
        self.checker = Checker(self)
        if workload is not None:
            self.workload = workload(self)
        self.nodes = [SimNode(self, i) for i in range(self.n)]

    # ------------------------------------------------------------------ network

    def send_all(self, messages: tuple[Message, ...]) -> None:
        cfg = self.config
        rng = self.rng
        for m in messages:
            if cfg.loss and rng.random() < cfg.loss:
                continue
            copies = 2 if rng.random() < cfg.duplicate else 1
            for _ in range(copies):
                self._seq += 1
                heapq.heappush(self._in_flight, (self.now + rng.randint(0, cfg.max_delay), self._seq, m))

    def close_links(self, crashed: int) -> None:
        """Node ``crashed`` is gone: each other node may see its link from it closed, after up to
        ``max_delay`` ticks."""
        cfg = self.config
        rng = self.rng
        for node in range(len(self.nodes)):
            if node != crashed and rng.random() < cfg.link_closed:
                self._seq += 1
                heapq.heappush(self._in_flight, (self.now + rng.randint(0, cfg.max_delay), self._seq,
                                                 LinkClosed(crashed, node)))

    def _collect_due(self) -> None:
        while self._in_flight and self._in_flight[0][0] <= self.now:
            _, seq, m = heapq.heappop(self._in_flight)
            self._due.append((seq, m))

    def _deliver_one(self) -> set[int]:
        due = self._due
        i = self.rng.randrange(len(due))
        due[i], due[-1] = due[-1], due[i]
        return self._deliver(*due.pop())

    def _deliver(self, seq: int, m: Message | LinkClosed) -> set[int]:
        node = self.nodes[m.dst]
        if node.raft is None or self.group[m.src] != self.group[m.dst]:
            return set()
        if self._closed.get((m.src, m.dst), 0) > seq:
            return set()  # sent on a link whose close was seen: TCP delivers nothing after the close
        if node.paused_until > self.now:
            if node.disk_stalled and self.config.heartbeats_while_stalled and not isinstance(m, LinkClosed):
                answer = node.raft.answer_heartbeat(m)
                if answer is not None:
                    self.send_all((answer,))
            # After a stall a process first runs its timers and clients, then reads its sockets.
            resume_at = node.paused_until + self.rng.randint(0, 2 * self.config.max_delay)
            heapq.heappush(self._in_flight, (resume_at, seq, m))
            return set()
        if isinstance(m, LinkClosed):
            self._closed[m.src, m.dst] = seq
            node.raft.leader_link_closed(m.src)
        else:
            node.raft.step(m)
        return {m.dst}

    # ------------------------------------------------------------------ events

    def run(self) -> SimResult:
        """Run all steps; raises Violation (with the seed and step) when a check fails."""
        self._settle(set(range(self.n)))
        for _ in range(self.config.steps):
            self.step()
        self.checker.final_check()
        if self.workload is not None:
            self.workload.final_check()
        res = self.result
        res.ticks = self.now
        res.committed = len(self.checker.committed_terms)
        return res

    def step(self) -> None:
        self.step_no += 1
        rng = self.rng
        cfg = self.config
        self._collect_due()
        r = rng.random()
        if cfg.membership and rng.random() < cfg.member_rate:
            touched = self._change_membership()
        elif r < cfg.propose_rate:
            touched = self._propose()
        elif r < cfg.propose_rate + cfg.read_rate:
            touched = self._read()
        elif self._due and rng.random() < 0.85:
            touched = self._deliver_one()
        else:
            touched = self._tick()
        self._settle(touched)
        self.checker.after_step(touched)
        if self.workload is not None:
            self.workload.after_step()

    def event(self, kind: str, value: int = 0) -> None:
        """One step whose event is chosen by the caller (a hypothesis state machine) instead of the
        seed: "deliver" (due message number ``value``), "tick", "propose", "read", "crash" or
        "restart" (node ``value``), "partition" (bit i of ``value``: node i's side), "heal"."""
        self.step_no += 1
        self._collect_due()
        touched: set[int] = set()
        node = self.nodes[value % self.n]
        if kind == "deliver" and self._due:
            i = value % len(self._due)
            self._due[i], self._due[-1] = self._due[-1], self._due[i]
            touched = self._deliver(*self._due.pop())
        elif kind == "tick":
            touched = self._tick()
        elif kind == "propose":
            touched = self._propose()
        elif kind == "read":
            touched = self._read()
        elif kind == "crash" and node.raft is not None:
            node.crash()
        elif kind == "restart" and node.raft is None:
            node.start()
            touched = {node.id}
        elif kind == "partition":
            self.group = [(value >> i) & 1 for i in range(self.n)]
        elif kind == "heal":
            self.group = [0] * self.n
        self._settle(touched)
        self.checker.after_step(touched)

    def _settle(self, touched: set[int]) -> None:
        for i in sorted(touched):
            node = self.nodes[i]
            while node.raft is not None and node.raft.has_ready():
                node.handle_ready()

    def _leader(self) -> SimNode | None:
        """A random node that believes it leads (a deposed one that does not know it yet included)."""
        leaders = [
            node
            for node in self.nodes
            if node.raft is not None and node.raft.role == Role.LEADER and node.paused_until <= self.now
        ]
        return self.rng.choice(leaders) if leaders else None

    def _propose(self) -> set[int]:
        leader = self._leader()
        if leader is None or leader.raft is None:
            return set()
        if self.workload is not None:
            return self.workload.propose(leader)
        self._proposal_seq += 1
        leader.raft.propose(b"v%d" % self._proposal_seq)
        return {leader.id}

    def _change_membership(self) -> set[int]:
        """At a random leader: promote a learner, add a new node, or remove a member (forced now and then)."""
        leader = self._leader()
        if leader is None or leader.raft is None:
            return set()
        raft, rng, cfg = leader.raft, self.rng, self.config
        members = raft.members
        learners = sorted(members.learners)
        if learners and rng.random() < 0.7:
            change, force = ConfChange(ChangeKind.PROMOTE, rng.choice(learners)), False
        elif len(members.voters) + len(learners) < cfg.max_voters and rng.random() < 0.6:
            change, force = ConfChange(ChangeKind.ADD_LEARNER, members.next_id, f"node{members.next_id}"), False
        else:
            change = ConfChange(ChangeKind.REMOVE, rng.choice(members.ids))
            force = rng.random() < cfg.force_rate
        try:
            raft.propose_conf_change(change, force=force)
        except MembershipError:
            self.stats_changes_refused += 1
            return set()
        self.stats_changes += 1
        self.stats_leader_removals += change.kind is ChangeKind.REMOVE and change.node_id == leader.id
        if change.kind is ChangeKind.ADD_LEARNER and change.node_id == len(self.nodes):
            self._start_new_node(change.node_id)  # an id whose earlier add was truncated already has its node
        return {leader.id}

    def _start_new_node(self, node_id: int) -> None:
        self.group.append(0)
        self.n += 1
        self.checker.on_add(node_id)
        self.nodes.append(SimNode(self, node_id, joining=True))
        node = self.nodes[-1]
        assert node.raft is not None
        if self.checker.committed_terms:
            node.raft.abstain()  # a peer's handshake says the cluster has a history

    def _read(self) -> set[int]:
        leader = self._leader()
        if leader is None or leader.raft is None:
            return set()
        self._read_seq += 1
        context = b"r%d" % self._read_seq
        if leader.raft.read_index(context):
            self.checker.on_read_start(context)
        return {leader.id}

    def _tick(self) -> set[int]:
        self.now += 1
        self._faults()
        touched = set()
        skew = self.config.clock_skew
        for node in self.nodes:
            if node.raft is not None and node.paused_until > self.now:
                self._while_stalled(node)
            elif node.raft is not None:
                ticks = 1
                if skew and self.rng.random() < skew:
                    ticks = self.rng.choice((0, 2))  # a slow or a fast clock
                for _ in range(ticks):
                    node.raft.tick()
                touched.add(node.id)
        self._measure()
        return touched

    def stall_disk(self, node: SimNode, ticks: int) -> None:
        """Node ``node``'s disk stalls for ``ticks``: the node is paused, but for its heartbeats."""
        node.paused_until = self.now + ticks
        node.disk_stalled = True
        self.stats_disk_stalls += 1

    def _while_stalled(self, node: SimNode) -> None:
        """A stalled leader's heartbeats, every ``heartbeat_ticks`` of its stall."""
        raft = node.raft
        assert raft is not None
        cfg = self.config
        stalled_for = node.paused_until - self.now
        if node.disk_stalled and cfg.heartbeats_while_stalled and stalled_for % cfg.heartbeat_ticks == 0:
            self.send_all(tuple(raft.heartbeats()))

    def _faults(self) -> None:
        cfg = self.config
        rng = self.rng
        for node in self.nodes:
            if node.raft is None and node.restart_at <= self.now:
                node.start()
        if cfg.partitions:
            if self.heal_at and self.now >= self.heal_at:
                self.group = [0] * self.n
                self.heal_at = 0
            elif not self.heal_at and self.n > 1 and rng.random() < cfg.partition_rate:
                self.group = [rng.randrange(2) for _ in range(self.n)]
                self.heal_at = self.now + rng.randint(cfg.election_ticks, 10 * cfg.election_ticks)
        if cfg.pause_rate and rng.random() < cfg.pause_rate:
            node = rng.choice(self.nodes)
            node.paused_until = self.now + rng.randint(1, 4 * cfg.election_ticks)
            node.disk_stalled = False
        if cfg.disk_stall_rate and rng.random() < cfg.disk_stall_rate:
            self.stall_disk(rng.choice(self.nodes), rng.randint(1, 4 * cfg.election_ticks))
        if cfg.wipe_rate and self.n >= 3 and rng.random() < cfg.wipe_rate:
            live = [node for node in self.nodes if node.raft is not None]
            if live and all(node.caught_up for node in self.nodes):  # one replacement at a time
                rng.choice(live).wipe()
        if cfg.crashes and rng.random() < cfg.crash_rate:
            live = [node for node in self.nodes if node.raft is not None]
            if live:
                rng.choice(live).crash()

    def _measure(self) -> None:
        """Leader time: a running leader whose term a majority of the cluster shares, among the
        running nodes it can reach (a crashed or paused node is not running)."""
        res = self.result
        ok = False
        running = [node for node in self.nodes if node.raft is not None and node.paused_until <= self.now]
        for node in running:
            raft = node.raft
            if raft is not None and raft.role == Role.LEADER:
                voters = raft.members.voters
                with_it = sum(
                    1
                    for other in running
                    if other.raft is not None
                    and other.id in voters
                    and self.group[other.id] == self.group[node.id]
                    and other.raft.current_term == raft.current_term
                )
                ok = ok or with_it >= raft.members.quorum
        if ok:
            if self._leaderless_ticks:
                res.elections.append(self._leaderless_ticks)
                self._leaderless_ticks = 0
            self._first_elected = True
        else:
            self._leaderless_ticks += 1
        if self._first_elected:
            res.counted_ticks += 1
            res.leader_ticks += ok
