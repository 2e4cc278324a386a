"""The queue state machine under the raft simulator (``taskflux.raft.sim``): producers and consumers at the
simulated leader, every node applying the committed entries to its own QueueManager.

A producer enqueues records with idempotency keys (some delayed, some "poison"), one at a time, and retries the
pending one with the same key when it has not seen it committed in time or the leader changed; now and then it
repeats a key it already saw committed (an answer that was lost). Consumers reserve ready records at the leader
and ack them, fail them (a failed delivery, logged) or hold them; a poison record always fails, so it must end in
the dead-letter queue. The leader proposes a Tick when a delayed record falls due. Leader time is the simulated
clock (10 ms a tick) plus a fixed skew per node.

Checked after every applied entry and at the end:
- determinism: every node gets the same result for the same log index, and nodes at the same applied index hold
  the same state (reservations aside);
- a key is added at most once: a retry, at any leader, answers the first record's id;
- no record is handed out before it is due (by the state machine's clock), or again after its failed deliveries
  reached the limit;
- nothing acknowledged is lost: every key the producer saw committed is, in the state of everything committed,
  still stored, removed by an ack, or in the dead-letter queue;
- failed deliveries: each record counts exactly the failures logged for it, a record is dead-lettered at exactly
  ``MAX_DELIVERIES`` of them, and a poison record is never acked.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from taskflux.domain.commands import (
    POLICY_DELAY,
    AddRecords,
    Command,
    CreateQueue,
    NewRecord,
    RemoveRecord,
    ReturnRecords,
    Tick,
)
from taskflux.domain.entry_codec import CodecError, decode_command, encode_command
from taskflux.domain.manager import QueueManager
from taskflux.domain.policies import MAX_DEDUP_WINDOW_MS, DeliveryPolicies
from taskflux.domain.results import RecordRemoved, RecordsAdded, Result, ReturnOutcome
from taskflux.raft.genesis import is_no_op
from taskflux.raft.ready import Role

if TYPE_CHECKING:
    from taskflux.raft.sim import SimNode, Simulation

TICK_MS = 10
JOBS, DEAD = "jobs", "dead"
MAX_DELIVERIES = 3
RETRY_DELAY_MS = 3 * TICK_MS
POISON = b"poison"
SETUP = (CreateQueue.of(DEAD), CreateQueue.of(JOBS, delivery=DeliveryPolicies(
    max_deliveries=MAX_DELIVERIES, dead_letter_queue=DEAD, retry_delay_ms=RETRY_DELAY_MS,
    dedup_window_ms=MAX_DEDUP_WINDOW_MS, dedup_max_keys=10**6)))


@dataclass(slots=True)
class Pending:
    """The producer's enqueue that it has not seen committed yet."""

    key: bytes
    record: NewRecord
    at: int  # the tick it was last proposed
    node: int  # the node it was proposed to


@dataclass(slots=True)
class Held:
    """A record a consumer reserved at a leader."""

    node: int
    term: int
    queue: str
    incarnation: int
    record_id: int


class QueueWorkload:
    """Producers and consumers of the queue state machine on a simulated cluster (see the module's docstring)."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.rng = random.Random(sim.rng.getrandbits(64))
        self.managers: dict[int, QueueManager] = {}
        self.skew: dict[int, int] = {}
        self.results: dict[int, str] = {}  # log index -> the result the first node to apply it got
        self.fresh: dict[bytes, int] = {}  # key -> the id of the record it added
        self.acked: set[bytes] = set()  # keys the producer saw committed
        self.removed: set[tuple[str, int]] = set()  # (queue, id) removed by an ack
        self.dead_letters: set[int] = set()  # ids in JOBS moved to the dead-letter queue
        self.failures: dict[int, int] = {}  # id in JOBS -> failed deliveries logged
        self.poison: set[int] = set()  # ids of poison records in JOBS
        self.pending: Pending | None = None
        self.held: list[Held] = []
        self.next_key = 0
        self.stats = {"enqueued": 0, "retries": 0, "duplicates": 0, "delivered": 0, "acked": 0, "failed": 0,
                      "dead_lettered": 0, "ticks": 0, "delayed": 0}

    # --- the nodes' state machines ---

    def on_start(self, node: SimNode) -> None:
        manager = self.managers[node.id] = QueueManager()
        self.skew.setdefault(node.id, self.rng.randint(-5, 5) * TICK_MS // 5)
        for index, data in enumerate(node.applied, start=1):
            self._apply(node.id, manager, data, index)

    def on_apply(self, node: SimNode, data: bytes, index: int) -> None:
        self._apply(node.id, self.managers[node.id], data, index)

    def _apply(self, node_id: int, manager: QueueManager, data: bytes, index: int) -> None:
        if is_no_op(data):
            return
        try:
            command = decode_command(data)
        except CodecError as error:
            self.sim.checker.fail(f"node {node_id}: entry {index} does not decode: {error}")
        result = manager.apply(command)
        manager.woken.clear()
        seen = repr(result)
        first = self.results.setdefault(index, seen)
        if first != seen:
            self.sim.checker.fail(f"node {node_id} applied entry {index} ({command}) with result {seen}; "
                                  f"another node got {first}")
        if first is seen:  # the first application anywhere: what the cluster decided
            self._decided(command, result)

    def _decided(self, command: Command, result: Result) -> None:
        if isinstance(command, AddRecords) and isinstance(result, RecordsAdded):
            for record, record_id, added in zip(command.records, result.record_ids, result.added, strict=True):
                key = record.key
                assert key is not None
                known = self.fresh.get(key)
                if added and known is not None:
                    self.sim.checker.fail(f"key {key!r} added twice: records {known} and {record_id}")
                if not added and known != record_id:
                    self.sim.checker.fail(f"a retry of key {key!r} answered {record_id}, its record is {known}")
                self.fresh[key] = record_id
                self.acked.add(key)
                self.stats["duplicates"] += not added
                if added and record.payload == POISON:
                    self.poison.add(record_id)
        elif isinstance(command, RemoveRecord) and isinstance(result, RecordRemoved) and result.found:
            self.removed.add((command.name, command.record_id))
            self.stats["acked"] += 1
        elif isinstance(command, ReturnRecords) and command.name == JOBS:
            for (record_id, _), outcome in zip(command.returns, getattr(result, "outcomes", ()), strict=False):
                if outcome != ReturnOutcome.MISSING:
                    self.failures[record_id] = self.failures.get(record_id, 0) + 1
                if outcome == ReturnOutcome.DEAD_LETTERED:
                    if self.failures[record_id] != MAX_DELIVERIES:
                        self.sim.checker.fail(f"record {record_id} dead-lettered after {self.failures[record_id]} "
                                              f"failed deliveries, not {MAX_DELIVERIES}")
                    self.dead_letters.add(record_id)
                    self.stats["dead_lettered"] += 1

    # --- clients at the leader ---

    def propose(self, leader: SimNode) -> set[int]:
        raft = leader.raft
        assert raft is not None
        manager = self.managers[leader.id]
        now = self.sim.now * TICK_MS + self.skew[leader.id]
        self._drop_stale_holds()
        if manager.get(JOBS) is None or manager.get(DEAD) is None:
            for command in SETUP:
                raft.propose(encode_command(command))
            return {leader.id}
        due = manager.next_due()
        choice = self.rng.random()
        if due is not None and due <= now and choice < 0.3:
            raft.propose(encode_command(Tick(now)))
            self.stats["ticks"] += 1
        elif choice < 0.6:
            self._produce(leader, now)
        else:
            self._consume(leader, manager, now)
        return {leader.id}

    def _produce(self, leader: SimNode, now: int) -> None:
        raft = leader.raft
        assert raft is not None
        pending = self.pending
        if pending is not None and pending.key in self.acked:
            pending = self.pending = None
        if pending is None and self.acked and self.rng.random() < 0.05:
            key = self.rng.choice(sorted(self.acked))  # a retry of an enqueue whose answer was lost
            raft.propose(encode_command(AddRecords(JOBS, now, (NewRecord(0, b"again", key),))))
            self.stats["retries"] += 1
            return
        if pending is not None:
            stale = self.sim.now - pending.at > 3 * self.sim.config.election_ticks
            if not stale and pending.node == leader.id:
                return
            self.stats["retries"] += 1
        else:
            self.next_key += 1
            key = b"k%d" % self.next_key
            not_before = 0
            if self.rng.random() < 0.3:
                not_before = now + self.rng.randint(1, 30) * TICK_MS
                self.stats["delayed"] += 1
            payload = POISON if self.rng.random() < 0.1 else b"r%d" % self.next_key
            pending = self.pending = Pending(key, NewRecord(self.rng.randint(-3, 3), payload, key, not_before), 0, 0)
            self.stats["enqueued"] += 1
        pending.at, pending.node = self.sim.now, leader.id
        raft.propose(encode_command(AddRecords(JOBS, now, (pending.record,))))

    def _consume(self, leader: SimNode, manager: QueueManager, now: int) -> None:
        raft = leader.raft
        assert raft is not None
        name = DEAD if self.rng.random() < 0.15 else JOBS
        queue = manager.get(name)
        if queue is None:
            return
        record = queue.reserve()
        if record is None:
            return
        self.stats["delivered"] += 1
        if record.not_before > manager.clock:
            self.sim.checker.fail(f"record {record.id} of {name} handed out at state time {manager.clock}, "
                                  f"before it is due ({record.not_before})")
        if name == JOBS and record.failed_deliveries >= MAX_DELIVERIES:
            self.sim.checker.fail(f"record {record.id} handed out after {record.failed_deliveries} failed "
                                  "deliveries: it belongs in the dead-letter queue")
        if name == DEAD and (record.origin is None or record.failed_deliveries != MAX_DELIVERIES):
            self.sim.checker.fail(f"dead letter {record} has no origin or the wrong count")
        choice = self.rng.random()
        if name == JOBS and (record.payload == POISON or choice < 0.2):
            raft.propose(encode_command(ReturnRecords(name, queue.incarnation, now, ((record.id, POLICY_DELAY),))))
            self.stats["failed"] += 1
        elif name == DEAD or choice < 0.9:
            raft.propose(encode_command(RemoveRecord(name, queue.incarnation, record.id)))
        # else: held, until this node stops leading (the consumer's session then gives it back)
        self.held.append(Held(leader.id, raft.current_term, name, queue.incarnation, record.id))

    def _drop_stale_holds(self) -> None:
        """Reservations at a node that no longer leads in the same term go back, as their sessions would."""
        kept = []
        for held in self.held:
            node = self.sim.nodes[held.node]
            raft = node.raft
            if raft is not None and raft.role is Role.LEADER and raft.current_term == held.term:
                kept.append(held)
                continue
            queue = self.managers[held.node].get(held.queue) if raft is not None else None
            if queue is not None and queue.incarnation == held.incarnation:
                queue.release(held.record_id)
        self.held = kept

    # --- checks ---

    def after_step(self) -> None:
        if self.sim.step_no % 50 == 0:
            self._check_same_states()

    def final_check(self) -> None:
        self._check_same_states()
        manager = QueueManager()  # the state of everything committed (some node applied it; maybe no live one)
        for data in self.sim.checker.applied:
            if not is_no_op(data):
                manager.apply(decode_command(data))
        jobs, dead = manager.get(JOBS), manager.get(DEAD)
        dead_origins = {record.origin.record_id: record for record in dead.records()
                        if record.origin is not None} if dead is not None else {}
        for key in self.acked:
            record_id = self.fresh[key]
            if (JOBS, record_id) in self.removed or record_id in self.dead_letters:
                continue
            if jobs is None or record_id not in jobs:
                self.sim.checker.fail(f"record {record_id} (key {key!r}) was committed and is gone")
        for record_id, record in dead_origins.items():
            if record.failed_deliveries != MAX_DELIVERIES or record_id not in self.dead_letters:
                self.sim.checker.fail(f"dead letter from record {record_id} has {record.failed_deliveries} failures")
        for record_id in self.poison:
            if (JOBS, record_id) in self.removed:
                self.sim.checker.fail(f"poison record {record_id} was acked: its consumers always fail it")
        for record in jobs.records() if jobs is not None else ():
            if record.failed_deliveries != self.failures.get(record.id, 0):
                self.sim.checker.fail(f"record {record.id} counts {record.failed_deliveries} failed deliveries; "
                                      f"{self.failures.get(record.id, 0)} were logged")

    def _check_same_states(self) -> None:
        by_index: dict[int, tuple[int, Any]] = {}
        for node in self.sim.nodes:
            if node.raft is None:
                continue
            state = canonical_state(self.managers[node.id])
            other = by_index.setdefault(len(node.applied), (node.id, state))
            if other[1] != state:
                self.sim.checker.fail(f"nodes {other[0]} and {node.id} applied {len(node.applied)} entries and "
                                      "hold different states")


def canonical_state(manager: QueueManager) -> Any:
    """A manager's replicated state, comparable between nodes: reservations are leader-local, so each queue's
    records are compared as a set (sorted by id)."""
    queues = []
    for queue in manager.queues():
        frozen = queue.freeze()
        records = sorted((record.id, record.priority, record.payload, record.failed_deliveries, record.not_before,
                          record.origin) for record in frozen.records())
        queues.append((queue.name, queue.incarnation, queue.last_id, queue.policies, records, frozen.keys,
                       queue.delayed_count))
    return manager.clock, manager.next_incarnation, queues
