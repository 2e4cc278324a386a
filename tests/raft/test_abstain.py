"""A node that lost its data abstains from elections until it has caught up from a leader; the first
leader of a brand-new cluster names the cluster in its genesis entry."""

from __future__ import annotations

from taskflux.raft.genesis import genesis_cluster_id, is_no_op
from taskflux.raft.ready import Role
from tests.raft.harness import Cluster

A, B, C = 0, 1, 2


def x_on_a_and_b_only(seed: int = 3) -> Cluster:
    """A leads, C is cut off, and X is committed on A and B."""
    c = Cluster(3, seed=seed)
    c.elect(A)
    c.tick_all(2)
    c.isolate(C)
    c.propose(A, b"X")
    c.deliver()
    c.tick_all(2)
    assert c.raft(A).log.commit_index == c.raft(A).log.last_index() and b"X" in c.applied_data(A)
    assert b"X" not in [data for _, _, data in c.log(C)]
    return c


def test_an_empty_voter_would_elect_a_candidate_without_the_committed_entry() -> None:
    """What the abstention prevents: B wiped and voting at once, A lost, C wins without X."""
    c = x_on_a_and_b_only()
    c.wipe(B, abstain=False)
    c.crash(A)
    c.heal()
    c.elect(C)
    assert b"X" not in [data for _, _, data in c.log(C)]


def test_a_wiped_node_abstains_so_the_committed_entry_survives() -> None:
    c = x_on_a_and_b_only()
    c.wipe(B)
    c.crash(A)
    c.heal()
    for _ in range(30):  # ten election timeouts: C cannot win with B abstaining, B does not campaign
        c.tick_all()
        assert c.leaders() == []
    assert not c.raft(B).caught_up and c.raft(B).abstaining
    c.restart(A)
    for _ in range(60):
        c.tick_all()
        if c.leaders():
            break
    assert c.leaders() == [A]  # C lacks X: only A can win, with C's vote
    c.tick_all(3)
    assert c.raft(B).caught_up and not c.raft(B).abstaining
    assert b"X" in [data for _, _, data in c.log(B)] and b"X" in [data for _, _, data in c.log(C)]


def until_leader(c: Cluster, ticks: int = 60) -> int:
    for _ in range(ticks):
        c.tick_all()
        if c.leaders():
            return c.leaders()[0]
    raise AssertionError("no leader")


def test_a_wiped_follower_catches_up_under_the_same_leader_reports_it_once_and_votes_again() -> None:
    c = Cluster(3, seed=5)
    c.elect(A)
    c.tick_all(2)
    c.wipe(B)
    reports = []
    handle = c.handle

    def handle_and_record(i: int):  # type: ignore[no-untyped-def]
        rd = handle(i)
        if i == B:
            reports.append(rd.caught_up)
        return rd

    c.handle = handle_and_record  # type: ignore[method-assign]
    c.tick_all(6)
    assert reports.count(True) == 1 and c.raft(B).caught_up and not c.raft(B).abstaining
    c.crash(A)
    assert until_leader(c) in (B, C)  # B's vote counts again: a leader without A


def test_a_brand_new_cluster_elects_and_its_first_entry_names_the_cluster() -> None:
    c = Cluster(3, seed=9)
    for i in range(3):
        c.crash(i)
        c.restart(i, caught_up=False)  # every data directory empty, no history anywhere: nobody abstains
    c.elect(B)
    c.tick_all(2)
    first = [c.log(i)[0][2] for i in range(3)]
    assert len(set(first)) == 1 and genesis_cluster_id(first[0]) is not None and is_no_op(first[0])
    assert all(c.raft(i).caught_up for i in range(3))
    c.crash(B)
    leader = until_leader(c)
    assert c.log(leader)[-1][2] == b"" and c.raft(leader).role == Role.LEADER  # later no-ops stay empty
