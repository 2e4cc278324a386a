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

Before the handshake, an inbound connection is a stranger: it may send one Hello of at most a few hundred
bytes, within ``cluster_request_timeout`` in all; at most ``MAX_PENDING_HANDSHAKES`` strangers are held at a
time, the oldest closed first, so a flood of connections that never handshake cannot keep peers out (the
strangers are places in a ``ConnectionTable``, taskflux/server/connections.py, whose sweeper keeps the deadline). A
Hello must name this cluster (when both sides know its id) and a node id that is not ours and not already
connected (a twin).
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

from taskflux.raft.messages import Message
from taskflux.server.connections import ConnectionTable, EvictionPolicy, ThrottledLog, oldest, shut_down
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
HELLO_RECV_BYTES = 4096  # reads before the handshake: a Hello is at most 601 bytes
MAX_BACKOFF = 1.0
WATCHDOG_INTERVAL = 0.25
KEEPALIVE = ((socket.TCP_KEEPIDLE, 10), (socket.TCP_KEEPINTVL, 5), (socket.TCP_KEEPCNT, 3))  # ~25 s to notice
MAX_PENDING_HANDSHAKES = 64  # inbound connections not yet through their Hello; the oldest is closed first
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
        timeout: float = 5.0,
        max_frame_bytes: int = 64 * 1024 * 1024,
        membership: Membership | None = None,
        max_pending: int = MAX_PENDING_HANDSHAKES,
        peer_closed: Callable[[int], None] = lambda peer: None,
        closing_link: Callable[[int], None] = lambda peer: None,
    ) -> None:
        """``peer_closed`` and ``closing_link``: see the module's docstring; both must not block."""
        self.node_id = node_id
        self.cluster_size = len(peers)
        self._peers = list(peers)
        self._deliver = deliver
        self._peer_closed = peer_closed
        self._closing_link = closing_link
        self._timeout = timeout
        self._max_frame_bytes = max_frame_bytes
        self._membership = membership
        self._client_endpoint = client_endpoint
        self._http_endpoint = http_endpoint
        # Inbound connections not yet through their Hello: the oldest makes room, the sweeper keeps the deadline.
        self._strangers = ConnectionTable(max_pending, "cluster port", logger, min(WATCHDOG_INTERVAL, timeout / 4),
                                          policy=STRANGERS, limit_name="strangers waiting for their Hello")
        self._inbound: dict[int, tuple[socket.socket, str]] = {}  # peer -> its link and address
        self._strangers_log = ThrottledLog(logger, logging.WARNING, LOG_INTERVAL)
        self._refusals_log = ThrottledLog(logger, logging.WARNING, LOG_INTERVAL)
        self.client_endpoints = [""] * self.cluster_size
        self.client_endpoints[node_id] = client_endpoint
        self.http_endpoints = [""] * self.cluster_size  # "" = not known (yet) or no HTTP on that node
        self.http_endpoints[node_id] = http_endpoint
        self._outboxes = {peer: deque[Message](maxlen=OUTBOX_LIMIT) for peer in range(self.cluster_size)
                          if peer != node_id}
        self._wakeups = {peer: Event() for peer in self._outboxes}
        self.connected = dict.fromkeys(self._outboxes, False)
        self._sending: dict[int, tuple[socket.socket, float]] = {}  # peer -> (socket, when its send began)
        self._server = StreamServer(listen, self._serve_inbound)
        self._greenlets: list[gevent.Greenlet] = []
        self._stopping = False

    def start(self) -> None:
        self._server.start()
        self._strangers.start()
        self._greenlets = [gevent.spawn(self._send_loop, peer) for peer in self._outboxes]
        self._greenlets.append(gevent.spawn(self._watch_sends))

    def stop(self) -> None:
        self._stopping = True
        self._server.stop(timeout=1)
        gevent.killall(self._greenlets, timeout=2)
        self._strangers.stop()

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
        address = self._peers[peer]
        outbox = self._outboxes[peer]
        wakeup = self._wakeups[peer]
        backoff = 0.05
        refused = ""  # the last handshake refusal, logged once until it changes
        while not self._stopping:
            sock = None
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
                if self.connected[peer]:
                    logger.warning("link to node %d lost: %s", peer, error)
                elif isinstance(error, ClusterProtocolError) and str(error) != refused:
                    logger.warning("node %d at %s:%d refused: %s", peer, *address, error)
                refused = str(error) if isinstance(error, ClusterProtocolError) else refused
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
        self._closing_link(peer)
        close()

    def _hello(self) -> Hello:
        membership = self._membership
        return Hello(cluster_size=self.cluster_size, node_id=self.node_id, client_endpoint=self._client_endpoint,
                     http_endpoint=self._http_endpoint, cluster_id=membership.cluster_id if membership else "",
                     established=membership.established if membership else False)

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
        return check_hello(frame, self.cluster_size, self.node_id, membership.cluster_id if membership else "")

    def _learn(self, hello: Hello) -> None:
        """What an accepted Hello teaches: the peer's endpoints, and what ``Membership.heard`` makes of it."""
        if self._membership is not None:
            self._membership.heard(hello)
        self.client_endpoints[hello.node_id] = hello.client_endpoint
        self.http_endpoints[hello.node_id] = hello.http_endpoint

    def _read_hello(self, sock: socket.socket, peer: int) -> None:
        with gevent.Timeout(self._timeout, TimeoutError(f"no handshake within {self._timeout:g} s")):
            frame = self._receive_hello(sock, FrameDecoder(self._max_frame_bytes, handshake=True))
        if isinstance(frame, Hello) and frame.node_id != peer:
            raise ClusterProtocolError(f"{self._peers[peer]} answered as node {frame.node_id}, expected {peer}")
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


def _send_all(sock: socket.socket, data: bytes) -> None:
    """``sock.sendall(data)`` at the cost of one ``send`` when the kernel takes it all at once (the common
    case: gevent's ``sendall`` asks the socket its buffer size on every call before it sends)."""
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])
