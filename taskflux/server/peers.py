"""Links between nodes: raft messages over our own framed, checksummed TCP protocol.

Each node dials every peer and uses that outbound connection only to send; it reads raft messages
only from the connections its peers dialled to it (docs/cluster-protocol.md). One greenlet per peer
sends: it connects with back-off, says Hello, then writes every queued message in one ``sendall`` per
wake-up. One greenlet per accepted connection reads. A peer that is down, slow, or sends garbage costs
a dropped connection and some dropped messages, which raft retransmits; it never stalls the node.

After the handshake no socket operation carries a gevent timer (one per send or receive would be on every
message's path): a watchdog greenlet closes an outbound link whose send has been stuck for
``cluster_request_timeout``, and TCP keepalive ends an inbound link whose peer has vanished.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence

import gevent
from gevent.event import Event
from gevent.server import StreamServer

from taskflux.raft.messages import Message
from taskflux.wire.cluster_protocol import ClusterProtocolError, FrameDecoder, Hello, check_hello, encode_frame

logger = logging.getLogger("taskflux.peers")

OUTBOX_LIMIT = 4096  # messages queued for one peer; the oldest go first when it is unreachable
RECV_BYTES = 256 * 1024
MAX_BACKOFF = 1.0
WATCHDOG_INTERVAL = 0.25
KEEPALIVE = ((socket.TCP_KEEPIDLE, 10), (socket.TCP_KEEPINTVL, 5), (socket.TCP_KEEPCNT, 3))  # ~25 s to notice


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
    ) -> None:
        self.node_id = node_id
        self.cluster_size = len(peers)
        self._peers = list(peers)
        self._deliver = deliver
        self._timeout = timeout
        self._max_frame_bytes = max_frame_bytes
        self._hello = Hello(cluster_size=self.cluster_size, node_id=node_id, client_endpoint=client_endpoint,
                            http_endpoint=http_endpoint)
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
        self._greenlets = [gevent.spawn(self._send_loop, peer) for peer in self._outboxes]
        self._greenlets.append(gevent.spawn(self._watch_sends))

    def stop(self) -> None:
        self._stopping = True
        self._server.stop(timeout=1)
        gevent.killall(self._greenlets, timeout=2)

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
        while not self._stopping:
            sock = None
            try:
                sock = socket.create_connection(address, timeout=self._timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.sendall(encode_frame(self._hello))
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
                        sock.sendall(b"".join(batch))
                    finally:
                        del self._sending[peer]
            except (OSError, ClusterProtocolError) as error:
                if self.connected[peer]:
                    logger.warning("link to node %d lost: %s", peer, error)
                self.connected[peer] = False
            finally:
                if sock is not None:
                    sock.close()
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
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

    def _read_hello(self, sock: socket.socket, peer: int) -> None:
        decoder = FrameDecoder(self._max_frame_bytes)
        while True:
            data = sock.recv(RECV_BYTES)
            if not data:
                raise ConnectionError("closed during the handshake")
            decoder.feed(data)
            frame = decoder.next_frame()
            if frame is None:
                continue
            hello = check_hello(frame, self.cluster_size, self.node_id)
            if hello.node_id != peer:
                raise ClusterProtocolError(f"{self._peers[peer]} answered as node {hello.node_id}, expected {peer}")
            self._learn(hello)
            return

    # --- inbound ----------------------------------------------------------------------------------

    def _serve_inbound(self, sock: socket.socket, address: tuple[str, int]) -> None:
        sock.settimeout(self._timeout)
        decoder = FrameDecoder(self._max_frame_bytes)
        peer = -1
        try:
            while True:
                data = sock.recv(RECV_BYTES)
                if not data:
                    return
                decoder.feed(data)
                while (frame := decoder.next_frame()) is not None:
                    if peer < 0:
                        peer = self._accept_hello(frame, sock)
                        # Quiet links are normal (followers do not talk to each other): no read timeout;
                        # the kernel's keepalive notices a peer that vanished.
                        sock.settimeout(None)
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                        for option, value in KEEPALIVE:
                            sock.setsockopt(socket.IPPROTO_TCP, option, value)
                    elif isinstance(frame, Hello) or frame.src != peer or frame.dst != self.node_id:
                        raise ClusterProtocolError(f"node {peer} sent {type(frame).__name__} not meant for it")
                    else:
                        self._deliver(frame)
        except TimeoutError:
            logger.warning("no handshake from %s:%d within %.1f s", *address[:2], self._timeout)
        except (OSError, ClusterProtocolError) as error:
            logger.warning("closing cluster connection from %s:%d (node %d): %s", *address[:2], peer, error)
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept_hello(self, frame: object, sock: socket.socket) -> int:
        hello = check_hello(frame, self.cluster_size, self.node_id)  # type: ignore[arg-type]
        self._learn(hello)
        sock.sendall(encode_frame(self._hello))
        return hello.node_id

    def _learn(self, hello: Hello) -> None:
        self.client_endpoints[hello.node_id] = hello.client_endpoint
        self.http_endpoints[hello.node_id] = hello.http_endpoint
