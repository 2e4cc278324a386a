"""The resource API: queues, records (single, batches, peek), immediate and leased dequeues, leases."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import bottle

from taskflux.domain.commands import MAX_BATCH_IDS, MAX_BATCH_RECORDS, MAX_KEY_BYTES, POLICY_DELAY, CreateQueue
from taskflux.domain.errors import INT32_MAX, INT64_MAX, INT64_MIN, Implementation
from taskflux.domain.policies import (
    DEFAULT_DELIVERY,
    MAX_DEDUP_KEYS,
    MAX_DEDUP_WINDOW_MS,
    MAX_DELAY_MS,
    Backoff,
    DeliveryPolicies,
)
from taskflux.domain.queue import Queue
from taskflux.domain.results import Failure, RecordAdded, RecordsAdded, RecordsMoved, RecordsRemoved
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
from taskflux.server.service import MAX_PEEK, Delivery, RecordIn

DELIVERY_FIELDS = frozenset({"max_deliveries", "dead_letter_queue", "retry_delay_ms", "retry_backoff",
                             "retry_max_delay_ms", "dedup_window_ms", "dedup_max_keys"})
QUEUE_FIELDS = frozenset({"implementation", "max_queue_size", "max_payload_size", "priority_range"}) | DELIVERY_FIELDS
RECORD_FIELDS = frozenset({"priority", "payload", "payload_base64", "key", "delay_ms", "not_before_ms"})
BACKOFF_NAMES = {"fixed": Backoff.FIXED, "exponential": Backoff.EXPONENTIAL}
IDEMPOTENCY_HEADER = "Idempotency-Key"


class ResourceRoutes(RestParts):
    """The resource API: queues, records, immediate and leased dequeues, leases.
    Mixed into ``RestApi`` (taskflux.server.rest.app), which holds the state."""

    def list_queues(self) -> bottle.HTTPResponse:
        return json_response(200, {"queues": [self._queue_json(queue) for queue in self.service.list_queues()]})

    def _queue_json(self, queue: Queue) -> dict[str, Any]:
        body = queue_json(queue)
        if self.rates is not None:
            body["rates"] = self.rates.of(queue)
        return body

    def get_queue(self, name: str) -> bottle.HTTPResponse:
        queue = self.service.get_queue(queue_name(name))
        if isinstance(queue, Failure):
            raise failure_error(queue)
        return json_response(200, self._queue_json(queue))

    def create_queue(self, name: str) -> bottle.HTTPResponse:
        name = queue_name(name)
        body = read_json_object(JSON_SLACK_BYTES, optional=True)
        unknown = sorted(set(body) - QUEUE_FIELDS)
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
        result = self.service.create_queue(CreateQueue.of(
            name, implementation, max_queue_size, max_payload_size, priority_range, _delivery_policies(body)))
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
        """One record; 201 when added, 200 when its key was known (the first enqueue's id, nothing added)."""
        name = queue_name(name)
        record = self._record_input()
        if record.key is None and record.delay_ms == 0 and record.not_before_ms == 0:
            added = raise_unless_ok(self.service.enqueue(name, record.priority, record.payload))
            record_id = added.record_id if isinstance(added, RecordAdded) else None
            return json_response(201, {"queue": name, "id": record_id, "priority": record.priority,
                                       "duplicate": False})
        result = raise_unless_ok(self.service.add_records(name, [record]))
        assert isinstance(result, RecordsAdded)
        return json_response(201 if result.added[0] else 200, {
            "queue": name, "id": result.record_ids[0], "priority": record.priority, "duplicate": not result.added[0]})

    def add_records(self, name: str) -> bottle.HTTPResponse:
        """A batch, all or nothing (one log entry): 201 with each record's id and whether it was a duplicate."""
        name = queue_name(name)
        # The payloads of a batch together fit in one payload's limit (one log entry), in base64 at worst.
        body = read_json_object(self.max_payload * 4 // 3 + MAX_BATCH_RECORDS * JSON_SLACK_BYTES)
        unknown = sorted(set(body) - {"records"})
        if unknown:
            raise error(400, "unknown_field", f"unknown field {unknown[0]!r}", unknown[0])
        items = body.get("records")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH_RECORDS:
            raise error(400, "invalid_field", f"records must be a list of 1-{MAX_BATCH_RECORDS} records", "records")
        records = [self._json_record(item, f"records[{position}]") for position, item in enumerate(items)]
        size = sum(len(record.payload) for record in records)
        if size > self.max_payload:
            raise error(413, "payload_too_large", f"the batch's payloads ({size} bytes) exceed max_payload_size "
                        f"({self.max_payload} bytes) together", "records")
        result = raise_unless_ok(self.service.add_records(name, records))
        assert isinstance(result, RecordsAdded)
        return json_response(201, {"queue": name, "records": [
            {"id": record_id, "priority": record.priority, "duplicate": not added}
            for record_id, added, record in zip(result.record_ids, result.added, records, strict=True)]})

    def peek(self, name: str) -> bottle.HTTPResponse:
        """The next records a dequeue would get, left in place (``?limit=``, default 10)."""
        name = queue_name(name)
        limit = _int_param("limit", 10, 1, MAX_PEEK)
        records = self.service.peek(name, limit)
        if isinstance(records, Failure):
            raise failure_error(records)
        return json_response(200, {"queue": name, "records": [record_json(record) for record in records]})

    def _record_input(self) -> RecordIn:
        """A record from JSON (text or base64) or from a raw text/binary body + ``?priority=`` (and ``key``,
        ``delay_ms``, ``not_before_ms``); the ``Idempotency-Key`` header may give the key."""
        kind = media_type()
        if kind == JSON_TYPE:
            record = self._json_record(read_json_object(self.max_payload * 4 // 3 + JSON_SLACK_BYTES), None)
        elif kind in ("text/plain", "application/octet-stream"):
            query = bottle.request.query
            if query.get("priority") is None:
                raise error(400, "missing_parameter", "priority is required (?priority=)", "priority")
            record = RecordIn(
                _int_param("priority", 0, INT64_MIN, INT64_MAX), read_body(self.max_payload),
                _key(query.get("key"), "key"), _int_param("delay_ms", 0, 0, MAX_DELAY_MS),
                _int_param("not_before_ms", 0, 0, INT64_MAX))
        else:
            raise error(415, "unsupported_media_type",
                        f"send a record as {JSON_TYPE}, text/plain or application/octet-stream")
        header = bottle.request.headers.get(IDEMPOTENCY_HEADER)
        if header is not None:
            key = _key(header, IDEMPOTENCY_HEADER)
            if record.key is not None and record.key != key:
                raise error(400, "invalid_field", f"the {IDEMPOTENCY_HEADER} header and the key field differ", "key")
            record = RecordIn(record.priority, record.payload, key, record.delay_ms, record.not_before_ms)
        if len(record.payload) > self.max_payload:
            raise error(413, "payload_too_large", f"the payload exceeds max_payload_size ({self.max_payload} bytes)",
                        "payload")
        return record

    def _json_record(self, body: Any, where: str | None) -> RecordIn:
        """A record from its JSON object; ``where`` names it inside a batch in error messages."""
        def field(name: str) -> str:
            return name if where is None else f"{where}.{name}"

        if not isinstance(body, dict):
            raise error(400, "invalid_field", f"{where} must be a JSON object", where)
        if "priority" not in body:
            raise error(400, "missing_field", f"{field('priority')} is required", field("priority"))
        priority = int_field(body["priority"], field("priority"), INT64_MIN, INT64_MAX)
        unknown = sorted(set(body) - RECORD_FIELDS)
        if unknown:
            raise error(400, "unknown_field", f"unknown field {field(unknown[0])!r}", field(unknown[0]))
        if ("payload" in body) == ("payload_base64" in body):
            raise error(400, "missing_field", "give exactly one of payload (text) and payload_base64", field("payload"))
        if "payload" in body:
            if not isinstance(body["payload"], str):
                raise error(400, "invalid_field", f"{field('payload')} must be a string", field("payload"))
            payload = body["payload"].encode("utf-8")
        else:
            try:
                payload = base64.b64decode(body["payload_base64"], validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise error(400, "invalid_field", f"{field('payload_base64')} is not valid base64",
                            field("payload_base64")) from None
        if len(payload) > self.max_payload:
            raise error(413, "payload_too_large", f"the payload exceeds max_payload_size ({self.max_payload} bytes)",
                        field("payload"))
        return RecordIn(
            priority, payload, _key(body.get("key"), field("key")),
            optional_int_field(body, "delay_ms", 0, MAX_DELAY_MS) or 0,
            optional_int_field(body, "not_before_ms", 0, INT64_MAX) or 0)

    # --- dequeues -----------------------------------------------------------------------------------

    def dequeue(self, name: str) -> bottle.HTTPResponse:
        """The most urgent record (or, with ``?max=N``, up to N of them as a list), removed at once or leased."""
        name = queue_name(name)
        wait = duration_param("wait", 0.0, MAX_WAIT_SECONDS)
        lease = duration_param("lease", None, MAX_LEASE_SECONDS)
        if lease is not None and lease <= 0:
            raise error(400, "invalid_parameter", "lease must be longer than 0 s", "lease")
        many = bottle.request.query.get("max") is not None
        limit = _int_param("max", 1, 1, MAX_BATCH_RECORDS)
        read_body(JSON_SLACK_BYTES)  # nothing expected, but a body must not be left unread on keep-alive
        taken = self.service.reserve_many(name, limit, wait)
        if isinstance(taken, Failure):
            raise failure_error(taken)
        if not taken:
            return bottle.HTTPResponse(status=204)
        if wait and client_gone(bottle.request.environ):
            # The client gave up on a long poll: removing (or leasing) the records now would hand them to
            # nobody. They go back for the next consumer, as they were.
            for delivery in taken:
                delivery.put_back()
            note_outcome(outcomes.DISCONNECTED)
            return bottle.HTTPResponse(status=204)
        shown = ([self._leased(delivery, lease) for delivery in taken] if lease is not None
                 else self._removed_now(taken))
        for record in shown:
            record["queue"] = name
        return json_response(200, {"queue": name, "records": shown} if many else shown[0])

    def _leased(self, delivery: Delivery, seconds: float) -> dict[str, Any]:
        granted = self.leases.grant(delivery, seconds)
        body = record_json(delivery.record)
        body.update(lease=granted.token, lease_seconds=seconds)
        return body

    def _removed_now(self, taken: list[Delivery]) -> list[dict[str, Any]]:
        """Immediate mode: the removal is committed before the records are shown. If its outcome is unknown
        (not confirmed in time, the node stopped after proposing it, the server stopping under the
        request), the records are back in the queue and may or may not be removed later: they are shown
        anyway (``"removal": "unconfirmed"``), so that they are at worst delivered twice, never lost."""
        shown = [record_json(delivery.record) for delivery in taken]
        result = self.service.ack_all_before_showing(taken)
        if result is None:
            note_outcome(outcomes.TIMEOUT)
            removal = "unconfirmed"
        else:
            if not isinstance(result, RecordsRemoved):
                raise_unless_ok(result)
            removal = "committed"
        for record in shown:
            record["removal"] = removal
        return shown

    def redrive(self, name: str) -> bottle.HTTPResponse:
        """Move up to ``?max=`` (default 100) of a dead-letter queue's next records back to their origin queues."""
        name = queue_name(name)
        limit = _int_param("max", 100, 1, MAX_BATCH_IDS)
        read_body(JSON_SLACK_BYTES)
        result = raise_unless_ok(self.service.redrive(name, limit))
        assert isinstance(result, RecordsMoved)
        return json_response(200, {"queue": name, "moved": result.moved})

    # --- leases -------------------------------------------------------------------------------------

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
        return bottle.HTTPResponse(status=204)

    def nack(self, token: str) -> bottle.HTTPResponse:
        """A failed delivery: 200 with what became of the record (ready, delayed, dead_lettered; released when
        the failure could not be logged and the record went back as it was)."""
        delay = duration_param("delay", None, MAX_DELAY_MS / 1000)
        read_body(JSON_SLACK_BYTES)
        try:
            outcome = self.leases.nack(token, POLICY_DELAY if delay is None else round(delay * 1000))
        except LeaseNotFound:
            raise self._no_lease() from None
        return json_response(200, {"lease": token, "outcome": outcome})

    def release(self, token: str) -> bottle.HTTPResponse:
        """Give the record back now, as it was (not a failed delivery)."""
        read_body(JSON_SLACK_BYTES)
        try:
            self.leases.release(token)
        except LeaseNotFound:
            raise self._no_lease() from None
        return bottle.HTTPResponse(status=204)

    def extend(self, token: str) -> bottle.HTTPResponse:
        """The lease now ends ``?lease=`` from now (the job needs longer)."""
        seconds = duration_param("lease", None, MAX_LEASE_SECONDS)
        if seconds is None or seconds <= 0:
            raise error(400, "invalid_parameter", "lease (the new duration from now) must be longer than 0 s", "lease")
        read_body(JSON_SLACK_BYTES)
        try:
            lease = self.leases.extend(token, seconds)
        except LeaseNotFound:
            raise self._no_lease() from None
        return json_response(200, {"lease": token, "lease_seconds": seconds, "seconds_left": lease.seconds_left})

    @staticmethod
    def _no_lease() -> ApiError:
        return error(404, "lease_not_found",
                     "no such lease: unknown, already acked, nacked or released, or expired (its record went back)")


def _delivery_policies(body: dict[str, Any]) -> DeliveryPolicies:
    """The delivery policies of a queue-creation body (the defaults for the fields it leaves out)."""
    dead_letters = body.get("dead_letter_queue")
    if dead_letters is not None and not isinstance(dead_letters, str):
        raise error(400, "invalid_field", "dead_letter_queue must be a queue name", "dead_letter_queue")
    backoff = body.get("retry_backoff", "fixed")
    if not isinstance(backoff, str) or backoff not in BACKOFF_NAMES:
        raise error(400, "invalid_field", "retry_backoff must be \"fixed\" or \"exponential\"", "retry_backoff")

    def number(field: str, high: int, default: int) -> int:
        value = optional_int_field(body, field, 0, high)
        return default if value is None else value

    return DeliveryPolicies(
        optional_int_field(body, "max_deliveries", 1, INT32_MAX), dead_letters,
        number("retry_delay_ms", MAX_DELAY_MS, DEFAULT_DELIVERY.retry_delay_ms), BACKOFF_NAMES[backoff],
        number("retry_max_delay_ms", MAX_DELAY_MS, DEFAULT_DELIVERY.retry_max_delay_ms),
        number("dedup_window_ms", MAX_DEDUP_WINDOW_MS, DEFAULT_DELIVERY.dedup_window_ms),
        number("dedup_max_keys", MAX_DEDUP_KEYS, DEFAULT_DELIVERY.dedup_max_keys),
    )


def _key(value: Any, field: str) -> bytes | None:
    """An idempotency key: a string of 1-128 bytes in UTF-8."""
    if value is None:
        return None
    key = value.encode("utf-8") if isinstance(value, str) else None
    if key is None or not 1 <= len(key) <= MAX_KEY_BYTES:
        raise error(400, "invalid_field", f"{field} must be a string of 1-{MAX_KEY_BYTES} bytes (UTF-8)", field)
    return key


def _int_param(name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter."""
    raw = bottle.request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise error(400, "invalid_parameter", f"{name} must be an integer", name) from None
    if not low <= value <= high:
        raise error(400, "invalid_parameter", f"{name} must be between {low} and {high}", name)
    return value
