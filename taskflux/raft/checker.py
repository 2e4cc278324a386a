"""The safety checks of the simulator (Raft paper, Figure 3), run after every step.

- Election safety: at most one leader per term, over the whole run (crashes included).
- Log matching: an entry is identified by (index, term); every copy persisted anywhere must carry
  the same data and follow an entry of the same term. By induction on the index, two logs holding
  the same (index, term) then agree on every entry up to it. ``final_check`` compares whole logs too.
- Leader completeness: an entry committed while its observer was at term T is in the log of every
  leader of a term above T (checked when the leader is first seen). Its committed term is checked
  whenever any node's commit index moves past it.
- State machine safety: every node applies exactly the global sequence of committed data, in order;
  a snapshot (made or installed) holds exactly a prefix of it. So applied sequences are prefixes of
  one another.
- Monotonicity. Terms: a node's persisted term never decreases over the whole run, and its current
  term never decreases while it runs (and starts at the persisted one). Commit indexes: while a node
  runs its commit index never decreases; at a restart it starts at its persisted snapshot index,
  which itself never decreases; the cluster's committed prefix (the longest commit index seen) never
  shrinks or changes, since it is checked against every later commit and apply.
- Quorums of the configuration in force: a leader was elected by votes (persisted) from a quorum of the
  voters of the membership it holds when first seen, and each index a leader commits is durable on a quorum
  of the voters of its membership in force (a copy persisted once counts: losing it is what the other checks
  catch).
- Linearizable reads: a ReadIndex answer is at least the highest commit index any node had when the
  read started.
- Honesty: no node ever drops a message as malformed or sees an impossible one (anomaly).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskflux.raft.ready import ReadState, Role
from taskflux.raft.types import Entry, HardState, SnapshotMeta

if TYPE_CHECKING:
    from taskflux.raft.sim import SimNode, Simulation


class Violation(Exception):
    """A safety property failed; the message names the seed and step to replay."""

    def __init__(self, seed: int, step: int, message: str) -> None:
        super().__init__(f"seed={seed} step={step}: {message}")
        self.seed = seed
        self.step = step
        self.detail = message


class Checker:
    """Global knowledge of a simulated run, checked incrementally."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        n = sim.n
        self.leaders: dict[int, int] = {}
        self.committed_terms: list[int] = []  # term of each committed index (index i at [i-1])
        self.commit_seen_at: list[int] = []  # the observer's term when each index was first seen committed
        self.applied: list[bytes] = []  # the one sequence every state machine must follow
        self.registry: dict[tuple[int, int], tuple[bytes, int]] = {}  # (index, term) -> (data, prev term)
        self.persisted_term = [0] * n
        self.persisted_snapshot = [0] * n
        self.current_term = [0] * n
        self.commit = [0] * n
        self.reads: dict[bytes, int] = {}
        self.holders: dict[tuple[int, int], set[int]] = {}  # (index, term) -> nodes that persisted it
        self.snapshot_floor = [0] * n  # the highest snapshot index each node ever held
        self.votes: dict[tuple[int, int], set[int]] = {}  # (term, candidate) -> nodes that persisted the vote

    def on_add(self, node_id: int) -> None:
        """A node joins the run (a new id, empty storage)."""
        assert node_id == len(self.persisted_term)
        for values in (self.persisted_term, self.persisted_snapshot, self.current_term, self.commit,
                       self.snapshot_floor):
            values.append(0)

    def fail(self, message: str) -> None:
        raise Violation(self.sim.seed, self.sim.step_no, message)

    # ------------------------------------------------------------------ lifecycle

    def on_start(self, node: SimNode) -> None:
        raft = node.raft
        assert raft is not None
        i = node.id
        self._check_persisted(node)
        snapshot = node.storage.snapshot_meta().index
        if raft.log.commit_index != snapshot:
            self.fail(f"node {i} restarted with commit {raft.log.commit_index}, snapshot at {snapshot}")
        if raft.current_term != node.storage.hard_state().term:
            self.fail(f"node {i} restarted at term {raft.current_term}, persisted {node.storage.hard_state()}")
        if node.applied != self.applied[: len(node.applied)] or len(node.applied) != snapshot:
            self.fail(f"node {i} restarted from a snapshot that is not a prefix of the applied sequence")
        self.current_term[i] = raft.current_term
        self.commit[i] = raft.log.commit_index

    def on_crash(self, node: SimNode) -> None:
        self._check_persisted(node)

    def on_wipe(self, node: SimNode) -> None:
        """The node's storage is gone: its durable term, snapshot and commit start again from zero."""
        i = node.id
        self.persisted_term[i] = self.persisted_snapshot[i] = self.current_term[i] = self.commit[i] = 0

    def _check_persisted(self, node: SimNode) -> None:
        i = node.id
        term = node.storage.hard_state().term
        snapshot = node.storage.snapshot_meta().index
        if term < self.persisted_term[i]:
            self.fail(f"node {i}: persisted term went back from {self.persisted_term[i]} to {term}")
        if snapshot < self.persisted_snapshot[i]:
            self.fail(f"node {i}: snapshot index went back from {self.persisted_snapshot[i]} to {snapshot}")
        self.persisted_term[i] = term
        self.persisted_snapshot[i] = snapshot

    # ------------------------------------------------------------------ driver events

    def on_persist(self, node: SimNode, entries: tuple[Entry, ...]) -> None:
        first = entries[0].index
        try:
            prev_term = node.storage.term(first - 1) if first > 1 else 0
        except Exception as exc:  # a gap or an append below the snapshot: the core's own bug
            self.fail(f"node {node.id} persists entries from {first} that do not follow its log: {exc}")
            return
        for entry in entries:
            key = (entry.index, entry.term)
            value = (entry.data, prev_term)
            known = self.registry.setdefault(key, value)
            self.holders.setdefault(key, set()).add(node.id)
            if known != value:
                self.fail(f"log matching: node {node.id} persists {entry} after term {prev_term}, "
                          f"elsewhere {key} holds {known}")  # fmt: skip
            prev_term = entry.term

    def on_apply(self, node: SimNode, entry: Entry) -> None:
        if len(self.committed_terms) < entry.index:
            self._check_commit(node)  # the commit happened in this step: record it first
        index = len(node.applied) + 1
        if entry.index != index:
            self.fail(f"node {node.id} applies index {entry.index}, expected {index}")
        if index <= len(self.applied):
            if self.applied[index - 1] != entry.data:
                self.fail(f"state machine safety: node {node.id} applies {entry} where others applied "
                          f"{self.applied[index - 1]!r}")  # fmt: skip
        elif index == len(self.applied) + 1:
            self.applied.append(entry.data)
        if index > len(self.committed_terms) or self.committed_terms[index - 1] != entry.term:
            self.fail(f"node {node.id} applies {entry}, which is not the committed entry at {index}")

    def on_hard_state(self, node: SimNode, state: HardState) -> None:
        if state.vote >= 0:
            self.votes.setdefault((state.term, state.vote), set()).add(node.id)

    def on_snapshot_installed(self, node: SimNode, meta: SnapshotMeta) -> None:
        self.snapshot_floor[node.id] = max(self.snapshot_floor[node.id], meta.index)
        if len(node.applied) != meta.index or node.applied != self.applied[: meta.index]:
            self.fail(f"node {node.id} installs a snapshot at {meta.index} that is not the applied prefix")

    def on_read_start(self, context: bytes) -> None:
        self.reads[context] = len(self.committed_terms)

    def on_read_state(self, node: SimNode, read: ReadState) -> None:
        needed = self.reads.pop(read.context, None)
        if needed is None:
            self.fail(f"node {node.id} answers a read {read.context!r} that was never started (or twice)")
            return
        if read.ok and read.index < needed:
            self.fail(f"stale read: {read} at node {node.id}, but index {needed} was committed before it")

    # ------------------------------------------------------------------ after every step

    def after_step(self, touched: set[int]) -> None:
        for i in touched:
            node = self.sim.nodes[i]
            raft = node.raft
            if raft is None:
                continue
            if raft.current_term < self.current_term[i]:
                self.fail(f"node {i}: term went back from {self.current_term[i]} to {raft.current_term}")
            self.current_term[i] = raft.current_term
            self._check_persisted(node)
            self._check_commit(node)
            if raft.role == Role.LEADER:
                leader = self.leaders.get(raft.current_term)
                if leader is None:
                    self.leaders[raft.current_term] = i
                    self._check_leader_completeness(node)
                    self._check_election_quorum(node)
                elif leader != i:
                    self.fail(f"election safety: nodes {leader} and {i} both lead term {raft.current_term}")
            if raft.dropped_messages or raft.anomalies:
                self.fail(f"node {i} dropped {raft.dropped_messages} malformed messages, "
                          f"saw {raft.anomalies} impossible ones")  # fmt: skip

    def _check_commit(self, node: SimNode) -> None:
        raft = node.raft
        assert raft is not None
        i = node.id
        commit = raft.log.commit_index
        if commit < self.commit[i]:
            self.fail(f"node {i}: commit index went back from {self.commit[i]} to {commit}")
        if commit > self.commit[i] and raft.role == Role.LEADER:
            self._check_commit_quorum(node, commit)
        for index in range(self.commit[i] + 1, commit + 1):
            term = raft.log.term(index)
            if index <= len(self.committed_terms):
                if term is not None and term != self.committed_terms[index - 1]:
                    self.fail(f"node {i} commits term {term} at {index}, committed was "
                              f"term {self.committed_terms[index - 1]}")  # fmt: skip
            elif term is None:
                self.fail(f"node {i} commits index {index} that it does not hold")
            else:
                self.committed_terms.append(term)
                self.commit_seen_at.append(raft.current_term)
        self.commit[i] = commit

    def _check_election_quorum(self, node: SimNode) -> None:
        raft = node.raft
        assert raft is not None
        members = raft.members
        granted = self.votes.get((raft.current_term, node.id), set()) & members.voters
        if len(granted) < members.quorum:
            self.fail(f"node {node.id} leads term {raft.current_term} with votes from {sorted(granted)}, fewer "
                      f"than a quorum of its voters {sorted(members.voters)}")  # fmt: skip

    def _check_commit_quorum(self, node: SimNode, commit: int) -> None:
        raft = node.raft
        assert raft is not None
        term = raft.log.term(commit)
        members = raft.members
        holders = self.holders.get((commit, term), set()) if term is not None else set()
        durable = {v for v in members.voters if v in holders or self.snapshot_floor[v] >= commit}
        if len(durable) < members.quorum:
            self.fail(f"node {node.id} commits index {commit} held by {sorted(durable)} only, fewer than a "
                      f"quorum of its voters {sorted(members.voters)}")  # fmt: skip

    def _check_leader_completeness(self, node: SimNode) -> None:
        raft = node.raft
        assert raft is not None
        term = raft.current_term
        for index in range(raft.log.snapshot_index() + 1, len(self.committed_terms) + 1):
            if self.commit_seen_at[index - 1] < term and raft.log.term(index) != self.committed_terms[index - 1]:
                self.fail(f"leader completeness: node {node.id} leads term {term} without the entry "
                          f"committed at {index} (term {self.committed_terms[index - 1]})")  # fmt: skip

    def final_check(self) -> None:
        """Compare whole logs pairwise (persisted + unstable) of the live nodes."""
        logs = []
        for node in self.sim.nodes:
            if node.raft is None:
                continue
            log = node.raft.log
            entries = log.entries(log.first_index(), log.last_index() + 1, 1 << 62) or []
            logs.append((node.id, {e.index: e for e in entries}))
        for a in range(len(logs)):
            for b in range(a + 1, len(logs)):
                (ia, la), (ib, lb) = logs[a], logs[b]
                common = sorted(set(la) & set(lb), reverse=True)
                matched = False
                for index in common:
                    if matched or la[index].term == lb[index].term:
                        matched = True
                        if la[index] != lb[index]:
                            self.fail(f"log matching: nodes {ia} and {ib} differ at {index} below a "
                                      f"common (index, term)")  # fmt: skip
