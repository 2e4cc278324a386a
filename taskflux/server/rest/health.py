"""The cluster view, health checks, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

import time

import bottle

from taskflux.server.openapi import openapi_document
from taskflux.server.rest.base import RestParts
from taskflux.server.rest.requests import error, json_response


class HealthRoutes(RestParts):
    """The cluster view, health checks, Prometheus metrics and the OpenAPI document.
    Mixed into ``RestApi`` (taskflux.server.rest.app), which holds the state."""

    def get_cluster(self) -> bottle.HTTPResponse:
        # Readable from any origin: the console of a node that went away asks the others who leads now.
        return json_response(200, self.cluster(), {"Access-Control-Allow-Origin": "*"})

    def openapi(self) -> bottle.HTTPResponse:
        return json_response(200, openapi_document())

    def live(self) -> bottle.HTTPResponse:
        return json_response(200, {"status": "live"})

    def ready(self) -> bottle.HTTPResponse:
        status = self.cluster()
        reasons = []
        if status["leader_id"] is None:
            reasons.append("no known leader")
        if status["applied_index"] < status["commit_index"]:
            reasons.append(f"applied {status['applied_index']} of {status['commit_index']} committed entries")
        if self.node.failed is not None:
            reasons.append("the node loop has failed")
        body = {"status": "ready" if not reasons else "not ready", "reasons": reasons, "node_id": status["node_id"],
                "role": status["role"], "leader_id": status["leader_id"], "time": time.time()}
        return json_response(200 if not reasons else 503, body)

    def metrics_page(self) -> bottle.HTTPResponse:
        if self.node_metrics is None:
            raise error(404, "no_metrics", "metrics are not collected on this node")
        data, content_type = self.node_metrics.render()
        return bottle.HTTPResponse(data, status=200, headers={"Content-Type": content_type})
