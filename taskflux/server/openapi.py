"""The OpenAPI 3.1 document of the REST interface (served at ``/api/v1/openapi.json``).

Tests check that its paths and methods are exactly the application's routes.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from taskflux import __version__

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


MEMBERSHIP_TEXTS = {
    404: "no such member (`no_such_member`; a removed node's id stays unknown)",
    409: "refused now: `change_in_progress` (one change at a time: retry, `Retry-After`), `not_caught_up` (the "
         "learner is still copying the log), `would_lose_quorum` (use force=true to remove anyway)",
}


def _errors(*statuses: int, texts: dict[int, str] | None = None) -> dict[str, Any]:
    return {str(status): _json(_ref("Error"), (texts or {}).get(status) or _ERROR_TEXTS[status]) for status in statuses}


_ERROR_TEXTS = {
    400: "invalid input; `error.field` names the field",
    404: "no such queue (or lease)",
    409: "the queue exists (or, for a lease ack, the lease ended with this node's leadership)",
    413: "the body or payload is over the limit",
    415: "unsupported content type",
    421: "not the leader: `error.leader` is the leader's HTTP address (also in `Location`)",
    422: "refused by a queue policy",
    503: "nothing was done, retry shortly: no leader known (`no_leader`), the node is stopping (`stopping`, "
         "`outcome: not_executed`, `Retry-After`), or every connection is being served (`busy`)",
    504: "`outcome_unknown` (`outcome: unknown`): the write may or may not take effect (not confirmed in time, "
         "or the node stopped after proposing it); check before retrying",
}


DELIVERY_POLICIES: dict[str, Any] = {
    "max_deliveries": {"type": ["integer", "null"], "minimum": 1,
                       "description": "failed deliveries after which a record moves to dead_letter_queue"},
    "dead_letter_queue": {"type": ["string", "null"], "description": "an existing queue; set with max_deliveries"},
    "retry_delay_ms": {"type": "integer", "minimum": 0, "default": 0,
                       "description": "how long a nacked record waits (unless the nack gives a delay)"},
    "retry_backoff": {"enum": ["fixed", "exponential"], "default": "fixed",
                      "description": "exponential: the n-th failure waits retry_delay_ms * 2^(n-1)"},
    "retry_max_delay_ms": {"type": "integer", "minimum": 0, "default": 900000},
    "dedup_window_ms": {"type": "integer", "minimum": 0, "default": 300000,
                        "description": "how long an idempotency key is remembered (0: off)"},
    "dedup_max_keys": {"type": "integer", "minimum": 0, "default": 100000,
                       "description": "at most this many keys are remembered (the oldest go first)"},
}
LEADER_ERRORS = (421, 503, 504)
TOKEN = {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}
RECORDS = {"type": "object", "properties": {"queue": {"type": "string"},
                                            "records": {"type": "array", "items": _ref("Record")}}}
NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
        "description": "queue name, 0-255 printable ASCII characters; the default queue is the empty segment"}


def _operation(summary: str, responses: dict[str, Any], *, parameters: list[dict[str, Any]] | None = None,
               body: dict[str, Any] | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = body
    return operation


def _duration(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": {"type": "string", "example": "5s"},
            "description": description}


def _query(name: str, kind: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": {"type": kind}, "description": description}


def _original(summary: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"post": _operation(
        summary,
        {"200": _json(_ref("Envelope"), "executed (business errors included, in `payload`)"),
         "400": _json(_ref("Envelope"), "invalid queue name, not the leader, or a validation problem"),
         "415": _json({"type": "object"}, "not application/json")},
        body={"required": True, "content": {JSON: {"schema": schema}}},
    )}


SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["reason", "message"],
        "properties": {"reason": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"},
                       "code": {"type": "integer"}, "leader_id": {"type": ["integer", "null"]},
                       "leader": {"type": ["string", "null"]}, "policy": {"type": "string"},
                       "limits": {"type": "array", "items": {"type": "integer"}},
                       "outcome": {"enum": ["unknown", "not_executed"],
                                   "description": "504: the write may or may not take effect; 503 stopping: "
                                                  "nothing was done"}},
    }}},
    "Policies": {"type": "object", "properties": {
        "max_queue_size": {"type": ["integer", "null"], "minimum": 0},
        "max_payload_size": {"type": ["integer", "null"], "minimum": 0},
        "priority_range": {"type": ["array", "null"], "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
        **DELIVERY_POLICIES,
    }},
    "Queue": {"type": "object", "properties": {
        "name": {"type": "string"}, "implementation": {"enum": ["H4", "QA"]},
        "count": {"type": "integer", "description": "records ready to dequeue"},
        "delayed": {"type": "integer", "description": "records not due yet (delayed enqueues, retries in backoff)"},
        "reserved": {"type": "integer", "description": "records handed out, not acked yet"},
        "policies": _ref("Policies"),
        "rates": {"type": "object", "description": "records enqueued and dequeued on this node per step, the last "
                                                   "10 minutes, oldest first (dequeues: while it leads)",
                  "properties": {"interval_seconds": {"type": "number"},
                                 "enqueued": {"type": "array", "items": {"type": "integer"}},
                                 "dequeued": {"type": "array", "items": {"type": "integer"}}}},
    }},
    "NewQueue": {"type": "object", "additionalProperties": False, "properties": {
        "implementation": {"enum": ["H4", "QA"], "default": "H4"},
        "max_queue_size": {"type": ["integer", "null"], "minimum": 0},
        "max_payload_size": {"type": ["integer", "null"], "minimum": 0},
        "priority_range": {"oneOf": [
            {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
            {"type": "object", "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}}},
            {"type": "null"}]},
        **DELIVERY_POLICIES,
    }},
    "NewRecord": {"type": "object", "required": ["priority"], "additionalProperties": False, "properties": {
        "priority": {"type": "integer", "description": "int64; smaller is more urgent"},
        "payload": {"type": "string", "description": "text, stored as UTF-8"},
        "payload_base64": {"type": "string", "description": "binary payload, standard base64"},
        "key": {"type": "string", "description": "idempotency key, 1-128 bytes: within the queue's window a "
                                                 "second enqueue with it answers the first id and adds nothing "
                                                 "(also the Idempotency-Key header)"},
        "delay_ms": {"type": "integer", "minimum": 0, "description": "not handed out before this many ms"},
        "not_before_ms": {"type": "integer", "minimum": 0,
                          "description": "not handed out before this time (ms since the Unix epoch)"},
    }},
    "Added": {"type": "object", "properties": {
        "queue": {"type": "string"}, "id": {"type": "integer"}, "priority": {"type": "integer"},
        "duplicate": {"type": "boolean", "description": "its key was known: the first enqueue's id, nothing added"},
    }},
    "Record": {"type": "object", "properties": {
        "queue": {"type": "string"}, "id": {"type": "integer"}, "priority": {"type": "integer"},
        "payload": {"type": ["string", "null"], "description": "the payload as text, null when not UTF-8"},
        "payload_base64": {"type": "string"},
        "failed_deliveries": {"type": "integer", "description": "earlier deliveries that ended without an ack"},
        "origin": {"type": "object", "description": "a dead letter: the queue and id it had before",
                   "properties": {"queue": {"type": "string"}, "id": {"type": "integer"}}},
        "removal": {"enum": ["committed", "unconfirmed"],
                    "description": "immediate mode: unconfirmed = the removal may or may not commit (the record "
                                   "may be delivered again)"},
        "lease": {"type": "string", "description": "leased mode: the token to ack or nack"},
        "lease_seconds": {"type": "number"},
    }},
    "Cluster": {"type": "object", "properties": {
        "node_id": {"type": "integer"}, "role": {"enum": ["leader", "follower", "candidate", "pre_candidate"]},
        "term": {"type": "integer"}, "leader_id": {"type": ["integer", "null"]},
        "commit_index": {"type": "integer"}, "applied_index": {"type": "integer"},
        "nodes": {"type": "array", "items": _ref("Member")},
        "leader_changes": {"type": "integer", "description": "new leaders this node learned of since it started"},
    }},
    "Member": {"type": "object", "properties": {
        "id": {"type": "integer", "description": "never reused: a removed node's id is never given again"},
        "role": {"enum": ["leader", "follower", "learner", "candidate", "pre_candidate", "unknown"]},
        "voter": {"type": "boolean", "description": "false: a learner (gets the log, never votes or counts)"},
        "address": {"type": ["string", "null"],
                    "description": "HOST:CLUSTERPORT, or HOST:CLIENTPORT/CLUSTERPORT for a node added at run time"},
        "client_endpoint": {"type": ["string", "null"]}, "http_address": {"type": ["string", "null"]},
        "lag": {"type": "integer", "description": "on the leader: entries the member lacks"},
    }},
    "Members": {"type": "object", "properties": {
        "members": {"type": "array", "items": _ref("Member")},
        "voters": {"type": "array", "items": {"type": "integer"}},
        "learners": {"type": "array", "items": {"type": "integer"}},
        "next_id": {"type": "integer", "description": "the id the next added node gets"},
        "leader_id": {"type": ["integer", "null"]}, "node_id": {"type": "integer", "description": "who answered"},
        "added": {"type": "integer", "description": "POST only: the new node's id"},
    }},
    "Envelope": {"type": "object", "properties": {
        "success": {"type": "boolean"}, "error": {"type": ["string", "null"]},
        "leaderId": {"type": ["integer", "null"]}, "payload": {"type": ["object", "null"]},
    }},
}


MEMBER_ID = {"name": "node_id", "in": "path", "required": True, "schema": {"type": "integer"}}


@cache
def openapi_document() -> dict[str, Any]:
    """The whole document (built once)."""
    queue_paths = {
        "/api/v1/queues": {"get": _operation(
            "List the queues", {"200": _json({"type": "object", "properties": {
                "queues": {"type": "array", "items": _ref("Queue")}}}, "every queue"),
                **_errors(*LEADER_ERRORS)})},
        "/api/v1/queues/{name}": {
            "put": _operation("Create a queue", {"201": _json(_ref("Queue"), "created (committed)"),
                                                 **_errors(400, 409, 415, *LEADER_ERRORS)},
                              parameters=[NAME],
                              body={"required": False, "content": {JSON: {"schema": _ref("NewQueue")}}}),
            "get": _operation("A queue and its record count", {"200": _json(_ref("Queue"), "the queue"),
                                                               **_errors(400, 404, *LEADER_ERRORS)},
                              parameters=[NAME]),
            "delete": _operation("Delete a queue and its records", {"204": {"description": "deleted (committed)"},
                                                                   **_errors(400, 404, *LEADER_ERRORS)},
                                 parameters=[NAME]),
        },
        "/api/v1/queues/{name}/records": {
            "post": _operation(
                "Add a record: JSON (text or base64 payload), or a text/plain or application/octet-stream body with "
                "?priority= (and ?key=, ?delay_ms=, ?not_before_ms=)",
                {"201": _json(_ref("Added"), "stored (committed)"),
                 "200": _json(_ref("Added"), "its key was known: nothing added, the first enqueue's id"),
                 **_errors(400, 404, 413, 415, 422, *LEADER_ERRORS)},
                parameters=[NAME, *(_query(name, "integer", "for text/plain and application/octet-stream bodies")
                                    for name in ("priority", "delay_ms", "not_before_ms")),
                            _query("key", "string", "for text/plain and application/octet-stream bodies"),
                            {"name": "Idempotency-Key", "in": "header", "required": False,
                             "schema": {"type": "string"}, "description": "the record's idempotency key"}],
                body={"required": True, "content": {JSON: {"schema": _ref("NewRecord")},
                                                    "text/plain": {"schema": {"type": "string"}},
                                                    "application/octet-stream": {"schema": {"type": "string",
                                                                                            "format": "binary"}}}},
            ),
            "get": _operation(
                "Peek: the next ready records in dequeue order, left in place",
                {"200": _json(RECORDS, "up to limit records"), **_errors(400, 404, *LEADER_ERRORS)},
                parameters=[NAME, _query("limit", "integer", "how many (1-1000, default 10)")]),
        },
        "/api/v1/queues/{name}/records/batch": {"post": _operation(
            "Add up to 1000 records at once, all or nothing (one log entry)",
            {"201": _json({"type": "object", "properties": {"queue": {"type": "string"}, "records": {
                "type": "array", "items": _ref("Added")}}}, "stored (committed), in the request's order"),
             **_errors(400, 404, 413, 415, 422, *LEADER_ERRORS)},
            parameters=[NAME],
            body={"required": True, "content": {JSON: {"schema": {
                "type": "object", "required": ["records"], "additionalProperties": False, "properties": {
                    "records": {"type": "array", "items": _ref("NewRecord"), "minItems": 1, "maxItems": 1000}}}}}},
        )},
        "/api/v1/queues/{name}/dequeue": {"post": _operation(
            "Take the most urgent record (with max, up to max records as a list): immediate (removed, committed, "
            "before the answer) or leased (reserved until acked, nacked, released or expired)",
            {"200": _json({"oneOf": [_ref("Record"), RECORDS]}, "a record; a list of records with max"),
             "204": {"description": "no record within the wait"},
             **_errors(400, 404, *LEADER_ERRORS)},
            parameters=[NAME, _duration("wait", "how long to wait for a record (default 0, at most 300s)"),
                        _duration("lease", "leased mode: how long the record stays reserved (at most 12h)"),
                        _query("max", "integer", "up to this many records (1-1000), answered as a list")],
        )},
        "/api/v1/leases/{token}/ack": {"post": _operation(
            "Remove a leased record for good", {"204": {"description": "removed (committed)"},
                                                **_errors(404, 409, *LEADER_ERRORS)},
            parameters=[TOKEN])},
        "/api/v1/leases/{token}/nack": {"post": _operation(
            "A failed delivery: the record comes back after its retry delay (or ?delay=), or moves to the "
            "dead-letter queue after max_deliveries",
            {"200": _json({"type": "object", "properties": {"lease": {"type": "string"}, "outcome": {
                "enum": ["ready", "delayed", "dead_lettered", "released", "missing"],
                "description": "released: the failure could not be logged (a leader change), the record is "
                               "back uncounted"}}}, "what became of the record"), **_errors(400, 404)},
            parameters=[TOKEN, _duration("delay", "wait this long before the record is handed out again")])},
        "/api/v1/leases/{token}/release": {"post": _operation(
            "Give a leased record back now, as it was (not counted as a failed delivery)",
            {"204": {"description": "back in its queue"}, **_errors(404)}, parameters=[TOKEN])},
        "/api/v1/leases/{token}/extend": {"post": _operation(
            "Extend a lease: it now ends ?lease= from now",
            {"200": _json({"type": "object", "properties": {"lease": {"type": "string"},
                                                            "lease_seconds": {"type": "number"},
                                                            "seconds_left": {"type": "number"}}}, "extended"),
             **_errors(400, 404)},
            parameters=[TOKEN, _duration("lease", "the lease's new duration from now (at most 12h)")])},
        "/api/v1/queues/{name}/redrive": {"post": _operation(
            "Move up to max of a dead-letter queue's next records back to the queues they came from (one log entry; "
            "each becomes a new record there, without failed deliveries)",
            {"200": _json({"type": "object", "properties": {"queue": {"type": "string"},
                                                            "moved": {"type": "integer"}}}, "moved (committed)"),
             **_errors(400, 404, *LEADER_ERRORS)},
            parameters=[NAME, _query("max", "integer", "how many (1-10000, default 100)")])},
        "/ui": {"get": _operation("The web console: redirects to /ui/", {"301": {"description": "to /ui/"}})},
        "/ui/": {"get": _operation("The web console's page (docs/console.md)", {"200": {
            "description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}})},
        "/ui/{asset}": {"get": _operation("The web console's script and style sheet", {
            "200": {"description": "the file"}, "404": _json(_ref("Error"), "no such file")},
            parameters=[{"name": "asset", "in": "path", "required": True, "schema": {"type": "string"}}])},
        "/api/v1/cluster": {"get": _operation("This node's view of the cluster (readable from any origin)",
                                              {"200": _json(_ref("Cluster"), "the cluster")})},
        "/api/v1/cluster/members": {
            "get": _operation("The membership in force on this node", {"200": _json(_ref("Members"), "members")}),
            "post": _operation(
                "Add a node as a learner (it gets the next id); answered once the change committed",
                {"201": _json(_ref("Members"), "added (committed)"),
                 **_errors(400, 409, 415, *LEADER_ERRORS, texts=MEMBERSHIP_TEXTS)},
                body={"required": True, "content": {JSON: {"schema": {
                    "type": "object", "required": ["address"], "additionalProperties": False, "properties": {
                        "address": {"type": "string", "description": "HOST:CLIENTPORT/CLUSTERPORT"}}}}}}),
        },
        "/api/v1/cluster/members/{node_id}/promote": {"post": _operation(
            "Make a learner a voter; 409 not_caught_up while it is still copying the log",
            {"200": _json(_ref("Members"), "promoted (committed)"),
             **_errors(404, 409, *LEADER_ERRORS, texts=MEMBERSHIP_TEXTS)},
            parameters=[MEMBER_ID])},
        "/api/v1/cluster/members/{node_id}": {"delete": _operation(
            "Remove a node (the leader included: it steps down once the change committed); 409 would_lose_quorum "
            "when the voters left that answer would not make a quorum, unless force=true",
            {"200": _json(_ref("Members"), "removed (committed)"),
             **_errors(400, 404, 409, *LEADER_ERRORS, texts=MEMBERSHIP_TEXTS)},
            parameters=[MEMBER_ID, {"name": "force", "in": "query", "required": False,
                                    "schema": {"type": "boolean"}}])},
        "/api/v1/cluster/leader": {"post": _operation(
            "Hand leadership to a voter", {"200": _json(_ref("Members"), "the voter leads"),
                                           **_errors(400, 404, *LEADER_ERRORS, texts=MEMBERSHIP_TEXTS)},
            body={"required": True, "content": {JSON: {"schema": {
                "type": "object", "required": ["node_id"], "properties": {"node_id": {"type": "integer"}}}}}})},
        "/api/v1/openapi.json": {"get": _operation("This document", {"200": _json({"type": "object"}, "OpenAPI")})},
        "/health/live": {"get": _operation("The process serves HTTP", {"200": _json({"type": "object"}, "live")})},
        "/health/ready": {"get": _operation(
            "Ready: a leader is known and everything committed is applied",
            {"200": _json({"type": "object"}, "ready"), "503": _json({"type": "object"}, "not ready")})},
        "/metrics": {"get": _operation("Prometheus metrics", {"200": {
            "description": "text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}})},
    }
    original = {
        "/commands/v1/enqueue": _original("The original's enqueue (no ack phase; committed before the answer)", {
            "type": "object", "properties": {"queue": {"type": "string"}, "key": {"type": ["integer", "string"]},
                                             "payload": {"type": "string"}}, "required": ["queue", "payload"]}),
        "/commands/v1/dequeue": _original("The original's immediate dequeue (never waits; committed)", {
            "type": "object", "properties": {"queue": {"type": "string"}}}),
        "/commands/v1/count": _original("The original's count", {
            "type": "object", "properties": {"queue": {"type": "string"}}}),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "TaskFlux REST API", "version": __version__,
                 "description": "Priority queues replicated with Raft. Every write is answered once committed "
                                "(fsynced on a majority of nodes)."},
        "paths": {**queue_paths, **original},
        "components": {"schemas": SCHEMAS},
    }
