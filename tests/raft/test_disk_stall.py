"""A node whose loop waits for a slow disk (between ready() and advance()) keeps the cluster's liveness
signals flowing: a leader sends heartbeats, a follower answers them. Without that, a disk stall longer than
an election timeout costs the cluster its leader."""

from __future__ import annotations

from dataclasses import replace

import pytest

from taskflux.raft.ready import Role
from taskflux.raft.sim import SimConfig, Simulation

ELECTION = SimConfig().election_ticks
STALL = 4 * ELECTION


def quiet_cluster(seed: int, *, heartbeats_while_stalled: bool) -> Simulation:
    """Three nodes, no fault but the ones a test makes, with a leader elected."""
    config = SimConfig(
        nodes=3,
        partitions=False,
        duplicate=0.0,
        clock_skew=0.0,
        wipe_rate=0.0,
        heartbeats_while_stalled=heartbeats_while_stalled,
    )
    sim = Simulation(seed, config)
    run_ticks(sim, 10 * ELECTION)
    assert leader_of(sim) is not None
    return sim


def run_ticks(sim: Simulation, ticks: int) -> None:
    until = sim.now + ticks
    for _ in range(100 * ticks):
        if sim.now >= until:
            return
        sim.step()
    raise AssertionError(f"the clock did not advance {ticks} ticks")


def leader_of(sim: Simulation) -> tuple[int, int] | None:
    """(leader id, term) when exactly one node leads."""
    leaders = [n for n in sim.nodes if n.raft is not None and n.raft.role is Role.LEADER]
    if len(leaders) != 1:
        return None
    return leaders[0].id, leaders[0].raft.current_term  # type: ignore[union-attr]


def stall_and_watch(sim: Simulation, nodes: list[int]) -> tuple[tuple[int, int] | None, int]:
    """Stall the disks of ``nodes`` for four election timeouts; the leader after, and the highest term."""
    for node in nodes:
        sim.stall_disk(sim.nodes[node], STALL)
    run_ticks(sim, STALL + 2 * ELECTION)
    return leader_of(sim), max(n.raft.current_term for n in sim.nodes if n.raft is not None)


@pytest.mark.parametrize("seed", range(5))
def test_a_leader_whose_disk_stalls_keeps_its_followers_from_campaigning(seed: int) -> None:
    sim = quiet_cluster(seed, heartbeats_while_stalled=True)
    before = leader_of(sim)
    assert before is not None
    after, highest_term = stall_and_watch(sim, [before[0]])
    assert after == before and highest_term == before[1]


@pytest.mark.parametrize("seed", range(5))
def test_followers_whose_disks_stall_keep_answering_their_leader(seed: int) -> None:
    sim = quiet_cluster(seed, heartbeats_while_stalled=True)
    before = leader_of(sim)
    assert before is not None
    followers = [n.id for n in sim.nodes if n.id != before[0]]
    after, highest_term = stall_and_watch(sim, followers)  # check-quorum would depose a leader nobody answers
    assert after == before and highest_term == before[1]


@pytest.mark.parametrize("stalled", ["leader", "followers"])
def test_without_those_signals_the_same_stall_costs_the_leader(stalled: str) -> None:
    """The control: what the two tests above prevent."""
    sim = quiet_cluster(0, heartbeats_while_stalled=False)
    before = leader_of(sim)
    assert before is not None
    nodes = [before[0]] if stalled == "leader" else [n.id for n in sim.nodes if n.id != before[0]]
    after, highest_term = stall_and_watch(sim, nodes)
    assert after != before or highest_term > before[1]


def test_disk_stalls_keep_every_safety_property() -> None:
    """Many stalls, with every other fault (the checker runs after every step)."""
    stalls = 0
    for seed in range(40):
        sim = Simulation(seed, replace(SimConfig.stress(1500), disk_stall_rate=0.03))
        sim.run()
        stalls += sim.stats_disk_stalls
    assert stalls > 100
