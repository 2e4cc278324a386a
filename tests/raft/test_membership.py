"""Membership changes in the raft core: learners, one change at a time, quorums of the configuration in
force, a removed leader, memberships through snapshots, truncation and restarts."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskflux.raft.members import (
    MEMBERS_PREFIX,
    NEXT_ID,
    ChangeKind,
    ConfChange,
    Member,
    Members,
    MembershipError,
    members_data,
    members_of,
)
from taskflux.raft.messages import AppendEntries, InstallSnapshot, Message, RequestVote, TimeoutNow
from taskflux.raft.ready import Role
from tests.raft.harness import Cluster


def add(c: Cluster, leader: int, address: str = "") -> tuple[int, int]:
    """Start a new node and add it as a learner; (its id, the change's index)."""
    new = c.add_node()
    members = c.raft(leader).members
    assert members.next_id == new
    index = c.raft(leader).propose_conf_change(ConfChange(ChangeKind.ADD_LEARNER, new, address or f"n{new}"))
    c.settle(leader)
    return new, index


def change(c: Cluster, leader: int, kind: ChangeKind, node: int, force: bool = False) -> int:
    index = c.raft(leader).propose_conf_change(ConfChange(kind, node), force=force)
    c.settle(leader)
    return index


def fail_over(c: Cluster, old: int, drop: Callable[[Message], bool] = lambda m: False) -> int:
    """Cut ``old`` off and tick the others until one of them leads; its id."""
    c.isolate(old)
    for _ in range(100):
        c.tick_all(1, deliver=False)
        c.deliver(drop)
        others = [i for i in c.leaders() if i != old]
        if others:
            return others[0]
    raise AssertionError("no new leader")


def committed(c: Cluster, i: int, index: int) -> bool:
    return c.raft(i).log.commit_index >= index


def test_the_members_codec_round_trips_and_rejects_garbage() -> None:
    members = Members((Member(0, True, "a:1/2"), Member(3, False, "b:3/4")), 5)
    assert members_of(members_data(members)) == members
    assert members_of(b"\x01a command") is None
    for bad in (b"", b"\x02" + b"\x00" * 8, members.encode()[:-1], members.encode() + b"x"):
        with pytest.raises(MembershipError):
            Members.decode(bad)


@given(st.binary(max_size=64))
def test_decoding_any_bytes_gives_members_or_a_membership_error(data: bytes) -> None:
    with contextlib.suppress(MembershipError):
        Members.decode(data)


def test_the_rules_of_a_change() -> None:
    m = Members.initial(["a", "b", "c"])
    assert m.voters == {0, 1, 2} and m.next_id == 3 and m.quorum == 2
    with pytest.raises(MembershipError, match="gets id 3"):
        m.apply(ConfChange(ChangeKind.ADD_LEARNER, 7, "d"))
    with pytest.raises(MembershipError, match="already belongs"):
        m.apply(ConfChange(ChangeKind.ADD_LEARNER, 3, "a"))
    assert m.apply(ConfChange(ChangeKind.ADD_LEARNER, NEXT_ID, "d")).get(3) == Member(3, False, "d")
    grown = m.apply(ConfChange(ChangeKind.ADD_LEARNER, 3, "d"))
    assert grown.learners == {3} and grown.quorum == 2 and grown.next_id == 4
    assert grown.apply(ConfChange(ChangeKind.PROMOTE, 3)).voters == {0, 1, 2, 3}
    shrunk = grown.apply(ConfChange(ChangeKind.REMOVE, 1))
    assert shrunk.ids == (0, 2, 3) and shrunk.was_removed(1) and not shrunk.was_removed(4)
    with pytest.raises(MembershipError, match="was removed"):
        shrunk.apply(ConfChange(ChangeKind.PROMOTE, 1))
    with pytest.raises(MembershipError, match="last voter"):
        Members.initial(["a"]).apply(ConfChange(ChangeKind.REMOVE, 0))


def test_a_learner_gets_the_log_but_neither_votes_nor_counts() -> None:
    c = Cluster(3)
    c.elect(0)
    c.propose(0, b"x")
    c.deliver()
    learner, index = add(c, 0)
    c.deliver()
    c.tick_all(3)
    assert committed(c, learner, index) and c.raft(learner).members.learners == {learner}
    assert b"x" in c.applied_data(learner)
    # Two voters down: the learner's copy does not make a quorum.
    c.isolate(1)
    c.isolate(2)
    at = c.propose(0, b"y")
    c.deliver()
    assert c.raft(learner).log.last_index() >= at and not committed(c, 0, at)
    # A learner never campaigns, even when told to.
    c.raft(learner).campaign()
    c.raft(learner).step(TimeoutNow(0, learner, c.raft(0).current_term))
    c.settle(learner)
    assert c.raft(learner).role == Role.FOLLOWER


def test_one_change_at_a_time_and_only_after_the_leader_committed_in_its_term() -> None:
    c = Cluster(3)
    c.elect(0)
    c.deliver()
    c.isolate(1)
    c.isolate(2)
    _new, _ = add(c, 0)
    with pytest.raises(MembershipError, match="has not committed yet"):
        c.raft(0).propose_conf_change(ConfChange(ChangeKind.REMOVE, 2))
    c.heal()
    c.tick_all(3)
    change(c, 0, ChangeKind.REMOVE, 2)  # the add committed: the next change may go
    # A new leader first commits an entry of its own term.
    c2 = Cluster(3)
    c2.elect(0)
    c2.deliver()
    leader = fail_over(c2, 0, drop=lambda m: isinstance(m, AppendEntries))
    with pytest.raises(MembershipError, match="not committed an entry of its term"):
        c2.raft(leader).propose_conf_change(ConfChange(ChangeKind.REMOVE, 0))
    with pytest.raises(MembershipError, match="not the leader"):
        c2.raft(3 - leader).propose_conf_change(ConfChange(ChangeKind.REMOVE, 0))


def test_a_learner_is_promoted_only_once_caught_up_and_then_counts() -> None:
    c = Cluster(3, promote_max_lag=2)
    c.elect(0)
    new, _ = add(c, 0)
    c.isolate(new)
    for k in range(5):
        c.propose(0, b"v%d" % k)
    c.deliver()
    c.tick_all(3)
    with pytest.raises(MembershipError, match="has not caught up"):
        change(c, 0, ChangeKind.PROMOTE, new)
    c.heal()
    c.tick_all(3)
    index = change(c, 0, ChangeKind.PROMOTE, new)
    c.deliver()
    c.tick_all(2)
    assert committed(c, 0, index) and c.raft(0).members.voters == {0, 1, 2, new}
    # Four voters: a quorum is three. With two of them cut off nothing commits.
    c.isolate(1)
    c.isolate(new)
    at = c.propose(0, b"w")
    c.deliver()
    assert not committed(c, 0, at)
    c.heal()
    c.tick_all(2)
    assert committed(c, 0, at)


def test_a_removed_follower_stops_counting_and_is_ignored() -> None:
    c = Cluster(3)
    c.elect(0)
    index = change(c, 0, ChangeKind.REMOVE, 2)
    c.deliver()
    c.tick_all(2)
    assert committed(c, 0, index) and c.raft(0).members.voters == {0, 1}
    assert 2 not in c.raft(0).progress and c.raft(0).peers == (1,)
    assert c.raft(2).members.was_removed(2)  # it got the change before the leader let it go: it knows
    # Two voters: both are needed now.
    c.isolate(1)
    at = c.propose(0, b"z")
    c.deliver()
    assert not committed(c, 0, at)
    # The removed node's campaign cannot disrupt the cluster (pre-vote; 0 and 1 hear their leader).
    c.heal()
    c.tick_all(2)
    assert committed(c, 0, at)
    c.raft(2).campaign()
    c.settle(2)
    c.deliver()
    assert c.leaders() == [0]


def test_removing_the_leader_hands_over_after_the_change_commits() -> None:
    c = Cluster(3)
    c.elect(0)
    c.propose(0, b"a")
    c.deliver()
    index = change(c, 0, ChangeKind.REMOVE, 0)
    assert c.raft(0).role == Role.LEADER  # it leads until the change commits
    c.deliver()
    c.tick_all(3)
    assert any(isinstance(m, TimeoutNow) and m.src == 0 for m in c.delivered)
    leaders = c.leaders()
    assert len(leaders) == 1 and leaders[0] in (1, 2)
    new_leader = leaders[0]
    assert committed(c, new_leader, index) and c.raft(new_leader).members.voters == {1, 2}
    c.propose(new_leader, b"b")
    c.deliver()
    c.tick_all(2)
    assert c.applied_data(1)[-2:] == [b"a", b"b"] == c.applied_data(2)[-2:]
    # The old leader never campaigns again: it is no member.
    c.tick(0, 100)
    assert c.raft(0).role == Role.FOLLOWER and not any(
        isinstance(m, RequestVote) and m.src == 0 for m in c.outbox
    )


def test_a_removal_that_leaves_no_reachable_quorum_is_refused_unless_forced() -> None:
    c = Cluster(3, election_ticks=4, heartbeat_ticks=1)
    c.elect(0)
    c.deliver()
    c.crash(2)
    c.tick_all(6)  # node 2 has not answered for an election timeout
    with pytest.raises(MembershipError, match="force it"):
        change(c, 0, ChangeKind.REMOVE, 1)
    index = change(c, 0, ChangeKind.REMOVE, 2)  # removing the dead one is fine: {0, 1} both answer
    c.deliver()
    c.tick_all(1)
    assert committed(c, 0, index)
    c2 = Cluster(3, election_ticks=4, heartbeat_ticks=1)
    c2.elect(0)
    c2.deliver()
    c2.crash(2)
    c2.tick_all(6)
    change(c2, 0, ChangeKind.REMOVE, 1, force=True)
    assert c2.raft(0).members.voters == {0, 2}


def test_a_truncated_membership_entry_is_no_longer_in_force() -> None:
    c = Cluster(3)
    c.elect(0)
    c.deliver()
    c.isolate(0)
    new, _ = add(c, 0)  # appended on node 0 only
    assert c.raft(0).members.learners == {new}
    leader = fail_over(c, 0)
    c.heal()
    c.propose(leader, b"from the new leader")
    c.tick_all(3)
    assert c.leaders() == [leader]
    assert c.raft(0).members == c.raft(leader).members == Members.initial(["", "", ""])


def test_the_membership_survives_snapshots_and_restarts() -> None:
    c = Cluster(3, snapshot_chunk_size=16)
    c.elect(0)
    new, _ = add(c, 0, "new:1/2")
    c.isolate(new)
    c.deliver()
    c.tick_all(2)
    removed = change(c, 0, ChangeKind.REMOVE, 2)
    c.deliver()
    c.tick_all(2)
    for k in range(5):
        c.propose(0, b"v%d" % k)
    c.deliver()
    c.tick_all(2)
    for i in (0, 1):
        meta = c.compact(i)
        assert meta.members == c.raft(0).members and meta.index >= removed
    # The learner catches up from the snapshot and learns the membership from it.
    c.heal()
    c.tick_all(10)
    assert any(isinstance(m, InstallSnapshot) and m.dst == new for m in c.delivered)
    assert c.raft(new).members == c.raft(0).members
    assert c.raft(new).members.get(new) == Member(new, False, "new:1/2")
    # After a restart each node reads it from its snapshot (and log) again.
    for i in (0, 1, new):
        c.crash(i)
        c.restart(i)
        assert c.raft(i).members.ids == (0, 1, new) and c.raft(i).members.next_id == 4


def test_a_propose_cannot_smuggle_a_membership_entry() -> None:
    c = Cluster(1)
    c.elect(0)
    with pytest.raises(ValueError, match="propose_conf_change"):
        c.raft(0).propose(MEMBERS_PREFIX + Members.initial(["a", "b"]).encode())


def test_replacing_a_node_safely_keeps_an_entry_two_nodes_held() -> None:
    """A, B, C; X is on A and B only. B's disk is lost. The safe replacement: remove B, add D as a learner,
    promote it once caught up. Then A fails: C and D elect a leader that has X."""
    c = Cluster(3)
    c.elect(0)
    c.deliver()
    c.isolate(2)
    x = c.propose(0, b"X")
    c.deliver()
    assert committed(c, 0, x)
    c.crash(1)  # B is gone for good
    c.heal()
    removed = change(c, 0, ChangeKind.REMOVE, 1, force=True)
    c.tick_all(3)
    assert committed(c, 0, removed) and c.raft(2).members.voters == {0, 2}
    d, _ = add(c, 0)
    c.tick_all(3)
    promoted = change(c, 0, ChangeKind.PROMOTE, d)
    c.tick_all(3)
    assert committed(c, 0, promoted) and committed(c, 2, promoted)
    c.crash(0)
    for _ in range(40):
        c.tick_all(1)
        if c.leaders():
            break
    (leader,) = c.leaders()
    assert leader in (2, d)
    at = c.propose(leader, b"after")
    c.tick_all(2)
    assert committed(c, leader, at)
    for i in (2, d):
        assert b"X" in c.applied_data(i) or any(b"X" in e.data for e in c.applied[i])
