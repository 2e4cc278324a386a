"""The original's three routes (``/commands/v1/*``) with its JSON envelope, kept field for field."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import bottle

from taskflux.domain.errors import INT64_MAX, INT64_MIN
from taskflux.domain.names import is_valid_queue_name
from taskflux.domain.results import Failure, PolicyViolation, Result
from taskflux.server import metrics as outcomes
from taskflux.server.node import NotLeader, OutcomeUnknown
from taskflux.server.rest.base import RestParts
from taskflux.server.rest.requests import (
    JSON_SLACK_BYTES,
    JSON_TYPE,
    error,
    json_response,
    media_type,
    problem_document,
    read_body,
)
from taskflux.server.rest.views import note_outcome
from taskflux.server.service import metrics_outcome

# The original's texts, kept for the compatibility routes.
ORIGINAL_INVALID_NAME = "Передано невалидное название очереди"
ORIGINAL_NOT_LEADER = "Узел не является лидером"
ORIGINAL_UNKNOWN = "Неизвестная ошибка"


class OriginalRoutes(RestParts):
    """The original's three routes (``/commands/v1/*``) with its JSON envelope, kept field for field.
    Mixed into ``RestApi`` (taskflux.server.rest.app), which holds the state."""

    def _original_body(self, required: tuple[str, ...]) -> dict[str, Any]:
        """The original's request rules: JSON only (415), names case-insensitive, required fields (400)."""
        if media_type() != JSON_TYPE:
            raise problem_document(415, "Unsupported Media Type")
        try:
            value = json.loads(read_body(self.max_payload + JSON_SLACK_BYTES) or b"null")
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise problem_document(400, "One or more validation errors occurred.",
                                   {"$": ["The JSON value could not be converted."]}) from None
        if not isinstance(value, dict):
            raise problem_document(400, "One or more validation errors occurred.",
                                   {"$": ["A JSON object is required."]})
        fields = {str(key).lower(): item for key, item in value.items()}
        missing = [name for name in required if fields.get(name) is None]
        if missing:
            raise problem_document(400, "One or more validation errors occurred.",
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
            raise problem_document(400, "One or more validation errors occurred.",
                                   {"key": ["Expected a 64-bit integer."]})
        if not isinstance(payload, str):
            raise problem_document(400, "One or more validation errors occurred.",
                                   {"payload": ["Expected a string."]})
        if name is None:
            return self._envelope(None, 400, ORIGINAL_INVALID_NAME)
        data = payload.encode("utf-8")
        if len(data) > self.max_payload:
            raise error(413, "payload_too_large", f"the payload exceeds max_payload_size ({self.max_payload} bytes)")
        def run() -> dict[str, Any]:
            result = self.service.enqueue(name, key, data)
            return self._original_result(result, {"type": "enqueue", "ok": True})

        return self._original(run)

    def original_dequeue(self) -> bottle.HTTPResponse:
        name = self._original_name(self._original_body(()))
        if name is None:
            return self._envelope(None, 400, ORIGINAL_INVALID_NAME)

        def run() -> dict[str, Any] | bottle.HTTPResponse:
            delivery = self.service.reserve(name, 0)
            if delivery is None:
                note_outcome(outcomes.EMPTY)
                return {"type": "dequeue", "ok": False}
            if isinstance(delivery, Failure):
                return self._original_result(delivery, {})
            record = delivery.record
            taken = {"type": "dequeue", "ok": True, "queue": name, "id": record.id, "priority": record.priority,
                     "data": base64.b64encode(record.payload).decode("ascii")}
            try:
                result = delivery.ack_before_showing()
            except NotLeader:
                # Taken, but its removal lost leadership (the record is back in the queue): the original's
                # answer for this case is "unknown error" with the leader's id.
                note_outcome(outcomes.NOT_LEADER)
                return self._envelope(None, 400, ORIGINAL_UNKNOWN, self._known_leader())
            if result is None:
                note_outcome(outcomes.TIMEOUT)
                return taken  # removal unconfirmed: shown anyway, at worst delivered twice, never lost
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
