"""Links between nodes: raft messages over our own framed, checksummed TCP protocol.

Each node dials every peer and uses that outbound connection only to send; it reads raft messages
only from the connections its peers dialled to it (docs/cluster-protocol.md). One greenlet per peer
sends: it connects with back-off, says Hello, then writes every queued message in one ``sendall`` per
wake-up. One greenlet per accepted connection reads. A peer that is down, slow, or sends garbage costs
a dropped connection and some dropped messages, which raft retransmits; it never stalls the node.

After the handshake no socket operation carries a gevent timer (one per send or receive would be on every
message's path): a watchdog greenlet closes an outbound link whose send has been stuck for
``cluster_request_timeout``, and TCP keepalive ends an inbound link whose peer has vanished.

Two callbacks tell the node about links closing, for failover without waiting for an election timeout
(docs/server.md, "Failover"): ``peer_closed(peer)`` when the peer's process closed its link to us (EOF or a
reset while reading: the peer crashed or stopped), and ``closing_link(peer)`` just *before* this node closes
an outbound link itself, whatever the reason (a failed send, the watchdog, a refused handshake, a stop).

The links follow the membership in force (``set_members``): a node added at run time gets a link (dialled at
the address its membership entry gives), a removed one loses it and may no longer connect. The initial
``peers`` list (``cluster_peers``) gives the addresses of the members of a brand-new cluster. A node that
dials in without being a member here (yet) is dialled back at the cluster endpoint its Hello gives: that is
how a new node, which knows no membership before the leader reaches it, answers the leader.

Before the handshake, an inbound connection is a stranger: it may send one Hello of at most a few hundred
bytes, within ``cluster_request_timeout`` in all; at most ``MAX_PENDING_HANDSHAKES`` strangers are held at a
time, the oldest closed first, so a flood of connections that never handshake cannot keep peers out (the
strangers are places in a ``ConnectionTable``, taskflux/server/connections.py, whose sweeper keeps the deadline). A
Hello must name this cluster (when both sides know its id) and a node id that is not ours, not removed from the
cluster, and not already connected (a twin).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import gevent
from gevent.event import Event
from gevent.server import StreamServer

from taskflux.raft.members import Members
from taskflux.raft.messages import Message
from taskflux.server.connections import ConnectionTable, EvictionPolicy, ThrottledLog, oldest, shut_down
from taskflux.values import format_endpoint
from taskflux.wire.cluster_protocol import (
    ClusterProtocolError,
    Frame,
    FrameDecoder,
    Hello,
    check_hello,
    encode_frame,
)

if TYPE_CHECKING:
    from taskflux.server.membership import Membership

logger = logging.getLogger("taskflux.peers")

OUTBOX_LIMIT = 4096  # messages queued for one peer; the oldest go first when it is unreachable
RECV_BYTES = 256 * 1024
HELLO_RECV_BYTES = 4096  # reads before the handshake: a Hello frame is at most 858 bytes
MAX_BACKOFF = 1.0
WATCHDOG_INTERVAL = 0.25
KEEPALIVE = ((socket.TCP_KEEPIDLE, 10), (socket.TCP_KEEPINTVL, 5), (socket.TCP_KEEPCNT, 3))  # ~25 s to notice
MAX_PENDING_HANDSHAKES = 64  # inbound connections not yet through their Hello; the oldest is closed first
REMOVED_LINGER = 1.0  # seconds a node that a committed change removed keeps its links, for its last messages
LOG_INTERVAL = 1.0  # at most one line per second and reason about refused inbound connections (a flood logs a count)


STRANGERS = EvictionPolicy(oldest, "was the oldest waiting for its Hello", "none evictable")


class PeerNetwork:
    """This node's links to every other node of the cluster."""

    def __init__(
        self,
        node_id: int,
        peers: Sequence[tuple[str, int]],
        listen: tuple[str, int],
        client_endpoint: str,
        deliver: Callable[[Message], None],
        *,
        http_endpoint: str = "",
        cluster_endpoint: str = "",
        timeout: float = 5.0,
        max_frame_bytes: int = 64 * 1024 * 1024,
        membership: Membership | None = None,
        max_pending: int = MAX_PENDING_HANDSHAKES,
        peer_closed: Callable[[int], None] = lambda peer: None,
        closing_link: Callable[[int], None] = lambda peer: None,
    ) -> None:
        """``peer_closed`` and ``closing_link``: see the module's docstring; both must not block."""
        self.node_id = node_id
        self.cluster_size = len(peers)  # voters in force, shown in our Hello
        self._addresses = dict(enumerate(peers))  # node id -> its cluster address
        self._deliver = deliver
        self._peer_closed = peer_closed
        self._closing_link = closing_link
        self._timeout = timeout
        self._max_frame_bytes = max_frame_bytes
        self._membership = membership
        self._client_endpoint = client_endpoint
        self._http_endpoint = http_endpoint
        self._cluster_endpoint = cluster_endpoint or format_endpoint(*listen)
        # Inbound connections not yet through their Hello: the oldest makes room, the sweeper keeps the deadline.
        self._strangers = ConnectionTable(max_pending, "cluster port", logger, min(WATCHDOG_INTERVAL, timeout / 4),
                                          policy=STRANGERS, limit_name="strangers waiting for their Hello")
        self._inbound: dict[int, tuple[socket.socket, str]] = {}  # peer -> its link and address
        self._strangers_log = ThrottledLog(logger, logging.WARNING, LOG_INTERVAL)
        self._refusals_log = ThrottledLog(logger, logging.WARNING, LOG_INTERVAL)
        self.client_endpoints: dict[int, str] = {node_id: client_endpoint}  # absent: not known (yet)
        self.http_endpoints: dict[int, str] = {node_id: http_endpoint}  # "" or absent: not known, or no HTTP
        self._started = False
        self._stopping = False
        self._outboxes: dict[int, deque[Message]] = {}
        self._wakeups: dict[int, Event] = {}
        self.connected: dict[int, bool] = {}
        self._send_loops: dict[int, gevent.Greenlet] = {}
        for peer in self._addresses:
            if peer != node_id:
                self._add_link(peer)
        self._sending: dict[int, tuple[socket.socket, float]] = {}  # peer -> (socket, when its send began)
        self._server = StreamServer(listen, self._serve_inbound)
        self._greenlets: list[gevent.Greenlet] = []
        self._members = set(self._addresses)  # the membership in force, as far as links go

    def start(self) -> None:
        self._server.start()
        self._strangers.start()
        self._started = True
        for peer in self._outboxes:
            self._send_loops[peer] = gevent.spawn(self._send_loop, peer)
        self._greenlets.append(gevent.spawn(self._watch_sends))

    def stop(self) -> None:
        self._stopping = True
        self._server.stop(timeout=1)
        gevent.killall([*self._send_loops.values(), *self._greenlets], timeout=2)
        self._strangers.stop()

    def set_members(self, members: Members, committed: Members | None = None) -> None:
        """Follow the membership in force and the last committed one: dial new members, drop the links of
        nodes in neither (and their inbound links). Addresses come from the membership where it has one
        (``HOST:PORT`` or ``HOST:CLIENTPORT/CLUSTERPORT``), else from ``peers``. A node that a committed change
        removed keeps no link at all: it takes no part any more."""
        self.cluster_size = len(members.voters)
        committed = committed or members
        wanted = set(members.ids) | set(committed.ids)
        wanted.discard(self.node_id)
        if committed.was_removed(self.node_id):
            # This node takes no part any more. Its last messages (a removed leader's TimeoutNow to its successor)
            # still go out: the links close a moment later.
            if not self._stopping:
                gevent.spawn_later(REMOVED_LINGER, self._leave)
            return
        for member in (*committed.members, *members.members):  # where both have an address, the one in force wins
            if member.address:
                self._addresses[member.id] = cluster_address(member.address)
                if member.id not in self.client_endpoints and client_endpoint_of(member.address):
                    self.client_endpoints[member.id] = client_endpoint_of(member.address)  # until its Hello
        own = members.get(self.node_id)
        if own is not None and own.address:
            self._cluster_endpoint = format_endpoint(*cluster_address(own.address))
        for peer in sorted(wanted - set(self._outboxes)):
            if peer not in self._addresses:
                logger.warning("node %d joined the membership without an address: no link to it", peer)
                continue
            logger.info("node %d at %s:%d is a member now: connecting", peer, *self._addresses[peer])
            self._add_link(peer)
        self._members = wanted | {self.node_id}
        for peer in sorted(set(self._outboxes) - wanted):
            logger.info("node %d is no member any more: closing its links", peer)
            self._drop_link(peer)

    def _leave(self) -> None:
        """Close every link: a committed change removed this node."""
        self._members = {self.node_id}
        for peer in sorted(self._outboxes):
            self._drop_link(peer)

    def _add_link(self, peer: int) -> None:
        self._outboxes[peer] = deque(maxlen=OUTBOX_LIMIT)
        self._wakeups[peer] = Event()
        self.connected[peer] = False
        if self._started and not self._stopping:
            self._send_loops[peer] = gevent.spawn(self._send_loop, peer)

    def _drop_link(self, peer: int) -> None:
        loop = self._send_loops.pop(peer, None)
        self._outboxes.pop(peer, None)
        self._wakeups.pop(peer, None)
        self.connected.pop(peer, None)
        self.client_endpoints.pop(peer, None)
        self.http_endpoints.pop(peer, None)
        self._addresses.pop(peer, None)
        if loop is not None:
            loop.kill(block=False)  # its finally closes the socket
        inbound = self._inbound.get(peer)
        if inbound is not None:
            shut_down(inbound[0])

    def client_endpoint_list(self) -> list[str]:
        """Client endpoints indexed by node id ("" where none is known, or for an id that is no member):
        what ClusterMetadata lists."""
        if not self.client_endpoints:
            return []
        out = [""] * (max(self.client_endpoints) + 1)
        for node, endpoint in self.client_endpoints.items():
            out[node] = endpoint
        return out

    @property
    def listen_port(self) -> int:
        return self._server.server_port

    def send(self, message: Message) -> None:
        """Queue ``message`` for its destination; never blocks (raft tolerates loss)."""
        outbox = self._outboxes.get(message.dst)
        if outbox is None:
            return
        outbox.append(message)
        self._wakeups[message.dst].set()

    # --- outbound ---------------------------------------------------------------------------------

    def _send_loop(self, peer: int) -> None:
        outbox = self._outboxes[peer]
        wakeup = self._wakeups[peer]
        backoff = 0.05
        refused = ""  # the last handshake refusal, logged once until it changes
        while not self._stopping:
            sock = None
            address = self._addresses[peer]
            try:
                sock = socket.create_connection(address, timeout=self._timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.sendall(encode_frame(self._hello()))
                self._read_hello(sock, peer)
                sock.settimeout(None)  # the watchdog bounds sends from here on
                logger.info("connected to node %d at %s:%d", peer, *address)
                self.connected[peer] = True
                backoff = 0.05
                while not self._stopping:
                    wakeup.wait()
                    wakeup.clear()
                    if not outbox:
                        continue
                    batch = []
                    while outbox:
                        batch.append(encode_frame(outbox.popleft()))
                    self._sending[peer] = (sock, time.monotonic())
                    try:
                        _send_all(sock, b"".join(batch))
                    finally:
                        del self._sending[peer]
            except (OSError, ClusterProtocolError) as error:
                if self.connected.get(peer):
                    logger.warning("link to node %d lost: %s", peer, error)
                elif isinstance(error, ClusterProtocolError) and str(error) != refused:
                    logger.warning("node %d at %s:%d refused: %s", peer, *address, error)
                refused = str(error) if isinstance(error, ClusterProtocolError) else refused
                if peer in self.connected:
                    self.connected[peer] = False
            finally:
                if sock is not None:
                    self._close_outbound(peer, sock.close)
            gevent.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    def _watch_sends(self) -> None:
        """Close the link of a peer whose send has been stuck for ``timeout`` (its buffers full: the peer
        stopped reading); its send loop then redials with back-off."""
        while True:
            gevent.sleep(WATCHDOG_INTERVAL)
            limit = time.monotonic() - self._timeout
            for peer, (sock, since) in list(self._sending.items()):
                if since < limit:
                    logger.warning("a send to node %d has been stuck for %.1f s: dropping the link", peer,
                                   self._timeout)
                    self._close_outbound(peer, functools.partial(shut_down, sock))

    def _close_outbound(self, peer: int, close: Callable[[], None]) -> None:
        """Close a link this node dialled; ``closing_link`` first. The peer reads the close as this node's
        process having ended it, and may stop honouring this node's leadership at once: a leader must have
        given up its lease before."""
        if peer in self._outboxes:  # not for a removed member's link: it has no say in this node's leadership
            self._closing_link(peer)
        close()

    def _hello(self) -> Hello:
        membership = self._membership
        return Hello(cluster_size=self.cluster_size, node_id=self.node_id, client_endpoint=self._client_endpoint,
                     http_endpoint=self._http_endpoint, cluster_id=membership.cluster_id if membership else "",
                     established=membership.established if membership else False,
                     cluster_endpoint=self._cluster_endpoint)

    @staticmethod
    def _receive_hello(sock: socket.socket, decoder: FrameDecoder) -> Frame:
        """The first frame; its deadline is the caller's (a whole one, not per read: a trickle of bytes does not
        extend it)."""
        while True:
            data = sock.recv(HELLO_RECV_BYTES)
            if not data:
                raise ConnectionError("closed during the handshake")
            decoder.feed(data)
            frame = decoder.next_frame()
            if frame is not None:
                return frame

    def _check_hello(self, frame: Frame) -> Hello:
        membership = self._membership
        if membership is None:
            return check_hello(frame, self.node_id)
        return check_hello(frame, self.node_id, membership.cluster_id, membership.was_removed)

    def _learn(self, hello: Hello) -> None:
        """What an accepted Hello teaches: the peer's endpoints, and what ``Membership.heard`` makes of it."""
        if self._membership is not None:
            self._membership.heard(hello)
        self.client_endpoints[hello.node_id] = hello.client_endpoint
        self.http_endpoints[hello.node_id] = hello.http_endpoint
        peer = hello.node_id
        if peer not in self._outboxes and peer not in self._members and hello.cluster_endpoint:
            try:
                self._addresses[peer] = cluster_address(hello.cluster_endpoint)
            except ValueError:
                logger.warning("node %d gave a cluster endpoint %r that is no host:port: not dialling it back", peer,
                               hello.cluster_endpoint)
                return
            logger.info("node %d at %s:%d, no member in this node's eyes yet, connected: dialling it back", peer,
                        *self._addresses[peer])
            self._add_link(peer)

    def _read_hello(self, sock: socket.socket, peer: int) -> None:
        with gevent.Timeout(self._timeout, TimeoutError(f"no handshake within {self._timeout:g} s")):
            frame = self._receive_hello(sock, FrameDecoder(self._max_frame_bytes, handshake=True))
        if isinstance(frame, Hello) and frame.node_id != peer:
            raise ClusterProtocolError(f"{self._addresses[peer]} answered as node {frame.node_id}, expected {peer}")
        self._learn(self._check_hello(frame))

    # --- inbound ----------------------------------------------------------------------------------

    def _serve_inbound(self, sock: socket.socket, address: tuple[str, int]) -> None:
        where = f"{address[0]}:{address[1]}"
        stranger = self._strangers.admit(where, functools.partial(shut_down, sock))
        decoder = FrameDecoder(self._max_frame_bytes, handshake=True)
        peer = -1
        closed_by_peer = False
        try:
            if stranger is None:
                return  # only with a limit of 0: every stranger is evictable
            stranger.wait_for_client(self._timeout, "Hello")  # in all, from now: the sweeper closes it past that
            try:
                frame = self._receive_hello(sock, decoder)
            except (OSError, ClusterProtocolError) as error:
                if not stranger.closed:  # else the table closed it, and logged why
                    self._strangers_log("closing cluster connection from %s before its handshake: %s", where, error)
                return
            finally:
                self._strangers.remove(stranger)
            try:
                peer = self._accept(frame, sock, where)
            except ClusterProtocolError as error:
                self._refusals_log("refusing cluster connection from %s: %s", where, error, key=str(error))
                return
            decoder.handshake_done()
            # Quiet links are normal (followers do not talk to each other): no read timeout; the kernel's
            # keepalive notices a peer that vanished.
            sock.settimeout(None)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for option, value in KEEPALIVE:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
            self._read_messages(sock, decoder, peer)
            closed_by_peer = True
        except ConnectionResetError as error:
            logger.warning("cluster connection from %s (node %d) reset: %s", where, peer, error)
            closed_by_peer = True
        except (OSError, ClusterProtocolError) as error:
            if peer >= 0 and peer not in self._members:  # set_members closed it: the node is no member any more
                logger.info("closed the cluster connection from %s (node %d, no member any more)", where, peer)
            else:
                logger.warning("closing cluster connection from %s (node %d): %s", where, peer, error)
        finally:
            if peer >= 0 and self._inbound.get(peer, (None, ""))[0] is sock:
                if closed_by_peer:
                    # While this link is registered a new one from the peer is refused (a twin): the node
                    # hears of the close before any message of the next link.
                    self._peer_closed(peer)
                del self._inbound[peer]
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self, frame: Frame, sock: socket.socket, where: str) -> int:
        """Check a dialer's Hello, answer with ours, register the link; the peer's id."""
        hello = self._check_hello(frame)
        connected = self._inbound.get(hello.node_id)
        if connected is not None:
            raise ClusterProtocolError(
                f"it claims node id {hello.node_id}, which is already connected from {connected[1]}: two processes "
                "run with the same cluster_node_id (or a restarted node's old connection is not closed yet: TCP "
                "keepalive closes a dead one within about 25 s)"
            )
        self._learn(hello)
        self._inbound[hello.node_id] = (sock, where)
        sock.sendall(encode_frame(self._hello()))
        return hello.node_id

    def _read_messages(self, sock: socket.socket, decoder: FrameDecoder, peer: int) -> None:
        """Deliver the peer's messages until it closes the link (returns) or the link fails (raises)."""
        buffer = bytearray(RECV_BYTES)  # one per link: a recv allocates nothing
        view = memoryview(buffer)
        while True:
            while (frame := decoder.next_frame()) is not None:
                if isinstance(frame, Hello) or frame.src != peer or frame.dst != self.node_id:
                    raise ClusterProtocolError(f"node {peer} sent {type(frame).__name__} not meant for it")
                self._deliver(frame)
            received = sock.recv_into(buffer)
            if not received:
                return
            decoder.feed(view[:received])


def parse_member_address(text: str) -> str:
    """``HOST:CLIENTPORT/CLUSTERPORT`` checked and normalized (ValueError naming what is wrong)."""
    host, colon, ports = text.strip().rpartition(":")
    client, slash, cluster = ports.partition("/")
    if not colon or not slash or not host:
        raise ValueError(f"{text!r} is not HOST:CLIENTPORT/CLUSTERPORT (e.g. 10.0.0.4:2602/5000)")
    for name, port in (("client", client), ("cluster", cluster)):
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"{text!r}: the {name} port must be a number in 1..65535")
    if any(c.isspace() for c in host) or len(host) > 255:
        raise ValueError(f"{text!r}: the host must be a name or an address without spaces")
    return f"{host}:{int(client)}/{int(cluster)}"


def client_endpoint_of(address: str) -> str:
    """The client endpoint (``HOST:CLIENTPORT``) in a member's address, "" when it names no client port."""
    host, _, ports = address.rpartition(":")
    client, slash, _ = ports.partition("/")
    return f"{host}:{client}" if slash and client else ""


def cluster_address(address: str) -> tuple[str, int]:
    """The cluster (raft) address in a member's address: ``HOST:PORT`` or ``HOST:CLIENTPORT/CLUSTERPORT``."""
    host, _, ports = address.rpartition(":")
    return host.strip("[]"), int(ports.rpartition("/")[2])


def _send_all(sock: socket.socket, data: bytes) -> None:
    """``sock.sendall(data)`` at the cost of one ``send`` when the kernel takes it all at once (the common
    case: gevent's ``sendall`` asks the socket its buffer size on every call before it sends)."""
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])
