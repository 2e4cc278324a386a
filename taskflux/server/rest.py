"""The REST interface: a Bottle application over the QueueService.

Two sets of routes:

* ``/commands/v1/*`` — the original's three routes with its JSON envelope, kept field for field,
  its defects fixed: policy violations are reported, a dequeue is logged nowhere per request.
* ``/api/v1/*`` — a resource API: queues, records, immediate and leased dequeues, leases, the cluster;
  status codes that mean what they say (see ``docs/rest.md`` and ``/api/v1/openapi.json``).

Plus ``/health/live``, ``/health/ready`` and ``/metrics``. Every answer is JSON, errors included; bad
input never reaches the node. Writes are answered once committed, like on every interface.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import bottle

from taskflux.config import parse_duration
from taskflux.domain.commands import NO_LIMIT, CreateQueue
from taskflux.domain.errors import INT32_MAX, INT64_MAX, INT64_MIN, ErrorCode, Implementation, PolicyCode
from taskflux.domain.names import MAX_QUEUE_NAME_BYTES, is_valid_queue_name
from taskflux.domain.queue import Queue
from taskflux.domain.records import Record
from taskflux.domain.results import Failure, PolicyViolation, RecordAdded, RecordRemoved, Result
from taskflux.server import metrics as outcomes
from taskflux.server.http import client_gone, reading_body
from taskflux.server.leases import MAX_LEASE_SECONDS, LeaseNotFound, LeaseTable
from taskflux.server.metrics import NodeMetrics
from taskflux.server.node import Node, NodeStopped, NotLeader, OutcomeUnknown
from taskflux.server.openapi import openapi_document
from taskflux.server.service import (
    SERVICE_ERRORS,
    STOPPING_MESSAGE,
    Ending,
    QueueService,
    Reserved,
    ending_of,
    metrics_outcome,
    outcome_unknown_message,
)

logger = logging.getLogger("taskflux.rest")

MAX_WAIT_SECONDS = 300.0
JSON_SLACK_BYTES = 64 * 1024  # room for the JSON around a base64 payload
JSON_TYPE = "application/json"

# The original's texts, kept for the compatibility routes.
ORIGINAL_INVALID_NAME = "Передано невалидное название очереди"
ORIGINAL_NOT_LEADER = "Узел не является лидером"
ORIGINAL_UNKNOWN = "Неизвестная ошибка"

IMPLEMENTATION_NAMES = {Implementation.H4: "H4", Implementation.QA: "QA"}
POLICY_NAMES = {
    PolicyCode.GENERIC: "generic",
    PolicyCode.MAX_QUEUE_SIZE: "max_queue_size",
    PolicyCode.PRIORITY_RANGE: "priority_range",
    PolicyCode.MAX_PAYLOAD_SIZE: "max_payload_size",
}
# Business error -> (HTTP status, reason, the request field it is about)
FAILURE_STATUS: dict[ErrorCode, tuple[int, str, str | None]] = {
    ErrorCode.INVALID_QUEUE_NAME: (400, "invalid_queue_name", "name"),
    ErrorCode.QUEUE_DOES_NOT_EXIST: (404, "queue_not_found", None),
    ErrorCode.QUEUE_ALREADY_EXISTS: (409, "queue_exists", None),
    ErrorCode.INVALID_PRIORITY_RANGE: (400, "invalid_priority_range", "priority_range"),
    ErrorCode.INVALID_MAX_QUEUE_SIZE: (400, "invalid_max_queue_size", "max_queue_size"),
    ErrorCode.INVALID_MAX_PAYLOAD_SIZE: (400, "invalid_max_payload_size", "max_payload_size"),
    ErrorCode.PRIORITY_RANGE_NOT_SPECIFIED: (400, "priority_range_required", "priority_range"),
    ErrorCode.UNKNOWN_PRIORITY_QUEUE_CODE: (400, "invalid_implementation", "implementation"),
}


class ApiError(Exception):
    """An answer other than success: its status and JSON body."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body
        self.headers = headers or {}


def error(status: int, reason: str, message: str, field: str | None = None, **extra: Any) -> ApiError:
    """The resource API's error: ``{"error": {"reason", "message", "field"?, ...}}``."""
    body: dict[str, Any] = {"reason": reason, "message": message}
    if field is not None:
        body["field"] = field
    body.update(extra)
    return ApiError(status, {"error": body})


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> bottle.HTTPResponse:
    response = bottle.HTTPResponse(json.dumps(body, ensure_ascii=False), status=status, headers=headers)
    response.content_type = "application/json; charset=utf-8"
    return response


def _problem(status: int, title: str, errors: dict[str, list[str]] | None = None) -> ApiError:
    """An RFC 9457 problem document, the shape the original's framework gave its 400 and 415 answers."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if errors is not None:
        body["errors"] = errors
    return ApiError(status, body)


# --- reading requests -----------------------------------------------------------------------------


def read_body(limit: int) -> bytes:
    """The request body, refused with 413 beyond ``limit`` bytes before it is read into memory."""
    request = bottle.request
    length = request.content_length
    if length > limit:
        raise closing(error(413, "body_too_large", f"the body is {length} bytes, the limit is {limit}"))
    stream = request.environ["wsgi.input"]
    try:
        with reading_body(request.environ):
            data = stream.read(length) if length >= 0 else stream.read(limit + 1)
    except (OSError, ValueError) as problem:  # the client sent less than it announced, or broke the chunking
        raise closing(error(400, "incomplete_body", f"the body could not be read: {problem}")) from None
    if 0 <= length != len(data):
        raise closing(error(400, "incomplete_body", f"the body ended after {len(data)} of {length} bytes"))
    if len(data) > limit:
        raise closing(error(413, "body_too_large", f"the body exceeds the limit of {limit} bytes"))
    return data


def closing(problem: ApiError) -> ApiError:
    """``problem`` on a connection then closed: the rest of the body is not read (see taskflux.server.http)."""
    problem.headers["Connection"] = "close"
    return problem


def check_path() -> None:
    """Refuse a path that is not UTF-8 (Bottle would drop the bad bytes, turning "caf\\xe9" into "caf")."""
    raw = bottle.request.environ.get("bottle.raw_path", "")
    try:
        raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise error(400, "invalid_path", "the path is not valid UTF-8") from None


def media_type() -> str:
    return bottle.request.content_type.split(";")[0].strip().lower()


def read_json_object(limit: int, *, optional: bool = False) -> dict[str, Any]:
    """A JSON object body (``Content-Type: application/json``); ``{}`` for an optional empty body."""
    data = read_body(limit)
    if optional and not data.strip():
        return {}
    if media_type() != JSON_TYPE:
        raise error(415, "unsupported_media_type", f"send the body as {JSON_TYPE}")
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as problem:
        raise error(400, "invalid_json", f"the body is not valid JSON: {problem}") from None
    if not isinstance(value, dict):
        raise error(400, "invalid_json", "the body must be a JSON object")
    return value


def int_field(value: Any, field: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise error(400, "invalid_field", f"{field} must be an integer", field)
    if not low <= value <= high:
        raise error(400, "invalid_field", f"{field} must be between {low} and {high}", field)
    return value


def optional_int_field(body: dict[str, Any], field: str, low: int, high: int) -> int | None:
    value = body.get(field)
    return None if value is None else int_field(value, field, low, high)


def duration_param(name: str, default: float | None, high: float) -> float | None:
    raw = bottle.request.query.get(name)
    if raw is None:
        return default
    try:
        seconds = parse_duration(raw)
    except ValueError as problem:
        raise error(400, "invalid_parameter", f"{name}: {problem}", name) from None
    if seconds > high:
        raise error(400, "invalid_parameter", f"{name} may be at most {high:g} s", name)
    return seconds


def queue_name(raw: str) -> str:
    if not is_valid_queue_name(raw):
        raise error(400, "invalid_queue_name",
                    f"a queue name is 0-{MAX_QUEUE_NAME_BYTES} printable ASCII characters (0x21-0x7E)", "name")
    return raw


# --- writing answers ------------------------------------------------------------------------------


def queue_json(queue: Queue) -> dict[str, Any]:
    policies = queue.policies
    return {
        "name": queue.name,
        "implementation": IMPLEMENTATION_NAMES.get(queue.implementation, str(queue.implementation)),
        "count": queue.count,
        "policies": {
            "max_queue_size": policies.max_queue_size,
            "max_payload_size": policies.max_payload_size,
            "priority_range": list(policies.priority_range) if policies.priority_range is not None else None,
        },
    }


def record_json(record: Record) -> dict[str, Any]:
    try:
        text: str | None = record.payload.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {
        "id": record.id,
        "priority": record.priority,
        "payload": text,
        "payload_base64": base64.b64encode(record.payload).decode("ascii"),
    }


def failure_error(failure: Failure) -> ApiError:
    status, reason, field = FAILURE_STATUS.get(failure.code, (500, "internal", None))
    return error(status, reason, failure.message or reason.replace("_", " "), field, code=int(failure.code))


def policy_error(violation: PolicyViolation) -> ApiError:
    policy = POLICY_NAMES.get(violation.policy, str(int(violation.policy)))
    return error(422, "policy_violation", f"refused by the queue's {policy} policy {list(violation.limits)}",
                 policy=policy, limits=list(violation.limits))


OUTCOME_KEY = "taskflux.outcome"


def note_outcome(outcome: str) -> None:
    """Record this request's outcome where the status code does not tell it."""
    bottle.request.environ[OUTCOME_KEY] = outcome


def outcome_of(status: int) -> str:
    """A REST answer's outcome for the request metrics."""
    noted = bottle.request.environ.get(OUTCOME_KEY)
    if noted is not None:
        return noted  # type: ignore[no-any-return]
    if status < 300:
        return outcomes.EMPTY if status == 204 and bottle.request.path.endswith("/dequeue") else outcomes.OK
    if status in (421, 503):
        return outcomes.NOT_LEADER
    if status == 504:
        return outcomes.TIMEOUT
    if status == 422:
        return outcomes.POLICY_VIOLATION
    return outcomes.ERROR if status < 500 else outcomes.INTERNAL_ERROR


def raise_unless_ok(result: Result) -> Result:
    if isinstance(result, Failure):
        raise failure_error(result)
    if isinstance(result, PolicyViolation):
        raise policy_error(result)
    return result


class RestApi:
    """The Bottle application of one node."""

    def __init__(
        self,
        service: QueueService,
        leases: LeaseTable,
        cluster: Callable[[], dict[str, Any]],
        leader_address: Callable[[int], str | None],
        metrics: NodeMetrics | None = None,
        *,
        max_payload_size: int,
    ) -> None:
        self.service = service
        self.node: Node = service.node
        self.leases = leases
        self.cluster = cluster
        self.leader_address = leader_address
        self.node_metrics = metrics
        self.metrics = None if metrics is None else metrics.interface("rest")
        self.max_payload = max_payload_size
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
        route("PUT", "/api/v1/queues/<name:queue>", self.create_queue)
        route("GET", "/api/v1/queues/<name:queue>", self.get_queue)
        route("DELETE", "/api/v1/queues/<name:queue>", self.delete_queue)
        route("POST", "/api/v1/queues/<name:queue>/records", self.add_record)
        route("POST", "/api/v1/queues/<name:queue>/dequeue", self.dequeue)
        route("POST", "/api/v1/leases/<token>/ack", self.ack)
        route("POST", "/api/v1/leases/<token>/nack", self.nack)
        route("GET", "/api/v1/cluster", self.get_cluster)
        route("GET", "/api/v1/openapi.json", self.openapi, counted=False)
        route("GET", "/health/live", self.live, counted=False)
        route("GET", "/health/ready", self.ready, counted=False)
        route("GET", "/metrics", self.metrics_page, counted=False)

    # --- the original's routes -----------------------------------------------------------------------

    def _original_body(self, required: tuple[str, ...]) -> dict[str, Any]:
        """The original's request rules: JSON only (415), names case-insensitive, required fields (400)."""
        if media_type() != JSON_TYPE:
            raise _problem(415, "Unsupported Media Type")
        try:
            value = json.loads(read_body(self.max_payload + JSON_SLACK_BYTES) or b"null")
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise _problem(400, "One or more validation errors occurred.",
                           {"$": ["The JSON value could not be converted."]}) from None
        if not isinstance(value, dict):
            raise _problem(400, "One or more validation errors occurred.", {"$": ["A JSON object is required."]})
        fields = {str(key).lower(): item for key, item in value.items()}
        missing = [name for name in required if fields.get(name) is None]
        if missing:
            raise _problem(400, "One or more validation errors occurred.",
                           {name: [f"The {name} field is required."] for name in missing})
        return fields

    @staticmethod
    def _envelope(payload: Any, status: int = 200, error_text: str | None = None,
                  leader_id: int | None = None) -> bottle.HTTPResponse:
        return json_response(status, {"success": error_text is None, "error": error_text,
                                      "leaderId": leader_id, "payload": payload})

    def _original(self, run: Callable[[], Any]) -> bottle.HTTPResponse:
        """The envelope around what ``run`` returns (or ``run``'s own answer, when it returns one)."""
        try:
            payload = run()
            return payload if isinstance(payload, bottle.HTTPResponse) else self._envelope(payload)
        except NotLeader as not_leader:
            note_outcome(outcomes.NOT_LEADER)
            leader = None if not_leader.leader_id < 0 else not_leader.leader_id
            return self._envelope(None, 400, ORIGINAL_NOT_LEADER, leader)
        except OutcomeUnknown as unknown:
            note_outcome(metrics_outcome(unknown))
            return self._envelope(None, 400, ORIGINAL_UNKNOWN, self._known_leader())

    def _known_leader(self) -> int | None:
        leader = self.node.leader_id
        return None if leader < 0 else leader

    @staticmethod
    def _original_name(fields: dict[str, Any]) -> str | None:
        name = fields.get("queue")
        name = "" if name is None else name
        return name if isinstance(name, str) and is_valid_queue_name(name) else None

    @staticmethod
    def _original_result(result: Result, success: dict[str, Any]) -> dict[str, Any]:
        """The envelope's payload for a result; a refusal's outcome is noted for the metrics (the status
        is 200 either way on these routes)."""
        if isinstance(result, Failure):
            note_outcome(outcomes.ERROR)
            return {"type": "error", "subtype": int(result.code), "message": ""}
        if isinstance(result, PolicyViolation):
            note_outcome(outcomes.POLICY_VIOLATION)
            return {"type": "policy-violation", "ok": False, "policy": int(result.policy),
                    "limits": list(result.limits)}
        return success

    def original_enqueue(self) -> bottle.HTTPResponse:
        fields = self._original_body(("queue", "payload"))
        name = self._original_name(fields)
        key, payload = fields.get("key", 0), fields["payload"]
        if isinstance(key, str):
            try:
                key = int(key.strip())
            except ValueError:
                key = None
        if not isinstance(key, int) or isinstance(key, bool) or not INT64_MIN <= key <= INT64_MAX:
            raise _problem(400, "One or more validation errors occurred.", {"key": ["Expected a 64-bit integer."]})
        if not isinstance(payload, str):
            raise _problem(400, "One or more validation errors occurred.", {"payload": ["Expected a string."]})
        if name is None:
            return self._envelope(None, 400, ORIGINAL_INVALID_NAME)
        data = payload.encode("utf-8")
        if len(data) > self.max_payload:
            raise error(413, "payload_too_large", f"the payload exceeds max_payload_size ({self.max_payload} bytes)")
        def run() -> dict[str, Any]:
            result = self.service.enqueue(name, key, data)
            if isinstance(result, RecordAdded):
                self._count("enqueued")
            return self._original_result(result, {"type": "enqueue", "ok": True})

        return self._original(run)

    def original_dequeue(self) -> bottle.HTTPResponse:
        name = self._original_name(self._original_body(()))
        if name is None:
            return self._envelope(None, 400, ORIGINAL_INVALID_NAME)

        def run() -> dict[str, Any] | bottle.HTTPResponse:
            reserved = self.service.reserve(name, 0)
            if reserved is None:
                note_outcome(outcomes.EMPTY)
                return {"type": "dequeue", "ok": False}
            if isinstance(reserved, Failure):
                return self._original_result(reserved, {})
            record = reserved.record
            taken = {"type": "dequeue", "ok": True, "queue": name, "id": record.id, "priority": record.priority,
                     "data": base64.b64encode(record.payload).decode("ascii")}
            try:
                result = self.service.remove_before_showing(reserved)
            except NotLeader:
                # Taken, but its removal lost leadership (the record is back in the queue): the original's
                # answer for this case is "unknown error" with the leader's id.
                note_outcome(outcomes.NOT_LEADER)
                return self._envelope(None, 400, ORIGINAL_UNKNOWN, self._known_leader())
            self._count("dequeued")
            if result is None:
                note_outcome(outcomes.TIMEOUT)
                return taken  # removal unconfirmed: shown anyway, at worst delivered twice, never lost
            self._count("acked")
            return self._original_result(result, taken)

        return self._original(run)

    def original_count(self) -> bottle.HTTPResponse:
        name = self._original_name(self._original_body(()))
        if name is None:
            return self._envelope(None, 400, ORIGINAL_INVALID_NAME)

        def run() -> dict[str, Any]:
            queue = self.service.get_queue(name)
            if isinstance(queue, Failure):
                return self._original_result(queue, {})
            return {"count": queue.count}

        return self._original(run)

    # --- queues -----------------------------------------------------------------------------------

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

    def _count(self, records: str) -> None:
        if self.metrics is not None:
            getattr(self.metrics, records)()

    @staticmethod
    def _no_lease() -> ApiError:
        return error(404, "lease_not_found",
                     "no such lease: unknown, already acked or nacked, or expired (its record went back)")

    # --- cluster, health, metrics, the document ----------------------------------------------------

    def get_cluster(self) -> bottle.HTTPResponse:
        return json_response(200, self.cluster())

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
