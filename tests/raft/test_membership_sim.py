"""The simulator's membership profile in CI: adds, promotions and removals racing with crashes and partitions
keep every safety property, and the checker notices a core that gets membership wrong."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import taskflux.raft.leader as raft_leader
import taskflux.raft.log as raft_log
from taskflux.raft.members import MEMBERS_PREFIX, members_of
from taskflux.raft.sim import SimConfig, Simulation, Violation

CI_SEEDS = 400


@pytest.mark.parametrize("stress", [False, True], ids=["crashes-and-loss", "every-fault"])
def test_membership_changes_keep_every_safety_property(stress: bool) -> None:
    failures = []
    for seed in range(CI_SEEDS):
        try:
            Simulation(seed, SimConfig.members(2000, stress=stress)).run()
        except Violation as exc:
            failures.append(str(exc))
    assert failures == []


def test_the_membership_profile_adds_promotes_and_removes() -> None:
    """Guards against a profile that checks nothing because no change ever commits."""
    added = committed = leader_removed = 0
    shapes: set[tuple[int, int]] = set()
    for seed in range(30):
        sim = Simulation(seed, SimConfig.members(2000))
        sim.run()
        added += len(sim.nodes) - sim.initial_n
        changes = [members_of(data) for data in sim.checker.applied if data.startswith(MEMBERS_PREFIX)]
        committed += len(changes)
        shapes |= {(len(m.voters), len(m.learners)) for m in changes if m is not None}
        leader_removed += sim.stats_leader_removals
    assert added > 30 and committed > 60 and leader_removed > 5
    assert {(1, 0), (2, 0), (3, 0), (2, 1), (3, 1)} <= shapes


def _first_violation(break_core: Callable[[], None], seeds: int = 300) -> Violation:
    break_core()
    for seed in range(seeds):
        try:
            Simulation(seed, SimConfig.members(2000)).run()
        except Violation as exc:
            return exc
    raise AssertionError("the simulator did not notice the broken core")


def test_a_quorum_that_counts_learners_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def counts_everyone(self: raft_leader.LeaderRole) -> None:
        matches = sorted((pr.match_index for pr in self.progress.values()), reverse=True)
        self.log.maybe_commit(matches[len(matches) // 2], self.current_term)

    found = _first_violation(lambda: monkeypatch.setattr(raft_leader.LeaderRole, "_maybe_commit", counts_everyone))
    assert "fewer than a quorum" in str(found) or "leader completeness" in str(found)


def test_changes_that_do_not_wait_for_the_previous_one_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    found = _first_violation(lambda: monkeypatch.setattr(raft_log.RaftLog, "last_members_index", lambda self: 0))
    assert "seed=" in str(found)
