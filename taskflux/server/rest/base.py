"""What every part of the REST application reads: the state ``RestApi`` (taskflux.server.rest.app) holds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from taskflux.server.leases import LeaseTable
from taskflux.server.metrics import NodeMetrics
from taskflux.server.node import Node, NodeStopped, NotLeader, OutcomeUnknown
from taskflux.server.rates import QueueRates
from taskflux.server.rest.requests import ApiError
from taskflux.server.service import QueueService


class RestParts:
    """The state and plumbing the route groups (original, resources, health) share; ``RestApi`` provides it."""

    service: QueueService
    node: Node
    leases: LeaseTable
    cluster: Callable[[], dict[str, Any]]
    metrics: Any  # this interface's counters (None when metrics are off)
    node_metrics: NodeMetrics | None
    max_payload: int
    rates: QueueRates | None
    service_error: Callable[[NotLeader | NodeStopped | OutcomeUnknown], ApiError]
    not_leader_error: Callable[[int], ApiError]
