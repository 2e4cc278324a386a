"""Failover without waiting for the election timeout: ``leader_link_closed`` after the leader's process closed
its links (a crash), and what it must not do (depose a leader that is still heard, inflate terms)."""

from __future__ import annotations

from taskflux.raft.messages import RequestVote
from taskflux.raft.ready import NO_LEADER, Role
from tests.raft.harness import Cluster

LEADER = 2  # the survivors are 0 (the lowest id: campaigns at once) and 1 (one tick later)


def cluster_led_by_2(**overrides: object) -> tuple[Cluster, int]:
    c = Cluster(3, seed=3, **overrides)
    c.elect(LEADER)
    c.propose(LEADER, b"committed")
    c.tick_all(2)
    return c, c.raft(LEADER).current_term


def test_survivors_told_the_leaders_links_closed_elect_a_new_leader_without_a_tick() -> None:
    c, term = cluster_led_by_2()
    c.crash(LEADER)
    for survivor in (0, 1):
        c.raft(survivor).leader_link_closed(LEADER)
        c.settle(survivor)
    c.deliver()
    assert c.leaders() == [0]  # no tick has passed: the lowest id went first and the other voted for it
    assert c.raft(0).current_term == c.raft(1).current_term == term + 1  # one round, no split vote
    assert c.raft(1).leader_id == 0
    c.deliver()
    assert b"committed" in [data for _, _, data in c.log(0)]


def test_the_second_survivor_campaigns_one_whole_tick_later_when_the_first_cannot() -> None:
    c, term = cluster_led_by_2()
    c.crash(LEADER)
    c.isolate(0)  # node 0 campaigns at once, but nobody hears it
    c.raft(0).leader_link_closed(LEADER)
    c.settle(0)
    c.deliver()
    c.raft(1).leader_link_closed(LEADER)
    c.settle(1)
    assert c.raft(1).role == Role.FOLLOWER and c.raft(1).leader_id == NO_LEADER
    c.tick(1)
    assert c.raft(1).role == Role.FOLLOWER  # a tick may come right after the notice: not yet
    c.heal()
    c.tick(1)
    c.deliver()
    assert c.leaders() == [1] and c.raft(1).current_term == term + 1

def test_the_first_survivor_asks_again_at_the_next_tick_when_refused_by_one_not_told_yet() -> None:
    c, term = cluster_led_by_2()
    c.crash(LEADER)
    c.raft(0).leader_link_closed(LEADER)
    c.settle(0)
    c.deliver()  # node 1 has not read the close yet: in its lease, it refuses
    assert c.raft(0).role == Role.PRE_CANDIDATE and c.raft(1).leader_id == LEADER
    c.raft(1).leader_link_closed(LEADER)
    c.settle(1)
    c.tick(0)
    c.deliver()
    assert c.leaders() == [0] and c.raft(0).current_term == term + 1


def test_a_follower_that_still_hears_the_leader_refuses_and_no_term_grows() -> None:
    """Only one follower's link closed (e.g. the leader's send watchdog dropped it): the leader is alive and
    the other follower, in its lease, refuses the pre-vote."""
    c, term = cluster_led_by_2()
    c.raft(0).leader_link_closed(LEADER)
    c.settle(0)
    c.deliver(drop=lambda m: m.src == LEADER)  # the leader says nothing meanwhile
    assert any(isinstance(m, RequestVote) and m.pre_vote and m.dst == 1 for m in c.delivered)
    assert c.raft(0).role == Role.PRE_CANDIDATE
    assert c.raft(1).leader_id == LEADER
    assert c.leaders() == [LEADER] and {c.raft(i).current_term for i in range(3)} == {term}
    c.tick_all(2)  # the leader's next heartbeat brings the pre-candidate back
    assert c.raft(0).role == Role.FOLLOWER and c.raft(0).leader_id == LEADER


def test_a_leaders_message_after_the_notice_restores_the_normal_election_timeout() -> None:
    c, _ = cluster_led_by_2()
    c.raft(1).leader_link_closed(LEADER)  # its campaign would start at its second tick from now
    c.propose(LEADER, b"more")  # the leader is alive: its next message comes on the redialled link
    c.deliver()
    assert c.raft(1).leader_id == LEADER
    c.tick(1, 3)
    assert c.raft(1).role == Role.FOLLOWER
    assert not any(isinstance(m, RequestVote) for m in c.outbox)

def test_a_closed_link_of_anyone_but_the_leader_changes_nothing() -> None:
    c, _ = cluster_led_by_2()
    before = [c.raft(i).soft_state for i in range(3)]
    c.raft(0).leader_link_closed(1)  # a follower's link: followers do not talk to each other
    c.raft(LEADER).leader_link_closed(0)  # the leader's inbound link from a follower
    c.settle()
    assert [c.raft(i).soft_state for i in range(3)] == before
    assert not c.outbox


def test_an_abstaining_follower_forgets_the_leader_but_does_not_campaign() -> None:
    c, _ = cluster_led_by_2()
    c.raft(0).caught_up = False
    c.raft(0).abstaining = True
    c.raft(0).leader_link_closed(LEADER)
    c.settle(0)
    assert c.raft(0).role == Role.FOLLOWER and c.raft(0).leader_id == NO_LEADER
    assert not c.outbox
