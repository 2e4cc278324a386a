"""Unit tests of the rules of the Raft paper (Ongaro & Ousterhout, "In Search of an Understandable
Consensus Algorithm", extended version). Each test quotes the sentence it checks."""

from __future__ import annotations

import random

import pytest

from taskflux.raft.core import Raft
from taskflux.raft.memory import MemoryStorage
from taskflux.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
)
from taskflux.raft.ready import NO_LEADER, Role
from taskflux.raft.types import NO_VOTE, Entry, HardState
from tests.raft.harness import Cluster, config, drive


def make(
    node_id: int = 0,
    n: int = 3,
    log: list[tuple[int, int]] | None = None,
    term: int = 0,
    vote: int = NO_VOTE,
    seed: int = 0,
    **overrides: object,
) -> tuple[Raft, MemoryStorage]:
    """A node whose storage holds ``log`` as (index, term) pairs and the hard state (term, vote)."""
    storage = MemoryStorage()
    storage.append([Entry(i, t, b"e%d" % i) for i, t in (log or [])])
    storage.set_hard_state(HardState(term, vote))
    overrides.setdefault("pre_vote", False)
    raft = Raft(config(node_id, n, **overrides), storage, random.Random(seed))  # type: ignore[arg-type]
    drive(raft, storage)
    return raft, storage


def sent(raft: Raft, storage: MemoryStorage) -> tuple[list[Message], list[Message]]:
    """Drive every Ready; the messages sent at once and the ones sent after persisting."""
    now: list[Message] = []
    after: list[Message] = []
    while raft.has_ready():
        rd = drive(raft, storage)
        now += rd.messages
        after += rd.messages_after_persist
    return now, after


def become_leader(raft: Raft, storage: MemoryStorage) -> None:
    raft.campaign()
    sent(raft, storage)
    for peer in raft.peers:
        raft.step(RequestVoteResponse(peer, raft.id, raft.current_term, True))
    sent(raft, storage)
    assert raft.role == Role.LEADER


# --- §5.1 terms ---


@pytest.mark.parametrize("role", [Role.FOLLOWER, Role.CANDIDATE, Role.LEADER])
def test_a_higher_term_makes_any_server_a_follower_of_that_term(role: Role) -> None:
    """§5.1: "If one server's current term is smaller than the other's, then it updates its current
    term to the larger value. If a candidate or leader discovers that its term is out of date, it
    immediately reverts to follower state." """
    raft, storage = make(term=1)
    if role == Role.CANDIDATE:
        raft.campaign()
    elif role == Role.LEADER:
        become_leader(raft, storage)
    sent(raft, storage)
    raft.step(AppendEntries(2, 0, 7, 0, 0, (), 0))
    assert (raft.role, raft.current_term, raft.leader_id, raft.voted_for) == (Role.FOLLOWER, 7, 2, NO_VOTE)


def test_a_request_with_a_stale_term_is_rejected() -> None:
    """§5.1: "If a server receives a request with a stale term number, it rejects the request." """
    raft, storage = make(log=[(1, 1)], term=3)
    raft.step(AppendEntries(1, 0, 2, 1, 1, (Entry(2, 2, b"x"),), 2))
    _, after = sent(raft, storage)
    assert raft.log.last_index() == 1 and raft.log.commit_index == 0
    assert after == [AppendEntriesResponse(0, 1, 3, False)]
    raft.step(RequestVote(1, 0, 2, 5, 2))
    _, after = sent(raft, storage)
    assert after == [] and raft.voted_for == NO_VOTE


# --- §5.2 leader election ---


def test_a_follower_that_hears_nothing_for_an_election_timeout_starts_an_election() -> None:
    """§5.2: "To begin an election, a follower increments its current term and transitions to
    candidate state. It then votes for itself and issues RequestVote RPCs in parallel to each of the
    other servers." Figure 2: persist currentTerm and votedFor before responding to (or sending) RPCs."""
    raft, _storage = make(n=3, log=[(1, 1), (2, 1)], term=1)
    for _ in range(2 * raft.config.election_ticks):
        raft.tick()
        if raft.role != Role.FOLLOWER:
            break
    assert (raft.role, raft.current_term, raft.voted_for) == (Role.CANDIDATE, 2, 0)
    rd = raft.ready()
    assert rd.hard_state == HardState(2, 0) and rd.must_sync
    assert rd.messages == ()  # nothing may leave before the vote for ourselves is durable
    assert list(rd.messages_after_persist) == [RequestVote(0, p, 2, 2, 1) for p in (1, 2)]
    raft.advance()


def test_election_timeouts_are_randomized_between_one_and_two_election_timeouts() -> None:
    """§5.2: "Raft uses randomized election timeouts to ensure that split votes are rare ... election
    timeouts are chosen randomly from a fixed interval." """
    timeouts = set()
    for seed in range(50):
        raft, _ = make(seed=seed)
        ticks = 0
        while raft.role == Role.FOLLOWER:
            raft.tick()
            ticks += 1
        timeouts.add(ticks)
    election = config().election_ticks
    assert min(timeouts) >= election and max(timeouts) < 2 * election and len(timeouts) > 5


def test_a_candidate_needs_votes_from_a_majority() -> None:
    """§5.2: "A candidate wins an election if it receives votes from a majority of the servers in the
    full cluster for the same term." """
    raft, storage = make(n=5, term=1)
    raft.campaign()
    sent(raft, storage)
    raft.step(RequestVoteResponse(1, 0, 2, True))
    raft.step(RequestVoteResponse(2, 0, 2, False))
    assert raft.role == Role.CANDIDATE
    raft.step(RequestVoteResponse(3, 0, 2, True))
    assert raft.role == Role.LEADER and raft.leader_id == 0


def test_a_candidate_rejected_by_a_majority_becomes_a_follower() -> None:
    raft, _storage = make(n=5, term=1)
    raft.campaign()
    for voter in (1, 2, 3):
        raft.step(RequestVoteResponse(voter, 0, 2, False))
    assert raft.role == Role.FOLLOWER and raft.current_term == 2


def test_a_server_votes_for_at_most_one_candidate_per_term() -> None:
    """§5.2: "Each server will vote for at most one candidate in a given term, on a
    first-come-first-served basis." """
    raft, storage = make(n=3, term=1)
    raft.step(RequestVote(1, 0, 2, 0, 0))
    raft.step(RequestVote(2, 0, 2, 0, 0))
    raft.step(RequestVote(1, 0, 2, 0, 0))  # a retransmission gets the same answer
    _, after = sent(raft, storage)
    assert [(m.dst, m.granted) for m in after if isinstance(m, RequestVoteResponse)] == [
        (1, True),
        (2, False),
        (1, True),
    ]
    assert storage.hard_state() == HardState(2, 1)


def test_a_candidate_that_hears_from_the_leader_of_its_term_becomes_a_follower() -> None:
    """§5.2: "If the leader's term (included in its RPC) is at least as large as the candidate's
    current term, then the candidate recognizes the leader as legitimate and returns to follower state." """
    raft, _storage = make(n=3, term=1)
    raft.campaign()
    raft.step(Heartbeat(2, 0, 2, 0))
    assert (raft.role, raft.current_term, raft.leader_id) == (Role.FOLLOWER, 2, 2)


def test_a_new_leader_sends_appendentries_to_every_follower_at_once() -> None:
    """§5.2: "Once a candidate wins an election ... it sends heartbeat messages to all of the other
    servers to establish its authority." Ours carry a no-op entry of the new term (§8)."""
    raft, storage = make(n=3, log=[(1, 1)], term=1)
    raft.campaign()
    sent(raft, storage)
    raft.step(RequestVoteResponse(1, 0, 2, True))
    rd = raft.ready()
    appends = [m for m in rd.messages if isinstance(m, AppendEntries)]
    assert [(m.dst, m.prev_log_index, m.prev_log_term, m.entries) for m in appends] == [
        (p, 1, 1, (Entry(2, 2, b""),)) for p in (1, 2)
    ]
    raft.advance()


# --- Figure 2, AppendEntries receiver ---

FOLLOWER_LOG = [(1, 1), (2, 2), (3, 2)]


@pytest.mark.parametrize(
    ("prev_index", "prev_term", "entries", "commit", "success", "log_terms", "commit_after"),
    [
        # 2. Reply false if log doesn't contain an entry at prevLogIndex whose term matches prevLogTerm.
        (3, 3, [(4, 3)], 3, False, [1, 2, 2], 0),
        (5, 2, [(6, 2)], 3, False, [1, 2, 2], 0),
        # 3. If an existing entry conflicts with a new one (same index but different terms), delete
        #    the existing entry and all that follow it. 4. Append any new entries not already in the log.
        (1, 1, [(2, 3)], 1, True, [1, 3], 1),
        (2, 2, [(3, 2), (4, 3)], 0, True, [1, 2, 2, 3], 0),
        # An already present prefix is not truncated by a stale, shorter copy.
        (1, 1, [(2, 2)], 0, True, [1, 2, 2], 0),
        # 5. If leaderCommit > commitIndex, set commitIndex = min(leaderCommit, index of last new entry).
        (1, 1, [(2, 2)], 3, True, [1, 2, 2], 2),
        (3, 2, [], 9, True, [1, 2, 2], 3),
    ],
)
def test_appendentries_receiver_rules(
    prev_index: int,
    prev_term: int,
    entries: list[tuple[int, int]],
    commit: int,
    success: bool,
    log_terms: list[int],
    commit_after: int,
) -> None:
    raft, storage = make(node_id=1, log=FOLLOWER_LOG, term=3)
    batch = tuple(Entry(i, t, b"n%d" % i) for i, t in entries)
    raft.step(AppendEntries(0, 1, 3, prev_index, prev_term, batch, commit))
    _, after = sent(raft, storage)
    (response,) = after
    assert isinstance(response, AppendEntriesResponse) and response.success == success
    assert [storage.term(i) for i in range(1, storage.last_index() + 1)] == log_terms
    assert raft.log.commit_index == commit_after
    if success:
        assert response.match_index == prev_index + len(entries)


def test_a_rejection_carries_the_conflicting_term_and_its_first_index() -> None:
    """Fast back-off (§5.3, "the follower can include the term of the conflicting entry and the first
    index it stores for that term")."""
    raft, storage = make(node_id=1, log=[(1, 1), (2, 2), (3, 2), (4, 2)], term=3)
    raft.step(AppendEntries(0, 1, 3, 4, 3, (), 0))
    _, (response,) = sent(raft, storage)
    assert response == AppendEntriesResponse(1, 0, 3, False, reject_index=4, hint_term=2, hint_index=2)
    raft.step(AppendEntries(0, 1, 3, 9, 3, (), 0))
    _, (response,) = sent(raft, storage)
    assert isinstance(response, AppendEntriesResponse)
    assert (response.hint_term, response.hint_index) == (0, 5)


# --- §5.3 log replication ---


def test_an_entry_commits_once_a_majority_stores_it_and_is_applied_in_order() -> None:
    """§5.3: "A log entry is committed once the leader that created the entry has replicated it on a
    majority of the servers" and Figure 2: "If commitIndex > lastApplied: increment lastApplied,
    apply log[lastApplied] to state machine." """
    raft, storage = make(n=3, term=1)
    become_leader(raft, storage)
    index = raft.propose(b"x")
    assert index == 2
    sent(raft, storage)
    assert raft.log.commit_index == 0  # only our own durable copy so far
    raft.step(AppendEntriesResponse(1, 0, raft.current_term, True, 2))
    rd = raft.ready()
    assert [e.index for e in rd.committed_entries] == [1, 2]
    raft.advance()
    assert raft.log.applied_index == 2


def test_the_leader_counts_its_own_copy_at_once_but_tells_followers_only_what_it_holds_durably() -> None:
    """§10.2.1 of the dissertation: the leader may write its own copy in parallel with replicating it. It counts
    that copy at once (it applies nothing before the Ready that persists it is handled), but the commit index
    it tells followers never passes its durable log: a follower applies only entries a majority holds
    durably, whatever happens to the leader's write."""
    raft, storage = make(n=3, term=1)
    become_leader(raft, storage)
    raft.step(AppendEntriesResponse(1, 0, 2, True, 1))
    sent(raft, storage)
    assert raft.log.commit_index == 1
    raft.propose(b"x")
    assert raft.has_ready()  # the leader's own copy now counts
    raft.step(AppendEntriesResponse(1, 0, 2, True, 2))  # a follower holds entry 2 before the leader wrote it
    assert raft.log.commit_index == 2
    raft.propose(b"y")
    rd = raft.ready()
    assert [e.index for e in rd.entries] == [2, 3]
    assert [e.index for e in rd.committed_entries] == [2]  # applied after step 3 of this Ready persists it
    appends = [m for m in rd.messages if isinstance(m, AppendEntries)]
    assert appends and all(m.leader_commit == 1 for m in appends)  # not 2: not yet durable here
    assert raft.progress[0].match_index == 3
    storage.append(rd.entries)
    raft.advance()
    raft.step(HeartbeatResponse(1, 0, 2))
    heartbeats = [m for m in raft.heartbeats() if m.dst == 1]
    assert heartbeats and heartbeats[0].commit == 2  # durable here now


# --- §5.4.1 election restriction ---


@pytest.mark.parametrize(
    ("last_index", "last_term", "granted"),
    [
        (3, 1, False),  # an earlier last term loses, even with a longer log
        (9, 1, False),
        (2, 2, False),  # same last term, shorter log
        (3, 2, True),  # same last term, same length
        (4, 2, True),
        (1, 3, True),  # a later last term wins, even with a shorter log
    ],
)
def test_the_election_restriction(last_index: int, last_term: int, granted: bool) -> None:
    """§5.4.1: "the voter denies its vote if its own log is more up-to-date than that of the
    candidate ... If the logs have last entries with different terms, then the log with the later term
    is more up-to-date. If the logs end with the same term, then whichever log is longer is more
    up-to-date." """
    raft, storage = make(node_id=1, log=[(1, 1), (2, 2), (3, 2)], term=2)
    raft.step(RequestVote(0, 1, 3, last_index, last_term))
    _, (response,) = sent(raft, storage)
    assert isinstance(response, RequestVoteResponse) and response.granted == granted


# --- §5.4.2 committing entries from previous terms (Figure 8) ---


def test_an_entry_of_an_earlier_term_is_not_committed_by_counting_replicas() -> None:
    """§5.4.2: "Raft never commits log entries from previous terms by counting replicas. Only log
    entries from the leader's current term are committed by counting replicas; once an entry from the
    current term has been committed in this way, then all prior entries are committed indirectly."

    Figure 8 (c): S1 leads term 4 with the entry (2, term 2) stored on a majority (S1, S2, S3); it
    must not commit it until its own entry of term 4 is stored on a majority too."""
    raft, storage = make(n=5, log=[(1, 1), (2, 2)], term=3)
    become_leader(raft, storage)
    assert raft.current_term == 4 and raft.log.last_index() == 3
    for follower in (1, 2):
        raft.step(AppendEntriesResponse(follower, 0, 4, True, 2))
    sent(raft, storage)
    assert raft.log.commit_index == 0
    raft.step(AppendEntriesResponse(1, 0, 4, True, 3))
    assert raft.log.commit_index == 0  # index 3 is on S1 and S2 only
    raft.step(AppendEntriesResponse(2, 0, 4, True, 3))
    assert raft.log.commit_index == 3  # and with it, indirectly, the entry of term 2


def test_figure_8_an_entry_replicated_on_a_majority_can_still_be_replaced() -> None:
    """Figure 8 (terms one lower than the paper's): why the rule above is needed. An entry of term 1
    that S1 (leading term 3) spreads to a majority is overwritten once S1 crashes and S5, whose log
    ends in term 2, wins term 4."""
    c = Cluster(5, pre_vote=False, check_quorum=False, replication_max_send_size=1)
    c.elect(0)  # term 1: (1, 1) no-op
    c.propose(0, b"a")  # (2, 1)
    c.deliver()
    # (a) S1 writes (3, term 1) to S2 only.
    c.propose(0, b"term1")
    c.deliver(drop=lambda m: m.src == 0 and m.dst != 1)
    # (b) S1 crashes; S5 wins term 2 with S3 and S4, and keeps its entries (index 3 on, term 2) to itself.
    c.crash(0)
    c.raft(4).campaign()
    c.settle(4)
    c.deliver(drop=lambda m: 1 in (m.src, m.dst) or isinstance(m, AppendEntries))
    assert c.raft(4).role == Role.LEADER and c.raft(4).current_term == 2
    c.propose(4, b"term2")
    c.crash(4)
    # (c) S1 restarts and wins term 3 (its first try, term 2, fails), then spreads (3, term 1) to S3:
    #     it is on a majority (S1, S2, S3), while S1's own entry of term 3 is on S1 alone.
    c.restart(0)
    for _ in range(2):
        c.raft(0).campaign()
        c.settle(0)
        c.deliver(drop=lambda m: isinstance(m, AppendEntries))
    assert c.raft(0).role == Role.LEADER and c.raft(0).current_term == 3
    c.tick(0, c.raft(0).config.heartbeat_ticks)
    c.deliver(drop=lambda m: isinstance(m, AppendEntries) and any(e.term == 3 for e in m.entries)
              and c.raft(m.dst).log.last_index() >= m.prev_log_index)  # fmt: skip
    assert [c.log(i)[2][:2] for i in (0, 1, 2)] == [(3, 1)] * 3
    assert c.raft(0).log.commit_index < 3  # a majority has index 3, and it is still not committed
    # (d) S1 crashes again; S5 wins term 4 (its log ends in term 2) and overwrites index 3 everywhere.
    c.crash(0)
    c.restart(4)
    for _ in range(2):
        c.raft(4).campaign()
        c.settle(4)
        c.deliver()
    assert c.raft(4).role == Role.LEADER and c.raft(4).current_term == 4
    c.tick_all(3)
    assert [c.log(i)[2][:2] for i in (1, 2, 3, 4)] == [(3, 2)] * 4


# --- the durability rule of Figure 2 ---


def test_votes_and_acknowledgements_are_sent_only_after_persisting() -> None:
    """Figure 2: "Persistent state on all servers: (Updated on stable storage before responding to RPCs)"."""
    raft, storage = make(node_id=1, term=1)
    raft.step(RequestVote(0, 1, 2, 0, 0))
    rd = raft.ready()
    assert rd.hard_state == HardState(2, 0) and rd.must_sync
    assert rd.messages == () and rd.messages_after_persist == (RequestVoteResponse(1, 0, 2, True),)
    drive_rest(raft, storage, rd)
    raft.step(AppendEntries(0, 1, 2, 0, 0, (Entry(1, 2, b"x"),), 0))
    rd = raft.ready()
    assert rd.entries == (Entry(1, 2, b"x"),) and rd.must_sync
    assert rd.messages == () and rd.messages_after_persist == (AppendEntriesResponse(1, 0, 2, True, 1),)
    drive_rest(raft, storage, rd)


def drive_rest(raft: Raft, storage: MemoryStorage, rd: object) -> None:
    from taskflux.raft.ready import Ready

    assert isinstance(rd, Ready)
    if rd.hard_state is not None:
        storage.set_hard_state(rd.hard_state)
    storage.append(rd.entries)
    raft.advance()


def test_a_restarted_server_recovers_term_vote_and_log_from_storage() -> None:
    raft, storage = make(node_id=1, term=1)
    raft.step(RequestVote(0, 1, 2, 0, 0))
    sent(raft, storage)
    again = Raft(config(1, 3, pre_vote=False), storage, random.Random(1))
    assert (again.current_term, again.voted_for, again.leader_id) == (2, 0, NO_LEADER)
    again.step(RequestVote(2, 1, 2, 0, 0))
    _, after = sent(again, storage)
    assert after == [RequestVoteResponse(1, 2, 2, False)]
