"""A hand-driven raft cluster for scenario tests: the test decides every tick and every delivery."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from taskflux.raft.config import RaftConfig
from taskflux.raft.core import Raft
from taskflux.raft.genesis import is_no_op
from taskflux.raft.members import Members
from taskflux.raft.memory import MemoryStorage
from taskflux.raft.messages import Message
from taskflux.raft.ready import ReadState, Ready, Role
from taskflux.raft.types import Entry, SnapshotMeta


def config(node_id: int = 0, cluster_size: int = 3, **overrides: Any) -> RaftConfig:
    return RaftConfig(node_id=node_id, cluster_size=cluster_size, **overrides)


def drive(raft: Raft, storage: MemoryStorage) -> Ready:
    """Handle one Ready as the driver contract says (no messages sent); returns it."""
    rd = raft.ready()
    if rd.snapshot is not None:
        storage.save_snapshot(rd.snapshot.meta, [rd.snapshot.data])
    if rd.hard_state is not None:
        storage.set_hard_state(rd.hard_state)
    storage.append(rd.entries)
    raft.advance()
    return rd


class Cluster:
    """n nodes over MemoryStorage; sent messages wait in ``outbox`` until ``deliver()``."""

    def __init__(self, n: int = 3, seed: int = 0, **overrides: Any) -> None:
        self.n = n
        self.overrides = overrides
        self.rng = random.Random(seed)
        self.storages = [MemoryStorage() for _ in range(n)]
        self.nodes: list[Raft | None] = [None] * n
        self.applied: list[list[Entry]] = [[] for _ in range(n)]
        self.read_states: list[list[ReadState]] = [[] for _ in range(n)]
        self.outbox: list[Message] = []
        self.delivered: list[Message] = []  # every message that reached its node, in order
        self.cut: set[frozenset[int]] = set()
        self.joined: set[int] = set()  # nodes added at run time: they start knowing no membership
        for i in range(n):
            self.restart(i)

    def raft(self, i: int) -> Raft:
        node = self.nodes[i]
        assert node is not None, f"node {i} is down"
        return node

    # --- the driver ---

    def settle(self, *ids: int) -> None:
        for i in ids or range(self.n):
            node = self.nodes[i]
            while node is not None and node.has_ready():
                self.handle(i)

    def handle(self, i: int) -> Ready:
        raft, storage = self.raft(i), self.storages[i]
        rd = raft.ready()
        self.outbox.extend(rd.messages)
        if rd.snapshot is not None:
            storage.save_snapshot(rd.snapshot.meta, [rd.snapshot.data])
            self.applied[i] = [Entry(0, 0, rd.snapshot.data)]
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
        storage.append(rd.entries)
        self.outbox.extend(rd.messages_after_persist)
        self.applied[i].extend(rd.committed_entries)
        self.read_states[i].extend(rd.read_states)
        raft.advance()
        return rd

    # --- the network ---

    def deliver(self, drop: Callable[[Message], bool] = lambda m: False, rounds: int = 1000) -> int:
        """Deliver messages (and the ones they cause) until none is left; returns how many went through."""
        count = 0
        for _ in range(rounds):
            if not self.outbox:
                return count
            batch, self.outbox = self.outbox, []
            for m in batch:
                node = self.nodes[m.dst]
                if node is None or frozenset((m.src, m.dst)) in self.cut or drop(m):
                    continue
                node.step(m)
                self.delivered.append(m)
                count += 1
                self.settle(m.dst)
        raise AssertionError("the cluster did not go quiet")

    def isolate(self, i: int) -> None:
        self.cut |= {frozenset((i, j)) for j in range(self.n) if j != i}

    def heal(self) -> None:
        self.cut.clear()

    # --- time and faults ---

    def tick(self, i: int, ticks: int = 1) -> None:
        for _ in range(ticks):
            self.raft(i).tick()
            self.settle(i)

    def tick_all(self, ticks: int = 1, deliver: bool = True) -> None:
        for _ in range(ticks):
            for i in range(self.n):
                if self.nodes[i] is not None:
                    self.tick(i)
            if deliver:
                self.deliver()

    def crash(self, i: int) -> None:
        self.nodes[i] = None
        self.applied[i] = []

    def restart(self, i: int, caught_up: bool = True) -> None:
        if i in self.joined:
            cfg = RaftConfig(node_id=i, cluster_size=1, initial_members=Members(), **self.overrides)
        else:
            cfg = config(i, self.n - len(self.joined), **self.overrides)
        self.nodes[i] = Raft(cfg, self.storages[i], random.Random(self.rng.getrandbits(32)), caught_up=caught_up)
        self.settle(i)

    def add_node(self) -> int:
        """Start a new, empty node with the next id (not yet a member: a leader must add it)."""
        i = self.n
        self.n += 1
        self.storages.append(MemoryStorage())
        self.nodes.append(None)
        self.applied.append([])
        self.read_states.append([])
        self.joined.add(i)
        self.restart(i, caught_up=False)
        return i

    def wipe(self, i: int, abstain: bool = True) -> None:
        """Replace node ``i`` by an empty one under the same id; with ``abstain`` it has heard that the
        cluster has a history (a peer's handshake), as the node runtime tells it."""
        self.crash(i)
        self.storages[i] = MemoryStorage()
        self.restart(i, caught_up=False)
        if abstain:
            self.raft(i).abstain()

    # --- conveniences ---

    def elect(self, i: int) -> None:
        self.raft(i).campaign()
        self.settle(i)
        self.deliver()
        assert self.raft(i).role == Role.LEADER, f"node {i} did not win: {self.raft(i).soft_state}"

    def leaders(self) -> list[int]:
        return [i for i, node in enumerate(self.nodes) if node is not None and node.role == Role.LEADER]

    def propose(self, i: int, data: bytes) -> int:
        index = self.raft(i).propose(data)
        assert index is not None, f"node {i} refused a proposal"
        self.settle(i)
        return index

    def log(self, i: int) -> list[tuple[int, int, bytes]]:
        raft = self.raft(i)
        entries = raft.log.entries(raft.log.first_index(), raft.log.last_index() + 1, 1 << 60) or []
        return [(e.index, e.term, e.data) for e in entries]

    def applied_data(self, i: int) -> list[bytes]:
        return [e.data for e in self.applied[i] if not is_no_op(e.data)]

    def compact(self, i: int) -> SnapshotMeta:
        """Snapshot node ``i``'s applied state (the applied data joined) and compact its log."""
        raft = self.raft(i)
        index = raft.log.applied_index
        meta = raft.snapshot_meta(index)
        self.storages[i].save_snapshot(meta, [b"|".join(self.applied_data(i))])
        raft.compacted(meta)
        return meta
