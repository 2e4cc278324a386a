"""The resource API: queues, records, immediate and leased dequeues, leases."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import bottle

from taskflux.domain.commands import NO_LIMIT, CreateQueue
from taskflux.domain.errors import INT32_MAX, INT64_MAX, INT64_MIN, Implementation
from taskflux.domain.results import Failure, RecordAdded, RecordRemoved
from taskflux.server import metrics as outcomes
from taskflux.server.http import client_gone
from taskflux.server.leases import MAX_LEASE_SECONDS, LeaseNotFound
from taskflux.server.node import NotLeader
from taskflux.server.rest.base import RestParts
from taskflux.server.rest.requests import (
    JSON_SLACK_BYTES,
    JSON_TYPE,
    MAX_WAIT_SECONDS,
    ApiError,
    duration_param,
    error,
    int_field,
    json_response,
    media_type,
    optional_int_field,
    queue_name,
    read_body,
    read_json_object,
)
from taskflux.server.rest.views import failure_error, note_outcome, queue_json, raise_unless_ok, record_json
from taskflux.server.service import Reserved


class ResourceRoutes(RestParts):
    """The resource API: queues, records, immediate and leased dequeues, leases.
    Mixed into ``RestApi`` (taskflux.server.rest.app), which holds the state."""

    def list_queues(self) -> bottle.HTTPResponse:
        return json_response(200, {"queues": [queue_json(queue) for queue in self.service.list_queues()]})

    def get_queue(self, name: str) -> bottle.HTTPResponse:
        queue = self.service.get_queue(queue_name(name))
        if isinstance(queue, Failure):
            raise failure_error(queue)
        return json_response(200, queue_json(queue))

    def create_queue(self, name: str) -> bottle.HTTPResponse:
        name = queue_name(name)
        body = read_json_object(JSON_SLACK_BYTES, optional=True)
        unknown = sorted(set(body) - {"implementation", "max_queue_size", "max_payload_size", "priority_range"})
        if unknown:
            raise error(400, "unknown_field", f"unknown field {unknown[0]!r}", unknown[0])
        implementation_name = body.get("implementation", "H4")
        implementation = {"H4": Implementation.H4, "QA": Implementation.QA}.get(
            implementation_name.upper() if isinstance(implementation_name, str) else "")
        if implementation is None:
            raise error(400, "invalid_field", "implementation must be \"H4\" (heap) or \"QA\" (queue array)",
                        "implementation")
        max_queue_size = optional_int_field(body, "max_queue_size", 0, INT32_MAX)
        max_payload_size = optional_int_field(body, "max_payload_size", 0, INT32_MAX)
        priority_range = self._priority_range(body.get("priority_range"))
        result = self.service.create_queue(CreateQueue(
            name, implementation,
            NO_LIMIT if max_queue_size is None else max_queue_size,
            NO_LIMIT if max_payload_size is None else max_payload_size,
            priority_range,
        ))
        raise_unless_ok(result)
        queue = self.node.manager.get(name)
        body = queue_json(queue) if queue is not None else {"name": name}
        return json_response(201, body, {"Location": f"/api/v1/queues/{name}"})

    @staticmethod
    def _priority_range(value: Any) -> tuple[int, int] | None:
        if value is None:
            return None
        if isinstance(value, dict):
            value = [value.get("min"), value.get("max")]
        if not isinstance(value, list) or len(value) != 2:
            raise error(400, "invalid_field", "priority_range is [min, max] or {\"min\": .., \"max\": ..}",
                        "priority_range")
        low = int_field(value[0], "priority_range", INT64_MIN, INT64_MAX)
        high = int_field(value[1], "priority_range", INT64_MIN, INT64_MAX)
        if low > high:
            raise error(400, "invalid_priority_range", "priority_range min is above its max", "priority_range")
        return low, high

    def delete_queue(self, name: str) -> bottle.HTTPResponse:
        name = queue_name(name)
        if name == "":
            raise error(400, "default_queue", "the default queue cannot be deleted", "name")
        raise_unless_ok(self.service.delete_queue(name))
        return bottle.HTTPResponse(status=204)

    # --- records ----------------------------------------------------------------------------------

    def add_record(self, name: str) -> bottle.HTTPResponse:
        name = queue_name(name)
        priority, payload = self._record_input()
        if len(payload) > self.max_payload:
            raise error(413, "payload_too_large", f"the payload exceeds max_payload_size ({self.max_payload} bytes)",
                        "payload")
        result = raise_unless_ok(self.service.enqueue(name, priority, payload))
        self._count("enqueued")
        record_id = result.record_id if isinstance(result, RecordAdded) else None
        return json_response(201, {"queue": name, "id": record_id, "priority": priority})

    def _record_input(self) -> tuple[int, bytes]:
        """(priority, payload) from JSON (text or base64) or from a raw text/binary body + ``?priority=``."""
        kind = media_type()
        if kind == JSON_TYPE:
            body = read_json_object(self.max_payload * 4 // 3 + JSON_SLACK_BYTES)
            if "priority" not in body:
                raise error(400, "missing_field", "priority is required", "priority")
            priority = int_field(body["priority"], "priority", INT64_MIN, INT64_MAX)
            unknown = sorted(set(body) - {"priority", "payload", "payload_base64"})
            if unknown:
                raise error(400, "unknown_field", f"unknown field {unknown[0]!r}", unknown[0])
            if ("payload" in body) == ("payload_base64" in body):
                raise error(400, "missing_field", "give exactly one of payload (text) and payload_base64", "payload")
            if "payload" in body:
                if not isinstance(body["payload"], str):
                    raise error(400, "invalid_field", "payload must be a string", "payload")
                return priority, body["payload"].encode("utf-8")
            try:
                return priority, base64.b64decode(body["payload_base64"], validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise error(400, "invalid_field", "payload_base64 is not valid base64", "payload_base64") from None
        if kind in ("text/plain", "application/octet-stream"):
            raw = bottle.request.query.get("priority")
            if raw is None:
                raise error(400, "missing_parameter", "priority is required (?priority=)", "priority")
            try:
                priority = int(raw)
            except ValueError:
                raise error(400, "invalid_parameter", "priority must be an integer", "priority") from None
            int_field(priority, "priority", INT64_MIN, INT64_MAX)
            return priority, read_body(self.max_payload)
        raise error(415, "unsupported_media_type",
                    f"send a record as {JSON_TYPE}, text/plain or application/octet-stream")

    def dequeue(self, name: str) -> bottle.HTTPResponse:
        name = queue_name(name)
        wait = duration_param("wait", 0.0, MAX_WAIT_SECONDS)
        lease = duration_param("lease", None, MAX_LEASE_SECONDS)
        if lease is not None and lease <= 0:
            raise error(400, "invalid_parameter", "lease must be longer than 0 s", "lease")
        read_body(JSON_SLACK_BYTES)  # nothing expected, but a body must not be left unread on keep-alive
        reserved = self.service.reserve(name, wait)
        if reserved is None:
            return bottle.HTTPResponse(status=204)
        if isinstance(reserved, Failure):
            raise failure_error(reserved)
        if wait and client_gone(bottle.request.environ):
            # The client gave up on a long poll: removing (or leasing) the record now would hand it to
            # nobody. It goes back for the next consumer.
            self.service.release(reserved)
            note_outcome(outcomes.DISCONNECTED)
            return bottle.HTTPResponse(status=204)
        self._count("dequeued")
        if lease is not None:
            granted = self.leases.grant(reserved, lease)
            body = record_json(reserved.record)
            body.update(queue=name, lease=granted.token, lease_seconds=lease)
            return json_response(200, body)
        return self._remove_now(name, reserved)

    def _remove_now(self, name: str, reserved: Reserved) -> bottle.HTTPResponse:
        """Immediate mode: the removal is committed before the record is shown. If its outcome is unknown
        (not confirmed in time, the node stopped after proposing it, the server stopping under the
        request), the record is back in the queue and may or may not be removed later: it is shown anyway
        (``"removal": "unconfirmed"``), so that it is at worst delivered twice, never lost."""
        body = record_json(reserved.record)
        body["queue"] = name
        result = self.service.remove_before_showing(reserved)
        if result is None:
            note_outcome(outcomes.TIMEOUT)
            body["removal"] = "unconfirmed"
            return json_response(200, body)
        if not isinstance(result, RecordRemoved):
            raise_unless_ok(result)
        self._count("acked")
        body["removal"] = "committed"
        return json_response(200, body)

    def ack(self, token: str) -> bottle.HTTPResponse:
        try:
            raise_unless_ok(self.leases.ack(token))
        except LeaseNotFound:
            raise self._no_lease() from None
        except NotLeader:
            # Leases live on the leader that granted them: this one is over, and its record is back in the
            # queue (the new leader will deliver it again). Sending the ack elsewhere would not help.
            raise error(409, "lease_lost", "this node is no longer the leader: the lease ended and its record "
                        "went back to the queue") from None
        self._count("acked")
        return bottle.HTTPResponse(status=204)

    def nack(self, token: str) -> bottle.HTTPResponse:
        try:
            self.leases.nack(token)
        except LeaseNotFound:
            raise self._no_lease() from None
        self._count("nacked")
        return bottle.HTTPResponse(status=204)

    @staticmethod
    def _no_lease() -> ApiError:
        return error(404, "lease_not_found",
                     "no such lease: unknown, already acked or nacked, or expired (its record went back)")
