"""Scenario tests over a hand-driven cluster: elections, failures, snapshots, transfer, reads."""

from __future__ import annotations

import random

import pytest

from taskflux.raft.core import Raft
from taskflux.raft.genesis import genesis_cluster_id
from taskflux.raft.memory import MemoryStorage
from taskflux.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    InstallSnapshot,
    Message,
    RequestVote,
    TimeoutNow,
)
from taskflux.raft.progress import ProgressState
from taskflux.raft.ready import NO_LEADER, ReadState, Role
from tests.raft.harness import Cluster, config

ELECTION = config().election_ticks


def run_until_leader(c: Cluster, max_ticks: int = 10 * ELECTION) -> int:
    for _ in range(max_ticks):
        c.tick_all()
        leaders = c.leaders()
        if leaders:
            assert len(leaders) == 1
            return leaders[0]
    raise AssertionError("no leader elected")


def test_first_election_elects_exactly_one_leader_that_everyone_follows() -> None:
    c = Cluster(3, seed=7)
    leader = run_until_leader(c)
    c.tick_all(2)
    assert [c.raft(i).leader_id for i in range(3)] == [leader] * 3
    assert [c.raft(i).current_term for i in range(3)] == [1, 1, 1]  # pre-vote: no term inflation
    assert [c.raft(i).log.commit_index for i in range(3)] == [1, 1, 1]  # the leader's no-op


def test_a_single_node_elects_itself_at_once_and_commits_in_the_ready_that_persists() -> None:
    """One Ready per batch: its entries are persisted (step 3) before the same entries are applied (step 5)."""
    storage = MemoryStorage()
    raft = Raft(config(0, 1), storage, random.Random(0))
    raft.tick()
    assert raft.role == Role.LEADER and raft.current_term == 1
    raft.propose(b"x")
    rd = raft.ready()
    genesis = rd.entries[0].data  # a brand-new cluster's first no-op names the cluster
    assert genesis_cluster_id(genesis) is not None
    assert [e.data for e in rd.entries] == [genesis, b"x"] and rd.must_sync
    assert rd.committed_entries == rd.entries
    storage.set_hard_state(rd.hard_state)  # type: ignore[arg-type]
    storage.append(rd.entries)
    raft.advance()
    assert not raft.has_ready()
    assert (raft.log.commit_index, raft.log.applied_index, raft.log.stable_index()) == (2, 2, 2)


def test_a_new_leader_is_elected_after_the_leader_crashes_and_keeps_committed_entries() -> None:
    c = Cluster(3, seed=1)
    old = run_until_leader(c)
    c.propose(old, b"kept")
    c.tick_all(2)
    c.crash(old)
    new = run_until_leader(c)
    assert new != old and c.raft(new).current_term == 2
    assert b"kept" in [data for _, _, data in c.log(new)]
    c.restart(old)
    c.tick_all(3)
    assert c.raft(old).role == Role.FOLLOWER and c.raft(old).leader_id == new
    assert c.log(old) == c.log(new)


def test_a_partitioned_leader_steps_down_and_its_uncommitted_entries_are_truncated() -> None:
    c = Cluster(5, seed=3)
    old = run_until_leader(c)
    c.propose(old, b"committed")
    c.tick_all(2)
    c.isolate(old)
    c.propose(old, b"lost-1")
    c.propose(old, b"lost-2")
    new = run_until_leader_among(c, [i for i in range(5) if i != old])
    c.propose(new, b"winner")
    c.tick_all(ELECTION)
    assert c.raft(old).role == Role.FOLLOWER  # check-quorum deposed it meanwhile
    c.heal()
    c.tick_all(4)
    assert c.raft(old).leader_id == new
    data = [d for _, _, d in c.log(old)]
    assert b"committed" in data and b"winner" in data and b"lost-1" not in data and b"lost-2" not in data
    assert all(c.log(i) == c.log(new) for i in range(5))
    assert all(b"lost-1" not in c.applied_data(i) for i in range(5))


def run_until_leader_among(c: Cluster, ids: list[int], max_ticks: int = 10 * ELECTION) -> int:
    """Tick only ``ids`` (the others are paused) until one of them leads."""
    for _ in range(max_ticks):
        for i in ids:
            c.tick(i)
        c.deliver()
        leaders = [i for i in ids if c.raft(i).role == Role.LEADER]
        if leaders:
            return leaders[0]
    raise AssertionError("no leader elected")


def test_check_quorum_a_leader_cut_off_from_its_quorum_steps_down_within_an_election_timeout() -> None:
    c = Cluster(3, seed=5)
    leader = run_until_leader(c)
    c.isolate(leader)
    ticks = 0
    while c.raft(leader).role == Role.LEADER:
        c.tick_all()
        ticks += 1
    assert ticks <= ELECTION
    assert c.raft(leader).leader_id == NO_LEADER and c.raft(leader).propose(b"x") is None


def test_check_quorum_followers_in_their_lease_ignore_a_disruptive_candidate() -> None:
    c = Cluster(3, seed=5, pre_vote=False)
    leader = run_until_leader(c)
    term = c.raft(leader).current_term
    rogue, third = (leader + 1) % 3, (leader + 2) % 3
    c.raft(rogue).campaign()  # as if its timer fired early (a long pause, a clock jump)
    c.settle(rogue)
    c.deliver()
    assert any(isinstance(m, RequestVote) and m.dst == third for m in c.delivered)
    assert c.raft(leader).role == Role.LEADER and c.raft(rogue).role == Role.CANDIDATE
    assert c.raft(third).current_term == term and c.raft(third).voted_for == leader


def test_pre_vote_a_node_that_was_cut_off_does_not_depose_the_leader_when_it_returns() -> None:
    c = Cluster(3, seed=11)
    leader = run_until_leader(c)
    term = c.raft(leader).current_term
    lonely = (leader + 1) % 3
    c.isolate(lonely)
    c.tick_all(6 * ELECTION)
    assert c.raft(lonely).current_term == term  # pre-votes fail: its term does not grow
    c.heal()
    c.tick_all(3)
    assert c.leaders() == [leader] and c.raft(leader).current_term == term
    assert c.raft(lonely).leader_id == leader


def test_without_pre_vote_the_returning_node_does_disrupt_the_cluster() -> None:
    """The contrast that shows what pre-vote is for."""
    c = Cluster(3, seed=11, pre_vote=False)
    leader = run_until_leader(c)
    term = c.raft(leader).current_term
    lonely = (leader + 1) % 3
    c.isolate(lonely)
    c.tick_all(6 * ELECTION)
    assert c.raft(lonely).current_term > term
    c.heal()
    c.tick_all(3 * ELECTION)
    assert max(c.raft(i).current_term for i in range(3)) > term + 1


def test_a_follower_far_behind_catches_up_through_a_snapshot_sent_in_chunks() -> None:
    c = Cluster(3, seed=2, snapshot_chunk_size=8)
    leader = run_until_leader(c)
    lagging = (leader + 1) % 3
    c.crash(lagging)
    for i in range(20):
        c.propose(leader, b"value-%02d" % i)
        c.tick_all()
    c.tick_all(2)
    meta = c.compact(leader)
    assert c.storages[leader].first_index() == meta.index + 1
    c.restart(lagging)
    for _ in range(4 * ELECTION):
        c.tick_all()
        if c.storages[lagging].snapshot_meta() == meta:
            break
    assert c.storages[lagging].snapshot_meta() == meta
    chunks = [m for m in c.delivered if isinstance(m, InstallSnapshot)]
    assert len({m.offset for m in chunks}) > 3 and all(len(m.data) <= 8 for m in chunks)
    assert c.storages[lagging].snapshot_data() == c.storages[leader].snapshot_data()
    c.propose(leader, b"after")
    c.tick_all(3)
    assert c.log(lagging)[-1][2] == b"after"
    assert c.raft(leader).progress[lagging].state == ProgressState.REPLICATE


def test_a_lost_snapshot_chunk_is_sent_again() -> None:
    c = Cluster(3, seed=2, snapshot_chunk_size=8)
    leader = run_until_leader(c)
    lagging = (leader + 1) % 3
    c.crash(lagging)
    for i in range(10):
        c.propose(leader, b"v%d" % i)
    c.tick_all(3)
    meta = c.compact(leader)
    c.restart(lagging)
    dropped: list[Message] = []

    def drop_third_chunk_once(m: Message) -> bool:
        if isinstance(m, InstallSnapshot) and m.offset == 16 and not dropped:
            dropped.append(m)
            return True
        return False

    for _ in range(4 * ELECTION):
        for i in range(3):
            if c.nodes[i] is not None:
                c.tick(i)
        c.deliver(drop=drop_third_chunk_once)
    assert dropped and c.storages[lagging].snapshot_meta() == meta


def test_fast_back_off_finds_the_match_point_of_a_long_conflicting_log_in_few_round_trips() -> None:
    c = Cluster(3, seed=4)
    old = run_until_leader(c)
    a, b = (old + 1) % 3, (old + 2) % 3
    c.isolate(old)
    for i in range(50):
        c.propose(old, b"doomed-%d" % i)  # 50 entries of term 1 on the old leader only
    first = run_until_leader_among(c, [a, b])
    second = b if first == a else a
    for i in range(50):
        c.propose(first, b"new-%d" % i)  # 50 entries of term 2 on the others
    c.deliver()
    assert c.raft(first).transfer_leadership(second)  # a leader that believes the old one is up to date
    c.settle(first)
    c.deliver()
    assert c.raft(second).role == Role.LEADER
    c.heal()
    before = len(c.delivered)
    c.tick_all(3 * ELECTION)
    rejections = [m for m in c.delivered[before:] if isinstance(m, AppendEntriesResponse) and m.reject_index]
    assert c.log(old) == c.log(second)
    assert 1 <= len(rejections) <= 3  # one round trip per conflicting term, not per entry


def test_flow_control_bounds_bytes_per_message_and_messages_in_flight() -> None:
    c = Cluster(3, seed=6, replication_max_send_size=100, max_inflight=2)
    leader = run_until_leader(c)
    c.tick_all(2)
    for i in range(10):
        c.raft(leader).propose(bytes([i]) * 60)
    c.settle(leader)
    appends = [m for m in c.outbox if isinstance(m, AppendEntries)]
    per_follower: dict[int, list[AppendEntries]] = {}
    for m in appends:
        per_follower.setdefault(m.dst, []).append(m)
    assert all(len(ms) == 2 for ms in per_follower.values())  # two in flight, then wait for acks
    assert all(len(m.entries) == 1 for m in appends)  # 2 x 60 bytes would pass 100
    c.deliver()
    c.tick_all(2)
    assert all(len(c.log(i)) == len(c.log(leader)) for i in range(3))


def test_many_proposals_travel_in_one_appendentries() -> None:
    c = Cluster(3, seed=6)
    leader = run_until_leader(c)
    c.tick_all(2)
    for i in range(50):
        c.raft(leader).propose(b"p%d" % i)
    c.settle(leader)
    appends = [m for m in c.outbox if isinstance(m, AppendEntries)]
    assert len(appends) == 2 and all(len(m.entries) == 50 for m in appends)


def test_leadership_transfer_catches_the_target_up_then_hands_over() -> None:
    c = Cluster(3, seed=8)
    leader = run_until_leader(c)
    target = (leader + 1) % 3
    c.isolate(target)
    c.propose(leader, b"target-lags")
    c.tick_all(2)
    c.heal()
    term = c.raft(leader).current_term
    before = len(c.delivered)
    assert c.raft(leader).transfer_leadership(target)
    assert c.raft(leader).propose(b"refused") is None  # no proposals while handing over
    c.settle(leader)
    for _ in range(ELECTION):
        c.tick_all()
        if c.raft(target).role == Role.LEADER:
            break
    sent = c.delivered[before:]
    assert any(isinstance(m, TimeoutNow) and m.dst == target for m in sent)
    assert not any(isinstance(m, RequestVote) and m.pre_vote for m in sent)
    assert c.leaders() == [target] and c.raft(target).current_term == term + 1
    assert b"target-lags" in [d for _, _, d in c.log(target)]


def test_a_transfer_to_an_unreachable_node_is_abandoned_after_an_election_timeout() -> None:
    c = Cluster(3, seed=8)
    leader = run_until_leader(c)
    target = (leader + 1) % 3
    c.isolate(target)
    c.propose(leader, b"x")
    assert c.raft(leader).transfer_leadership(target)
    c.tick_all(ELECTION)
    assert c.raft(leader).role == Role.LEADER and c.raft(leader).propose(b"again") is not None


def test_read_index_confirms_leadership_with_a_heartbeat_round() -> None:
    c = Cluster(3, seed=9)
    leader = run_until_leader(c)
    c.propose(leader, b"w")
    c.tick_all(2)
    commit = c.raft(leader).log.commit_index
    assert c.raft(leader).read_index(b"read-1")
    c.settle(leader)
    assert c.read_states[leader] == []  # not before a quorum answered
    c.deliver()
    assert c.read_states[leader] == [ReadState(b"read-1", commit)]
    follower = (leader + 1) % 3
    assert not c.raft(follower).read_index(b"read-2")


def test_read_index_waits_for_the_first_commit_of_a_new_leader() -> None:
    c = Cluster(3, seed=9)
    c.raft(0).campaign()
    c.settle(0)
    c.deliver(drop=lambda m: isinstance(m, AppendEntriesResponse))
    assert c.raft(0).role == Role.LEADER and c.raft(0).log.commit_index == 0
    assert c.raft(0).read_index(b"early")
    c.tick_all(2)
    assert c.read_states[0] == [ReadState(b"early", 1)]


def test_read_index_is_refused_by_a_deposed_leader_that_does_not_know_it_yet() -> None:
    c = Cluster(3, seed=10)
    old = run_until_leader(c)
    c.isolate(old)
    new = run_until_leader_among(c, [i for i in range(3) if i != old], max_ticks=3 * ELECTION)
    c.propose(new, b"newer")
    for i in range(3):
        if i != old:
            c.tick(i, 2)
    c.deliver()
    # The old leader did not tick meanwhile (a long pause): it still believes it leads.
    assert c.raft(old).role == Role.LEADER
    assert c.raft(old).read_index(b"stale?")
    c.settle(old)
    c.deliver()
    assert c.read_states[old] == []  # no quorum confirms it
    for _ in range(ELECTION):
        c.tick(old)
    assert c.raft(old).role == Role.FOLLOWER
    assert c.read_states[old] == [ReadState(b"stale?", 0, ok=False)]


def test_read_index_of_a_deposed_leader_that_hears_the_new_term_is_refused_at_once() -> None:
    c = Cluster(3, seed=10)
    old = run_until_leader(c)
    c.isolate(old)
    run_until_leader_among(c, [i for i in range(3) if i != old], max_ticks=3 * ELECTION)
    assert c.raft(old).role == Role.LEADER and c.raft(old).read_index(b"r")
    c.heal()
    c.settle(old)
    c.deliver()  # the heartbeat meets followers of a higher term, whose answers depose it
    assert c.raft(old).role == Role.FOLLOWER
    assert c.read_states[old] == [ReadState(b"r", 0, ok=False)]


def test_the_driver_contract_is_enforced() -> None:
    raft = Raft(config(0, 3), MemoryStorage(), random.Random(0))
    with pytest.raises(RuntimeError, match="advance"):
        raft.advance()
    raft.ready()
    with pytest.raises(RuntimeError, match="advance"):
        raft.tick()
    with pytest.raises(RuntimeError, match="advance"):
        raft.ready()
    raft.advance()
    raft.tick()


def test_compacting_past_what_was_applied_is_refused() -> None:
    from taskflux.raft.types import SnapshotMeta

    raft = Raft(config(0, 1), MemoryStorage(), random.Random(0))
    with pytest.raises(RuntimeError, match="not applied"):
        raft.compacted(SnapshotMeta(5, 1))
