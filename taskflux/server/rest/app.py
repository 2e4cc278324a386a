"""The REST application of one node: the Bottle app, its plumbing (errors, metrics, the leader's address for a
follower's answer) and the routes of every part of the API."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from typing import Any

import bottle

from taskflux.server.leases import LeaseTable
from taskflux.server.metrics import NodeMetrics
from taskflux.server.node import Node, NodeStopped, NotLeader, OutcomeUnknown
from taskflux.server.rates import QueueRates
from taskflux.server.rest.console import ConsoleRoutes
from taskflux.server.rest.health import HealthRoutes
from taskflux.server.rest.original import OriginalRoutes
from taskflux.server.rest.requests import ApiError, check_path, error, json_response, logger
from taskflux.server.rest.resources import ResourceRoutes
from taskflux.server.rest.views import note_outcome, outcome_of
from taskflux.server.service import (
    SERVICE_ERRORS,
    STOPPING_MESSAGE,
    Ending,
    QueueService,
    ending_of,
    metrics_outcome,
    outcome_unknown_message,
)


class RestApi(OriginalRoutes, ResourceRoutes, HealthRoutes, ConsoleRoutes):
    """The Bottle application of one node: the route groups it mixes in hold the handlers, it holds the state
    they share (``RestParts``) and the plumbing every route goes through."""

    def __init__(
        self,
        service: QueueService,
        leases: LeaseTable,
        cluster: Callable[[], dict[str, Any]],
        leader_address: Callable[[int], str | None],
        metrics: NodeMetrics | None = None,
        *,
        max_payload_size: int,
        rates: QueueRates | None = None,
    ) -> None:
        self.node_metrics = metrics
        self.metrics = None if metrics is None else metrics.interface("rest")
        self.service = service.for_interface(self.metrics)  # counts this interface's records
        self.node: Node = service.node
        self.leases = leases
        self.cluster = cluster
        self.leader_address = leader_address
        self.max_payload = max_payload_size
        self.rates = rates
        self.app = bottle.Bottle()
        self.app.router.add_filter("queue", lambda _conf: (r".*?", None, None))  # "" is the default queue
        for status in (400, 404, 405, 413, 500):
            self.app.error(status)(self._framework_error)
        self._routes()

    # --- plumbing ---------------------------------------------------------------------------------

    def add_route(self, method: str, path: str, handler: Callable[..., Any]) -> None:
        """Serve ``handler`` at ``path`` like the API's own routes (errors, metrics): for routes kept apart."""
        self._route(method, path, handler)

    def _route(self, method: str, path: str, handler: Callable[..., Any], counted: bool = True) -> None:
        command = handler.__name__

        @functools.wraps(handler)
        def wrapper(**kwargs: Any) -> Any:
            started = time.perf_counter()
            response = self._answer(handler, kwargs)
            if counted and self.metrics is not None:
                self.metrics.observe_request(command, outcome_of(response.status_code), time.perf_counter() - started)
            return response

        self.app.route(path, method, wrapper)

    def _answer(self, handler: Callable[..., Any], kwargs: dict[str, Any]) -> bottle.HTTPResponse:
        try:
            check_path()
            return handler(**kwargs)  # type: ignore[no-any-return]
        except ApiError as problem:
            return json_response(problem.status, problem.body, problem.headers)
        except SERVICE_ERRORS as ended:
            answer = self.service_error(ended)
            return json_response(answer.status, answer.body, answer.headers)

    def service_error(self, ended: NotLeader | NodeStopped | OutcomeUnknown) -> ApiError:
        """The answer to a request the service ended without a result (see ``QueueService``): 421/503 for
        not the leader, 503 for a stop before anything was done (both safe to retry), 504 with
        ``"outcome": "unknown"`` when the write may or may not take effect (not safe to retry blindly)."""
        note_outcome(metrics_outcome(ended))
        ending = ending_of(ended)
        if ending is Ending.NOT_LEADER:
            assert isinstance(ended, NotLeader)
            return self.not_leader_error(ended.leader_id)
        if ending is Ending.STOPPING:
            problem = error(503, "stopping", STOPPING_MESSAGE, outcome="not_executed")
            problem.headers["Retry-After"] = "1"
            return problem
        assert isinstance(ended, OutcomeUnknown)
        return error(504, "outcome_unknown", outcome_unknown_message(ended), outcome="unknown")

    def _framework_error(self, problem: bottle.HTTPError) -> str:
        bottle.response.content_type = "application/json; charset=utf-8"
        reason = {404: "no_such_route", 405: "method_not_allowed", 413: "body_too_large"}.get(
            problem.status_code, "bad_request" if problem.status_code < 500 else "internal")
        if problem.status_code >= 500:
            logger.error("REST %s %s failed: %r", bottle.request.method, bottle.request.path, problem.exception)
        return json.dumps({"error": {"reason": reason, "message": str(problem.body or problem.status_line)}})

    def not_leader_error(self, leader_id: int) -> ApiError:
        if leader_id < 0:
            return error(503, "no_leader", "this node is not the leader and knows no leader yet",
                         leader_id=None, leader=None)
        address = self.leader_address(leader_id)
        query = bottle.request.query_string
        target = bottle.request.fullpath + (f"?{query}" if query else "")
        headers = {"Location": f"http://{address}{target}"} if address else {}
        problem = error(421, "not_leader", f"this node is not the leader; the leader is node {leader_id}",
                        leader_id=leader_id, leader=address)
        problem.headers = headers
        return problem

    def _routes(self) -> None:
        route = self._route
        route("POST", "/commands/v1/enqueue", self.original_enqueue)
        route("POST", "/commands/v1/dequeue", self.original_dequeue)
        route("POST", "/commands/v1/count", self.original_count)
        route("GET", "/api/v1/queues", self.list_queues)
        route("GET", "/api/v1/queues/<name:queue>/records", self.peek)  # before the queue's route: names may hold "/"
        route("PUT", "/api/v1/queues/<name:queue>", self.create_queue)
        route("GET", "/api/v1/queues/<name:queue>", self.get_queue)
        route("DELETE", "/api/v1/queues/<name:queue>", self.delete_queue)
        route("POST", "/api/v1/queues/<name:queue>/records", self.add_record)
        route("POST", "/api/v1/queues/<name:queue>/records/batch", self.add_records)
        route("POST", "/api/v1/queues/<name:queue>/dequeue", self.dequeue)
        route("POST", "/api/v1/leases/<token>/ack", self.ack)
        route("POST", "/api/v1/leases/<token>/nack", self.nack)
        route("POST", "/api/v1/leases/<token>/release", self.release)
        route("POST", "/api/v1/leases/<token>/extend", self.extend)
        route("POST", "/api/v1/queues/<name:queue>/redrive", self.redrive)
        route("GET", "/ui", self.console_redirect, counted=False)
        route("GET", "/ui/", self.console_page, counted=False)
        route("GET", "/ui/<asset>", self.console_asset, counted=False)
        route("GET", "/api/v1/cluster", self.get_cluster)
        route("GET", "/api/v1/openapi.json", self.openapi, counted=False)
        route("GET", "/health/live", self.live, counted=False)
        route("GET", "/health/ready", self.ready, counted=False)
        route("GET", "/metrics", self.metrics_page, counted=False)
