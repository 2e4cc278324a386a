"""Cluster membership: who votes, who only learns, and how a change is written into the log.

The configuration in force on a node is the latest membership entry in its log (in force from the moment
it is appended, committed or not), else the one its snapshot carries, else the initial membership of a
brand-new cluster. A change adds or removes one node, or promotes one learner, at a time: any majority of
the voters before such a change overlaps any majority after it, so no two leaders can be elected by the two
configurations. A leader proposes the next change only once the previous one has committed and an entry of
its own term has committed (a new leader could otherwise overwrite an uncommitted change of an earlier term
with a conflicting one, and two non-overlapping majorities could each elect a leader).

Node ids are never reused: ``next_id`` is above every id the cluster ever had, so an id below it that is not
a member is one the cluster removed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import Enum

MEMBERS_PREFIX = b"\x00taskflux-members:"
_HEAD = struct.Struct(">BII")  # format version, next_id, member count
_MEMBER = struct.Struct(">IBH")  # id, flags (bit 0: voter), address length
FORMAT_VERSION = 1
MAX_ADDRESS_BYTES = 1024
MAX_MEMBERS = 1024
NEXT_ID = -1  # the node id of an ADD_LEARNER that takes whatever id is next when the change is made


class MembershipError(ValueError):
    """A membership change that cannot be made, or a malformed membership. ``reason`` names the kind:
    ``invalid`` (an impossible change or bytes), ``no_such_member``, ``not_leader``, ``change_in_progress``
    (retry once the previous change has committed), ``not_caught_up``, ``would_lose_quorum``."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Member:
    """One node of the cluster: its id, whether it votes, and its address (opaque to raft: the node
    runtime writes ``HOST:CLIENTPORT/CLUSTERPORT`` there)."""

    id: int
    voter: bool = True
    address: str = ""


@dataclass(frozen=True, slots=True)
class Members:
    """A configuration: the members sorted by id, and the next id to hand out. ``voters``, ``learners``, ``ids``
    and ``quorum`` are computed once (the raft core reads them on every commit and election)."""

    members: tuple[Member, ...] = ()
    next_id: int = 0
    voters: frozenset[int] = field(init=False, repr=False, compare=False)
    learners: frozenset[int] = field(init=False, repr=False, compare=False)
    ids: tuple[int, ...] = field(init=False, repr=False, compare=False)
    quorum: int = field(init=False, repr=False, compare=False)  # votes (or copies) a decision needs

    def __post_init__(self) -> None:
        ids = [m.id for m in self.members]
        if ids != sorted(set(ids)):
            raise MembershipError(f"member ids must be distinct and sorted, got {ids}")
        if ids and (ids[0] < 0 or ids[-1] >= self.next_id):
            raise MembershipError(f"member ids must lie in 0..next_id-1 ({self.next_id}), got {ids}")
        voters = frozenset(m.id for m in self.members if m.voter)
        object.__setattr__(self, "voters", voters)
        object.__setattr__(self, "learners", frozenset(m.id for m in self.members if not m.voter))
        object.__setattr__(self, "ids", tuple(ids))
        object.__setattr__(self, "quorum", len(voters) // 2 + 1)

    @classmethod
    def initial(cls, addresses: list[str] | tuple[str, ...]) -> Members:
        """A brand-new cluster: every node a voter, ids 0..n-1 in the order given."""
        return cls(tuple(Member(i, True, a) for i, a in enumerate(addresses)), len(addresses))

    def get(self, node_id: int) -> Member | None:
        for m in self.members:
            if m.id == node_id:
                return m
        return None

    def is_voter(self, node_id: int) -> bool:
        m = self.get(node_id)
        return m is not None and m.voter

    def was_removed(self, node_id: int) -> bool:
        """Whether ``node_id`` belonged to the cluster once and was removed (its id is never given again)."""
        return 0 <= node_id < self.next_id and self.get(node_id) is None

    def apply(self, change: ConfChange) -> Members:
        """The configuration after ``change``; MembershipError when it cannot be made."""
        node = self.get(change.node_id)
        if change.kind is ChangeKind.ADD_LEARNER:
            node_id = self.next_id if change.node_id == NEXT_ID else change.node_id
            if node_id != self.next_id:
                raise MembershipError(f"a new node gets id {self.next_id}, not {change.node_id}")
            if not change.address:
                raise MembershipError("a new node needs an address")
            if any(m.address == change.address for m in self.members):
                raise MembershipError(f"address {change.address} already belongs to a member")
            added = Member(node_id, False, change.address)
            return Members(tuple(sorted((*self.members, added), key=lambda m: m.id)), self.next_id + 1)
        if node is None:
            what = "was removed" if self.was_removed(change.node_id) else "is not a member"
            raise MembershipError(f"node {change.node_id} {what}", "no_such_member")
        if change.kind is ChangeKind.PROMOTE:
            if node.voter:
                raise MembershipError(f"node {change.node_id} already votes")
            promoted = Member(node.id, True, node.address)
            return Members(tuple(promoted if m.id == node.id else m for m in self.members), self.next_id)
        if node.voter and len(self.voters) == 1:
            raise MembershipError(f"node {change.node_id} is the last voter")
        return Members(tuple(m for m in self.members if m.id != node.id), self.next_id)

    def encode(self) -> bytes:
        out = [_HEAD.pack(FORMAT_VERSION, self.next_id, len(self.members))]
        for m in self.members:
            address = m.address.encode()
            out.append(_MEMBER.pack(m.id, 1 if m.voter else 0, len(address)))
            out.append(address)
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> Members:
        """The inverse of ``encode``; MembershipError for anything ``encode`` could not have written."""
        if len(data) < _HEAD.size:
            raise MembershipError(f"a membership of {len(data)} bytes is shorter than its head")
        version, next_id, count = _HEAD.unpack_from(data)
        if version != FORMAT_VERSION:
            raise MembershipError(f"membership format version {version}, this node reads {FORMAT_VERSION}")
        if count > MAX_MEMBERS:
            raise MembershipError(f"a membership of {count} members (at most {MAX_MEMBERS})")
        pos = _HEAD.size
        members = []
        for _ in range(count):
            if pos + _MEMBER.size > len(data):
                raise MembershipError("a membership cut short")
            node_id, flags, length = _MEMBER.unpack_from(data, pos)
            pos += _MEMBER.size
            if flags > 1 or length > MAX_ADDRESS_BYTES or pos + length > len(data):
                raise MembershipError("a malformed membership entry")
            try:
                address = data[pos : pos + length].decode()
            except UnicodeDecodeError:
                raise MembershipError("a membership address that is not UTF-8") from None
            pos += length
            members.append(Member(node_id, bool(flags), address))
        if pos != len(data):
            raise MembershipError(f"{len(data) - pos} bytes after a membership")
        return cls(tuple(members), next_id)


class ChangeKind(Enum):
    ADD_LEARNER = "add"
    PROMOTE = "promote"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One membership change: add a learner (with the id the leader hands out: ``members.next_id``, or
    ``NEXT_ID`` for whatever it is when the change is made), promote one, remove one."""

    kind: ChangeKind
    node_id: int
    address: str = ""


def members_data(members: Members) -> bytes:
    """A membership entry's data (it starts with a zero byte, which no state-machine command starts with)."""
    return MEMBERS_PREFIX + members.encode()


def members_of(data: bytes) -> Members | None:
    """The membership a log entry carries, or None when it is no membership entry."""
    if not data.startswith(MEMBERS_PREFIX):
        return None
    return Members.decode(data[len(MEMBERS_PREFIX) :])
