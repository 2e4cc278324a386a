"""Fewer answers for the same news: a follower's append acknowledgements of one Ready, coalesced."""

from __future__ import annotations

from collections.abc import Sequence

from taskflux.raft.messages import AppendEntriesResponse, Message


def coalesce_append_responses(messages: Sequence[Message]) -> tuple[Message, ...]:
    """``messages`` with each run of successful AppendEntriesResponses to one leader in one term cut to one:
    the highest ``match_index`` (the logs match up to it, hence up to every lower one), at the place of the
    run's last answer. A (leader, term) with any rejection keeps all of its answers, in order.

    A follower that handles several AppendEntries in one Ready answers each; the leader needs only the
    newest, and every answer it does not get is a frame it does not decode and a step it does not take."""
    if sum(type(m) is AppendEntriesResponse for m in messages) < 2:
        return tuple(messages)
    runs: dict[tuple[int, int], list[tuple[int, AppendEntriesResponse]]] = {}  # (leader, term) -> its answers
    for position, m in enumerate(messages):
        if isinstance(m, AppendEntriesResponse):
            runs.setdefault((m.dst, m.term), []).append((position, m))
    out: list[Message | None] = list(messages)
    for run in runs.values():
        if len(run) < 2 or not all(answer.success for _, answer in run):
            continue
        best = max((answer for _, answer in reversed(run)), key=_match_index)
        for position, _ in run[:-1]:
            out[position] = None
        out[run[-1][0]] = best
    return tuple(m for m in out if m is not None)


def _match_index(answer: AppendEntriesResponse) -> int:
    return answer.match_index
