"""The queue state machine under the raft simulator, in CI: idempotent enqueues retried across leader changes,
due times, failed deliveries and dead letters keep their promises through crashes, partitions, pauses and
membership changes; and the workload's checks notice a state machine that breaks them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from taskflux.domain.manager import QueueManager
from taskflux.domain.queue import Queue
from taskflux.domain.sim_workload import QueueWorkload
from taskflux.raft.sim import SimConfig, Simulation, Violation

CI_SEEDS = 150
QUEUE_RATE = 0.2

PROFILES = {
    "default": SimConfig(propose_rate=QUEUE_RATE),
    "crashes-loss-pauses": SimConfig(propose_rate=QUEUE_RATE, crashes=True, loss=0.01, pause_rate=0.002),
    "membership": replace(SimConfig.members(2000), propose_rate=QUEUE_RATE),
    "every-fault": replace(SimConfig.stress(2000), propose_rate=QUEUE_RATE),
}


def run(seed: int, config: SimConfig) -> Simulation:
    sim = Simulation(seed, config, QueueWorkload)
    sim.run()
    return sim


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_the_queue_promises_hold_under_faults(profile: str) -> None:
    failures = []
    for seed in range(CI_SEEDS):
        try:
            run(seed, PROFILES[profile])
        except Violation as exc:
            failures.append(str(exc))
    assert failures == []


def test_the_workload_exercises_every_feature() -> None:
    """Guards against a workload that checks nothing because nothing happens."""
    totals: dict[str, int] = {}
    for seed in range(20):
        workload = run(seed, PROFILES["crashes-loss-pauses"]).workload
        assert isinstance(workload, QueueWorkload)
        for name, value in workload.stats.items():
            totals[name] = totals.get(name, 0) + value
    assert totals["enqueued"] > 500 and totals["acked"] > 200 and totals["delayed"] > 100
    assert totals["retries"] > 50 and totals["duplicates"] > 20 and totals["dead_lettered"] > 10


def _first_violation(break_machine: Callable[[], None], seeds: int = 100) -> Violation:
    break_machine()
    for seed in range(seeds):
        try:
            run(seed, PROFILES["crashes-loss-pauses"])
        except Violation as exc:
            return exc
    raise AssertionError("the workload did not notice the broken state machine")


def test_forgotten_keys_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    found = _first_violation(lambda: monkeypatch.setattr(Queue, "known_key", lambda *_: None))
    assert "added twice" in str(found)


def test_records_ready_before_their_time_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    place = Queue.place

    def ignores_delays(self: Queue, record, clock: int) -> bool:  # type: ignore[no-untyped-def]
        return place(self, record, max(clock, record.not_before))

    found = _first_violation(lambda: monkeypatch.setattr(Queue, "place", ignores_delays))
    assert "before it is due" in str(found)


def test_uncounted_failures_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    apply = QueueManager.apply

    def drops_returns(self: QueueManager, command):  # type: ignore[no-untyped-def]
        result = apply(self, command)
        if type(command).__name__ == "ReturnRecords":
            for record_id, _ in command.returns:  # put the record back as it was before the failure
                queue = self.get(command.name)
                record = queue.take(record_id) if queue is not None else None
                if record is not None and queue is not None:
                    queue.place(record._replace(failed_deliveries=max(0, record.failed_deliveries - 1)), self.clock)
        return result

    found = _first_violation(lambda: monkeypatch.setattr(QueueManager, "apply", drops_returns))
    assert "failed deliveries" in str(found) or "dead-lettered" in str(found)


def test_a_machine_that_differs_between_nodes_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    apply = QueueManager.apply
    chaos = random.Random(7)

    def sometimes_skips(self: QueueManager, command):  # type: ignore[no-untyped-def]
        if type(command).__name__ == "RemoveRecord" and chaos.random() < 0.3:
            return apply(self, type(command)(command.name, command.incarnation + 1000, command.record_id))
        return apply(self, command)

    found = _first_violation(lambda: monkeypatch.setattr(QueueManager, "apply", sometimes_skips))
    assert "result" in str(found) or "different states" in str(found)
