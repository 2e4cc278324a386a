"""The simulator in CI: hundreds of seeded runs with every fault, and the properties of the simulator itself."""

from __future__ import annotations

from dataclasses import replace

import pytest

import taskflux.raft.log as raft_log
from scripts.simulate import main as simulate_main
from taskflux.raft.sim import SimConfig, Simulation, Violation

CI_SEEDS = 300
CI_STEPS = 2000


def test_300_seeds_of_2000_steps_with_every_fault_keep_every_safety_property() -> None:
    failures = []
    for seed in range(CI_SEEDS):
        try:
            Simulation(seed, SimConfig.stress(CI_STEPS)).run()
        except Violation as exc:
            failures.append(str(exc))
    assert failures == []


def test_the_default_profile_keeps_safety_too() -> None:
    for seed in range(10_000, 10_060):
        Simulation(seed, SimConfig(crashes=True, loss=0.05)).run()


def test_a_leader_exists_at_least_95_percent_of_the_time_with_5_percent_loss_and_crashes() -> None:
    leader_ticks = counted_ticks = 0
    for seed in range(100):
        result = Simulation(seed, SimConfig(loss=0.05, crashes=True)).run()
        leader_ticks += result.leader_ticks
        counted_ticks += result.counted_ticks
    assert leader_ticks / counted_ticks >= 0.95


def test_runs_exercise_snapshots_crashes_and_commits() -> None:
    """Guards against a simulator that checks nothing because nothing happens."""
    snapshots = crashes = committed = 0
    for seed in range(20):
        sim = Simulation(seed, SimConfig.stress())
        result = sim.run()
        snapshots += sum(node.storage.snapshot_meta().index > 0 for node in sim.nodes)
        crashes += sim.stats_ready_crashes
        committed += result.committed
    assert snapshots > 20 and crashes > 0 and committed > 20 * 50


def test_a_seed_replays_exactly() -> None:
    a = Simulation(1234, SimConfig.stress()).run()
    b = Simulation(1234, SimConfig.stress()).run()
    assert (a.ticks, a.committed, a.leader_ticks, a.elections) == (b.ticks, b.committed, b.leader_ticks, b.elections)


def _find_violation(monkeypatch: pytest.MonkeyPatch) -> Violation:
    # A broken election restriction (§5.4.1): every log counts as up to date.
    monkeypatch.setattr(raft_log.RaftLog, "is_up_to_date", lambda self, index, term: True)
    for seed in range(200):
        try:
            Simulation(seed, SimConfig.stress()).run()
        except Violation as exc:
            return exc
    raise AssertionError("the simulator did not notice a broken election restriction")


def test_a_broken_core_is_caught_and_its_seed_fails_the_same_way_again(monkeypatch: pytest.MonkeyPatch) -> None:
    first = _find_violation(monkeypatch)
    with pytest.raises(Violation) as again:
        Simulation(first.seed, SimConfig.stress()).run()
    assert str(again.value) == str(first)
    assert f"seed={first.seed} step={first.step}" in str(first)


def test_simulate_script_prints_one_summary_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert simulate_main(["--seeds", "3", "--steps", "300", "--loss", "0.05", "--crashes"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert out[0].startswith("seeds=3 steps=300 violations=0 leader_time=")
    assert "mean_election_ticks=" in out[0]


def test_simulate_script_fails_and_names_the_seed_on_a_violation(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(raft_log.RaftLog, "is_up_to_date", lambda self, index, term: True)
    code = simulate_main(["--seeds", "30", "--crashes", "--loss", "0.05"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 1
    first = next(line for line in lines if line.startswith("VIOLATION seed="))
    seed = first.split()[1].removeprefix("seed=")
    assert f"(replay: scripts/simulate.py --seed {seed} --steps 2000 --loss 0.05 --crashes)" in first
    assert lines[-1].startswith("seeds=30 steps=2000 violations=") and "violations=0" not in lines[-1]


def test_committing_an_earlier_term_by_counting_replicas_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Figure 8's mistake (commit by counting replicas, whatever the entry's term) is noticed."""

    def commit_any_term(self: raft_log.RaftLog, index: int, term: int) -> bool:
        if index > self.commit_index:
            self.commit_to(index)
            return True
        return False

    monkeypatch.setattr(raft_log.RaftLog, "maybe_commit", commit_any_term)
    with pytest.raises(Violation):
        for seed in range(100):
            Simulation(seed, SimConfig.stress()).run()


def test_wipes_are_safe_only_because_an_emptied_node_abstains() -> None:
    """The checker covers the abstaining state: the same seeds lose committed entries when a wiped node votes
    at once, and keep every property when it abstains until caught up."""
    config = SimConfig(nodes=3, crashes=True, wipe_rate=0.003)
    unsafe = []
    for seed in range(80):
        Simulation(seed, config).run()
        try:
            Simulation(seed, replace(config, abstain=False)).run()
        except Violation as exc:
            unsafe.append(exc.detail)
    assert unsafe and all("leader completeness" in detail or "commits term" in detail for detail in unsafe), unsafe
