"""What the core hands to its driver: the Ready batch and the values in it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from taskflux.raft.members import Members
from taskflux.raft.messages import Message
from taskflux.raft.types import Entry, HardState, SnapshotMeta

NO_LEADER = -1


class Role(IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state the driver may want to show or act on (NotLeader answers, metrics)."""

    role: Role
    term: int
    leader_id: int


@dataclass(frozen=True, slots=True)
class ReadState:
    """The outcome of ``read_index(context)``. When ``ok``, the read is linearizable once the state
    machine has applied ``index``; when not, leadership was lost before it was confirmed."""

    context: bytes
    index: int
    ok: bool = True


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A whole snapshot received from the leader, to be saved and installed by the driver."""

    meta: SnapshotMeta
    data: bytes


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work for the driver. The driver handles it in this order, then calls
    ``advance()``; it must not call anything else on the core in between:

    1. Send ``messages`` (the leader's replication). They may go out at once, in parallel with 2-3.
    2. If ``snapshot``: ``storage.save_snapshot(meta, [data])`` and restore the state machine from it.
    3. Persist: ``storage.set_hard_state(hard_state)`` if not None, then ``storage.append(entries)``;
       if ``must_sync``, both are durable (fsynced) before going on.
    4. Send ``messages_after_persist`` (votes, responses: they promise what step 3 made durable).
    5. Apply ``committed_entries`` to the state machine, in order.
    6. Answer the reads in ``read_states`` (once the state machine has applied their index).
    7. ``advance()``: the core learns that the entries are durable (a leader tells followers commit indexes
       only up to its durable log; it counted its own copy when it handed the entries out, safe because step
       3 comes before step 5) and that the committed entries are applied.

    ``members``: the membership in force changed (an entry of this Ready, or of an earlier one, added or
    removed a node; a conflicting suffix or a snapshot replaced one): the driver connects to new members
    before it sends ``messages`` and may drop its links to removed ones. None when unchanged.

    ``caught_up``: the node has just caught up from a leader after starting with an empty log; once step 3
    is done, the driver records that durably, so that it votes again after a restart (see ``Raft.abstain()``).

    A crash anywhere in 1-7 loses nothing the core relies on: at restart it reads storage only.
    """

    soft_state: SoftState
    messages: tuple[Message, ...] = ()
    snapshot: Snapshot | None = None
    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    must_sync: bool = False
    messages_after_persist: tuple[Message, ...] = ()
    committed_entries: tuple[Entry, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    caught_up: bool = False
    members: Members | None = None
