"""Start a node from its configuration, run it, and stop it gracefully on SIGTERM / SIGINT."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import gevent
import prometheus_client
from gevent.event import Event

from taskflux.config import MAX_PAYLOAD_SIZE, Config, ConfigError, HelpRequested, format_endpoint, load_config
from taskflux.server.grpc_api.servicer import GrpcServer, GrpcSettings
from taskflux.server.http import HttpServer
from taskflux.server.leases import LeaseTable
from taskflux.server.logs import setup_logging
from taskflux.server.membership import Membership
from taskflux.server.metrics import NodeMetrics
from taskflux.server.node import Node, NodeSettings
from taskflux.server.peers import PeerNetwork
from taskflux.server.rates import QueueRates
from taskflux.server.rest import RestApi
from taskflux.server.rest.members import MembersApi
from taskflux.server.service import QueueService
from taskflux.server.tcp import ClientPortSettings, ClientServer
from taskflux.storage.disk import DiskStorage
from taskflux.storage.errors import StorageError
from taskflux.storage.identity import IdentityFile, holds_nothing

logger = logging.getLogger("taskflux.server")

ENTRY_OVERHEAD_BYTES = 1024  # a log entry holds a payload plus the command's header
THREADPOOL_SIZE = 64
STOP_REQUESTS_SECONDS = 2.0  # how long in-flight requests may take to finish on a graceful stop
LONG_COLLECTION_SECONDS = 0.1  # a garbage collection this long is logged
GC_FREEZE_SECONDS = 30.0


def client_port_settings(config: Config) -> ClientPortSettings:
    """The binary client port's settings: the ``tcp_adapter_*`` options and ``max_payload_size``."""
    return ClientPortSettings(
        listen_host=config.tcp_adapter_listen_host,
        listen_port=config.tcp_adapter_listen_port,
        backlog=config.tcp_adapter_backlog_size,
        max_connections=config.tcp_adapter_max_connections,
        idle_timeout=config.tcp_adapter_idle_timeout,
        handshake_timeout=config.tcp_adapter_handshake_timeout,
        max_payload_size=config.max_payload_size,
    )


class Server:
    """Every part of a running node, wired together from a Config."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.storage = DiskStorage(
            config.data_directory,
            soft_limit_bytes=config.log_file_soft_limit,
            hard_limit_bytes=config.log_file_hard_limit,
            # Not this node's max_payload_size: entries replicated from a leader configured with a larger one
            # must be stored all the same (the leader enforces the client limit).
            max_record_bytes=MAX_PAYLOAD_SIZE + ENTRY_OVERHEAD_BYTES,
        )
        try:
            identity = IdentityFile(config.data_directory, config.cluster_node_id, config.cluster_id,
                                    empty=holds_nothing(self.storage))
        except BaseException:
            self.storage.close()
            raise
        self.membership = Membership(identity)
        own = config.cluster_node_id
        self.metrics = NodeMetrics()
        self.peers = PeerNetwork(
            own,
            config.cluster_peers,
            (config.cluster_listen_host, config.cluster_listen_port),
            config.client_endpoint,
            self._deliver,
            http_endpoint=format_endpoint(*config.http_advertise_address) if config.http_enabled else "",
            cluster_endpoint=config.cluster_endpoint,
            timeout=config.cluster_request_timeout,
            max_frame_bytes=config.cluster_max_frame_bytes,
            membership=self.membership,
            peer_closed=self._peer_closed,
            closing_link=self._closing_link,
        )
        self.node = Node(
            config.raft_config(),
            self.storage,
            self.peers.send,
            NodeSettings(
                tick_interval=config.raft_tick_interval,
                request_timeout=config.client_request_timeout,
                snapshot_segments_threshold=config.snapshot_creation_segments_threshold,
                max_payload_size=config.max_payload_size,
                inline_fsync_entries=config.fsync_inline_min_batch,
            ),
            metrics=self.metrics,
            membership=self.membership,
        )
        self.node.members_changed = self.peers.set_members
        self.peers.set_members(*self.node.followed_members)  # the log or a snapshot may differ from cluster_peers
        self.clients = ClientServer(self.node, self.peers, client_port_settings(config), metrics=self.metrics)
        self.service = QueueService(self.node)
        self.leases = LeaseTable()
        self.rates = QueueRates(lambda: self.node.manager)
        self.http: HttpServer | None = None
        if config.http_enabled:
            self.rest = RestApi(self.service, self.leases, self.cluster_status, self.leader_http_address,
                                self.metrics, max_payload_size=config.max_payload_size, rates=self.rates)
            MembersApi(self.node, self.cluster_status).register(self.rest)
            self.http = HttpServer(self.rest.app, config.http_listen_address)
            self.metrics.watch_clients("rest", self.http.connections)
        self.grpc: GrpcServer | None = None
        if config.grpc_enabled:
            host, port = config.grpc_listen_address
            self.grpc = GrpcServer(self.service, self.node, GrpcSettings(host, port, config.max_payload_size),
                                   metrics=self.metrics, leases=self.leases)
        self.stopped = Event()
        self._stopping = False

    def _deliver(self, message: object) -> None:
        self.node.deliver(message)  # type: ignore[arg-type]

    def _peer_closed(self, peer: int) -> None:
        self.node.peer_closed(peer)

    def _closing_link(self, peer: int) -> None:
        self.node.end_lease()

    def start(self) -> None:
        self.node.start()
        self.leases.start()
        self.rates.start()
        if self.http is not None:
            self.http.start()
        if self.grpc is not None:
            self.grpc.start()
        self.peers.start()
        self.clients.start()
        logger.info(
            "node %d (of %d voters; cluster %s) serving clients on %s, REST on %s, gRPC on %s, cluster on %s:%d, "
            "data in %s",
            self.config.cluster_node_id, len(self.node.members.voters), self.membership.cluster_id or "not known yet",
            self.clients.address,
            self.http.address if self.http is not None else "(off)",
            self.grpc.address if self.grpc is not None else "(off)",
            self.config.cluster_listen_host, self.config.cluster_listen_port, self.config.data_directory,
        )

    def leader_http_address(self, leader_id: int) -> str | None:
        """The REST address of node ``leader_id`` as it announced it, None when unknown."""
        return self.peers.http_endpoints.get(leader_id) or None

    def cluster_status(self) -> dict[str, Any]:
        """This node's view of the cluster (REST ``/api/v1/cluster`` and readiness)."""
        node = self.node
        soft = node.soft_state
        leader = soft.leader_id
        nodes = []
        lag = node.replication_lag()  # entries each member lacks, when this node leads
        for member in node.members.members:
            peer = member.id
            if peer == node.id:
                role = soft.role.name.lower()
            else:
                role = "leader" if peer == leader else "follower" if leader >= 0 else "unknown"
            if not member.voter:
                role = "learner"
            entry = {"id": peer, "role": role, "voter": member.voter, "address": member.address or None,
                     "client_endpoint": self.peers.client_endpoints.get(peer) or None,
                     "http_address": self.peers.http_endpoints.get(peer) or None}
            if peer in lag:
                entry["lag"] = lag[peer]
            nodes.append(entry)
        return {
            "node_id": node.id, "role": soft.role.name.lower(), "term": soft.term,
            "leader_id": leader if leader >= 0 else None,
            "commit_index": node.commit_index, "applied_index": node.applied_index, "nodes": nodes,
            "leader_changes": node.leader_changes,
        }

    def stop(self) -> None:
        """Graceful stop: no new clients, leadership handed over, in-flight requests finished, files closed.
        Whatever fails on the way, the files are closed and ``stopped`` is set; a second call waits for
        the first."""
        if self._stopping:
            self.stopped.wait()
            return
        self._stopping = True
        logger.info("stopping")
        try:
            for step in (self._stop_serving, self.leases.stop, self.rates.stop, self.node.stop, self.peers.stop,
                         self.storage.close):
                try:
                    step()
                except Exception:
                    logger.exception("error while stopping (%s)", step.__qualname__)
        finally:
            self.stopped.set()
            logger.info("stopped")

    def _stop_serving(self) -> None:
        self.clients.stop_accepting()
        if self.http is not None:
            self.http.stop_accepting()
        stoppers = []
        if self.grpc is not None:
            # gRPC has no "stop accepting" apart from stop(grace): new calls are refused from now on, the
            # calls in progress get the hand-over's time plus the usual grace.
            others = len(self.node.transfer_candidates())
            handover_bound = 2 * self.config.raft_election_timeout * others
            stoppers.append(gevent.spawn(self.grpc.stop, STOP_REQUESTS_SECONDS + handover_bound))
        if self.node.is_leader and self.node.transfer_candidates():
            self._hand_over_leadership()
        stoppers.append(gevent.spawn(self.clients.stop, STOP_REQUESTS_SECONDS))
        if self.http is not None:
            stoppers.append(gevent.spawn(self.http.stop, STOP_REQUESTS_SECONDS))
        gevent.joinall(stoppers)

    def _hand_over_leadership(self) -> None:
        attempt_seconds = 2 * self.config.raft_election_timeout
        for peer in self.node.transfer_candidates():
            if self.node.transfer_leadership(peer, attempt_seconds):
                logger.info("no longer the leader (leader now: %d; -1 = none yet)", self.node.leader_id)
                return
        logger.warning("could not hand leadership over before stopping")


_collection_started = [0.0]


def _keep_long_lived_objects_out_of_full_collections() -> None:
    """Queue records live long and never form reference cycles, yet each of Python's full collections scans
    them all: with a million records it blocks the process (the node loop and its heartbeats included) for
    0.4 s, and for over a second on a busy host — long enough to lose the leadership. So, at start-up (the state
    loaded from the snapshot) and then every GC_FREEZE_SECONDS, what survives a young collection is moved out
    of the collector's reach (``gc.freeze``): full collections then scan only what is newer. The price: a
    reference cycle that is alive at a freeze and dies later is never reclaimed; the request path makes few."""
    while True:
        freeze_survivors()
        gevent.sleep(GC_FREEZE_SECONDS)


def freeze_survivors() -> None:
    """Collect the young generations, then move every object left out of the reach of full collections."""
    gc.collect(1)
    gc.freeze()


def _log_long_collections(phase: str, info: dict[str, int]) -> None:
    """A full garbage collection blocks everything, the node loop included, for a time that grows with the
    number of objects: say so when one takes long enough to delay heartbeats."""
    if info["generation"] != 2:
        return
    if phase == "start":
        _collection_started[0] = time.monotonic()
        return
    seconds = time.monotonic() - _collection_started[0]
    if seconds >= LONG_COLLECTION_SECONDS:
        logger.warning("a full garbage collection took %.3f s (%d objects freed)", seconds, info["collected"])


def main(argv: Sequence[str] | None = None) -> int:
    """Run a node until SIGTERM or SIGINT; the process exit status."""
    try:
        config = load_config(sys.argv[1:] if argv is None else argv, os.environ)
    except HelpRequested as help_requested:
        print(help_requested.text)
        return 0
    except ConfigError as error:
        print(f"taskflux: configuration error: {error}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, config.log_format)
    for warning in config.warnings:
        logger.warning("%s", warning)
    prometheus_client.disable_created_metrics()  # a *_created series per counter and histogram is noise here
    gevent.get_hub().threadpool.maxsize = THREADPOOL_SIZE
    try:
        server = Server(config)
    except (StorageError, OSError) as error:
        logger.critical("cannot open the data directory %s: %s", config.data_directory, error)
        return 1
    gc.callbacks.append(_log_long_collections)
    gevent.spawn(_keep_long_lived_objects_out_of_full_collections)
    try:
        server.start()
    except OSError as error:
        logger.critical("cannot start: %s", error)
        server.stop()
        return 1
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, lambda: gevent.spawn(server.stop))
    # Whichever comes first: a signal's stop, or the end of the node loop (which logged why it failed).
    gevent.wait([server.stopped, server.node.ended], count=1)
    if server.node.failed is not None:
        server.stop()
        return 1
    server.stopped.wait()
    return 0
