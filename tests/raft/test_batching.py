"""Fewer messages per entry: a follower answers a Ready's AppendEntries once, a leader sends each peer one
AppendEntries per Ready however many answers and proposals its turn handled."""

from __future__ import annotations

from taskflux.raft.coalesce import coalesce_append_responses
from taskflux.raft.messages import AppendEntries, AppendEntriesResponse, HeartbeatResponse, Message
from tests.raft.harness import Cluster


def _ok(match: int, term: int = 2, leader: int = 0) -> AppendEntriesResponse:
    return AppendEntriesResponse(1, leader, term, True, match)


def _quiet_cluster() -> tuple[Cluster, int]:
    """Three nodes, node 0 leading, every follower replicating and the network empty."""
    c = Cluster(3, seed=1)
    c.elect(0)
    c.tick_all(2)
    assert not c.outbox
    return c, 0


def _appends_to(messages: tuple[Message, ...], peer: int) -> list[AppendEntries]:
    return [m for m in messages if isinstance(m, AppendEntries) and m.dst == peer]


def test_successes_to_one_leader_in_one_term_become_the_highest_one_at_the_last_place() -> None:
    heartbeat = HeartbeatResponse(1, 0, 2, b"ctx")
    messages = [_ok(7), heartbeat, _ok(9), _ok(8)]
    assert coalesce_append_responses(messages) == (heartbeat, _ok(9))


def test_a_rejection_keeps_every_answer_of_its_leader_and_term() -> None:
    rejection = AppendEntriesResponse(1, 0, 2, False, reject_index=5, hint_index=4)
    messages = [_ok(3), rejection, _ok(4)]
    assert coalesce_append_responses(messages) == tuple(messages)


def test_answers_of_other_terms_or_leaders_are_coalesced_apart() -> None:
    messages = [_ok(3, term=2), _ok(5, term=3), _ok(4, term=2), _ok(6, term=3, leader=2)]
    assert coalesce_append_responses(messages) == (_ok(5, term=3), _ok(4, term=2), _ok(6, term=3, leader=2))


def test_a_follower_answers_the_appendentries_of_one_ready_once() -> None:
    c, leader = _quiet_cluster()
    for data in (b"a", b"b", b"c"):  # three Readies on the leader: three AppendEntries to each follower
        c.propose(leader, data)
    to_follower = [m for m in c.outbox if m.dst == 1]
    assert len(to_follower) == 3
    follower = c.raft(1)
    for m in to_follower:  # all arrive within one turn of the follower's loop
        follower.step(m)
    rd = c.handle(1)
    answers = [m for m in rd.messages_after_persist if isinstance(m, AppendEntriesResponse)]
    assert answers == [AppendEntriesResponse(1, leader, follower.current_term, True, follower.log.last_index())]
    assert len(rd.entries) == 3  # and persisted with one write


def test_a_leader_sends_each_peer_one_appendentries_per_ready() -> None:
    c, leader = _quiet_cluster()
    c.propose(leader, b"a")
    c.deliver(drop=lambda m: isinstance(m, AppendEntriesResponse))  # the followers hold "a"; answers held back
    raft = c.raft(leader)
    answer = AppendEntriesResponse(1, leader, raft.current_term, True, raft.log.last_index())
    # One turn of the leader's loop: a proposal, the answer that frees the pipeline, another proposal.
    raft.propose(b"x")
    raft.step(answer)
    raft.propose(b"y")
    rd = c.handle(leader)
    for peer in (1, 2):
        appends = _appends_to(rd.messages, peer)
        assert [[e.data for e in m.entries] for m in appends] == [[b"x", b"y"]]
