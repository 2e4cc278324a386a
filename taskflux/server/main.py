"""Start a node from its configuration, run it, and stop it gracefully on SIGTERM / SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence

import gevent
from gevent.event import Event

from taskflux.config import Config, ConfigError, HelpRequested, load_config
from taskflux.server.logs import setup_logging
from taskflux.server.node import Node, NodeSettings
from taskflux.server.peers import PeerNetwork
from taskflux.server.tcp import ClientServer
from taskflux.storage.disk import DiskStorage
from taskflux.storage.errors import StorageError

logger = logging.getLogger("taskflux.server")

ENTRY_OVERHEAD_BYTES = 1024  # a log entry holds a payload plus the command's header
THREADPOOL_SIZE = 64


class Server:
    """Every part of a running node, wired together from a Config."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.storage = DiskStorage(
            config.data_directory,
            soft_limit_bytes=config.log_file_soft_limit,
            hard_limit_bytes=config.log_file_hard_limit,
            max_record_bytes=config.max_payload_size + ENTRY_OVERHEAD_BYTES,
        )
        own = config.cluster_node_id
        self.peers = PeerNetwork(
            own,
            config.cluster_peers,
            (config.cluster_listen_host, config.cluster_listen_port),
            config.client_endpoint,
            self._deliver,
            timeout=config.cluster_request_timeout,
            max_frame_bytes=config.cluster_max_frame_bytes,
        )
        self.node = Node(
            config.raft_config(),
            self.storage,
            self.peers.send,
            NodeSettings(
                tick_interval=config.raft_tick_interval,
                request_timeout=config.client_request_timeout,
                snapshot_segments_threshold=config.snapshot_creation_segments_threshold,
            ),
        )
        self.clients = ClientServer(self.node, self.peers, config)
        self.stopped = Event()
        self._stopping = False

    def _deliver(self, message: object) -> None:
        self.node.deliver(message)  # type: ignore[arg-type]

    def start(self) -> None:
        if self.config.http_enabled or self.config.grpc_enabled:
            logger.warning("REST and gRPC are not available in this version: http_* and grpc_* are ignored")
        self.node.start()
        self.peers.start()
        self.clients.start()
        logger.info(
            "node %d of %d serving clients on %s, cluster on %s:%d, data in %s",
            self.config.cluster_node_id, self.config.cluster_size, self.clients.address,
            self.config.cluster_listen_host, self.config.cluster_listen_port, self.config.data_directory,
        )

    def stop(self) -> None:
        """Graceful stop: no new clients, leadership handed over, in-flight requests finished, files closed."""
        if self._stopping:
            self.stopped.wait()
            return
        self._stopping = True
        logger.info("stopping")
        self.clients.stop_accepting()
        if self.node.is_leader and self.config.cluster_size > 1:
            self._hand_over_leadership()
        self.clients.stop(timeout=2.0)
        self.node.stop()
        self.peers.stop()
        self.storage.close()
        self.stopped.set()
        logger.info("stopped")

    def _hand_over_leadership(self) -> None:
        attempt_seconds = 2 * self.config.raft_election_timeout
        for peer in self.node.transfer_candidates():
            if self.node.transfer_leadership(peer, attempt_seconds):
                logger.info("no longer the leader (leader now: %d; -1 = none yet)", self.node.leader_id)
                return
        logger.warning("could not hand leadership over before stopping")


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
    gevent.get_hub().threadpool.maxsize = THREADPOOL_SIZE
    try:
        server = Server(config)
    except (StorageError, OSError) as error:
        logger.critical("cannot open the data directory %s: %s", config.data_directory, error)
        return 1
    try:
        server.start()
    except OSError as error:
        logger.critical("cannot start: %s", error)
        server.stop()
        return 1
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, lambda: gevent.spawn(server.stop))
    while not server.stopped.wait(timeout=1.0):
        failure = server.node.failed
        if failure is not None:
            logger.critical("the node failed: %r", failure)
            server.stop()
            return 1
    return 0
