"""Hypothesis drives the simulated cluster event by event; the simulator's checker runs after each,
and whole logs are compared as an invariant. Also: peers' nonsense never raises out of the core."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from taskflux.raft.core import Raft
from taskflux.raft.members import MEMBERS_PREFIX
from taskflux.raft.memory import MemoryStorage
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
from taskflux.raft.ready import Role
from taskflux.raft.sim import SimConfig, Simulation
from taskflux.raft.types import Entry
from tests.raft.harness import Cluster, config


class SimulatedCluster(RuleBasedStateMachine):
    """Each rule is one simulator event chosen by hypothesis (which shrinks a failure to a short story)."""

    sim: Simulation

    @initialize(seed=st.integers(0, 2**32 - 1), nodes=st.sampled_from([1, 3, 3, 5]))
    def start(self, seed: int, nodes: int) -> None:
        self.sim = Simulation(seed, SimConfig(nodes=nodes, crashes=True, duplicate=0.05, loss=0.05))

    @rule(which=st.integers(0, 1 << 16))
    def deliver(self, which: int) -> None:
        self.sim.event("deliver", which)

    @rule(which=st.integers(0, 1 << 16))
    def deliver_many(self, which: int) -> None:
        for i in range(20):
            self.sim.event("deliver", which + i)

    @rule(ticks=st.integers(1, 12))
    def tick(self, ticks: int) -> None:
        for _ in range(ticks):
            self.sim.event("tick")
            for i in range(10):
                self.sim.event("deliver", i)

    @rule()
    def propose(self) -> None:
        self.sim.event("propose")

    @rule()
    def read(self) -> None:
        self.sim.event("read")

    @rule(node=st.integers(0, 4))
    def crash(self, node: int) -> None:
        self.sim.event("crash", node)

    @rule(node=st.integers(0, 4))
    def restart(self, node: int) -> None:
        self.sim.event("restart", node)

    @rule(sides=st.integers(0, 31))
    def partition(self, sides: int) -> None:
        self.sim.event("partition", sides)

    @rule()
    def heal(self) -> None:
        self.sim.event("heal")

    @invariant()
    def logs_match(self) -> None:
        if hasattr(self, "sim"):
            self.sim.checker.final_check()

    @invariant()
    def at_most_one_leader_per_term_now(self) -> None:
        if hasattr(self, "sim"):
            terms = [n.raft.current_term for n in self.sim.nodes if n.raft and n.raft.role == Role.LEADER]
            assert len(terms) == len(set(terms))


TestSimulatedCluster = SimulatedCluster.TestCase
TestSimulatedCluster.settings = settings(
    max_examples=60,
    stateful_step_count=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# --- nonsense from peers ---

ints = st.one_of(st.integers(-3, 8), st.integers(-(2**63), 2**63))
entries = st.lists(st.builds(Entry, ints, ints, st.binary(max_size=8)), max_size=4).map(tuple)
messages = st.one_of(
    st.builds(RequestVote, ints, ints, ints, ints, ints, st.booleans(), st.booleans()),
    st.builds(RequestVoteResponse, ints, ints, ints, st.booleans(), st.booleans()),
    st.builds(AppendEntries, ints, ints, ints, ints, ints, entries, ints),
    st.builds(AppendEntriesResponse, ints, ints, ints, st.booleans(), ints, ints, ints, ints),
    st.builds(Heartbeat, ints, ints, ints, ints, st.binary(max_size=4)),
    st.builds(HeartbeatResponse, ints, ints, ints, st.binary(max_size=4)),
    st.builds(InstallSnapshot, ints, ints, ints, ints, ints, ints, st.binary(max_size=8), ints, st.booleans()),
    st.builds(InstallSnapshotResponse, ints, ints, ints, ints, ints, st.booleans(), ints),
    st.builds(TimeoutNow, ints, ints, ints),
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(batch=st.lists(messages, max_size=12), role=st.sampled_from(["leader", "follower", "candidate"]))
def test_nonsense_from_peers_never_raises_out_of_the_core(batch: list[Message], role: str) -> None:
    c = Cluster(3, seed=1)
    c.elect(0)
    c.propose(0, b"x")
    c.deliver()
    node = 0 if role == "leader" else 1
    if role == "candidate":
        c.raft(1).campaign()
        c.settle(1)
    for m in batch:
        c.raft(node).step(m)
        c.settle(node)
        for _ in range(3):
            c.raft(node).tick()
            c.settle(node)


def test_malformed_messages_are_dropped_and_counted() -> None:
    raft = Raft(config(1, 3), MemoryStorage(), random.Random(0))
    bad: list[object] = [
        Heartbeat(-7, 1, 1, 0),  # a negative sender
        AppendEntries(0, 1, 1, 0, 0, (Entry(1, 1, MEMBERS_PREFIX + b"\x01junk"),), 0),  # a malformed membership
        Heartbeat(1, 1, 1, 0),  # from ourselves
        Heartbeat(0, 2, 1, 0),  # not for us
        Heartbeat(0, 1, -1, 0),  # negative term
        AppendEntries(0, 1, 1, 0, 0, (Entry(2, 1, b""),), 0),  # entries do not follow prev_log_index
        AppendEntries(0, 1, 1, 0, 0, (Entry(1, 5, b""),), 0),  # an entry from a future term
        InstallSnapshot(0, 1, 1, 3, 1, 10, b"xx", 5, True),  # a chunk past the end
        RequestVote(0, 1, 1, 5, 9),  # a last term above the candidate's term
        "not a message",
    ]
    for m in bad:
        raft.step(m)  # type: ignore[arg-type]
    assert raft.dropped_messages == len(bad)
    assert raft.current_term == 0 and raft.log.last_index() == 0
