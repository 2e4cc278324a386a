"""The client's error hierarchy: one class per error code (docs/client-protocol.md §7) and per policy violation
(§9), plus connection, timeout, protocol and unknown-outcome errors. :data:`ERROR_CLASSES` maps codes to classes."""

from __future__ import annotations

from taskflux.domain.errors import ErrorCode, PolicyCode


class TaskFluxError(Exception):
    """Base of every error raised by the TaskFlux client."""


# --- errors the server reports with an error code ----------------------------------------------------------------

class ServerError(TaskFluxError):
    """The server refused the command with an error code; the command did not take effect."""

    code: int = ErrorCode.UNKNOWN
    description = "the server refused the command"

    def __init__(self, message: str = "", code: int | None = None) -> None:
        if code is not None:
            self.code = code
        self.server_message = message
        super().__init__(f"{self.description} (error {int(self.code)})" + (f": {message}" if message else ""))


class UnknownServerError(ServerError):
    """The server failed for an unknown reason."""

    code = ErrorCode.UNKNOWN
    description = "the server failed for an unknown reason"


class InvalidQueueName(ServerError):
    """The queue name is invalid (0–255 bytes, each a printable ASCII character 0x21–0x7E)."""

    code = ErrorCode.INVALID_QUEUE_NAME
    description = "invalid queue name (0-255 printable ASCII characters, no spaces)"


class QueueDoesNotExist(ServerError):
    """The queue does not exist."""

    code = ErrorCode.QUEUE_DOES_NOT_EXIST
    description = "the queue does not exist"


class QueueAlreadyExists(ServerError):
    """A queue with this name already exists."""

    code = ErrorCode.QUEUE_ALREADY_EXISTS
    description = "the queue already exists"


class InvalidPriorityRange(ServerError):
    """The priority range is invalid (max < min)."""

    code = ErrorCode.INVALID_PRIORITY_RANGE
    description = "invalid priority range (max below min)"


class InvalidMaxQueueSize(ServerError):
    """The maximum queue size is invalid (negative)."""

    code = ErrorCode.INVALID_MAX_QUEUE_SIZE
    description = "invalid maximum queue size"


class InvalidMaxPayloadSize(ServerError):
    """The maximum payload size is invalid (negative)."""

    code = ErrorCode.INVALID_MAX_PAYLOAD_SIZE
    description = "invalid maximum payload size"


class PriorityRangeNotSpecified(ServerError):
    """A queue-array ("qa") queue needs a priority range."""

    code = ErrorCode.PRIORITY_RANGE_NOT_SPECIFIED
    description = "a qa queue needs a priority range"


class UnknownPriorityQueueCode(ServerError):
    """The queue implementation code is unknown."""

    code = ErrorCode.UNKNOWN_PRIORITY_QUEUE_CODE
    description = "unknown queue implementation code"


class InvalidQueuePolicy(ServerError):
    """A delivery policy (retries, dead letters, idempotency window) is invalid, or its dead-letter queue is missing."""

    code = ErrorCode.INVALID_QUEUE_POLICY
    description = "invalid delivery policy"


class InvalidRecord(ServerError):
    """A record's key, delay or batch size is invalid."""

    code = ErrorCode.INVALID_RECORD
    description = "invalid record, key, delay or batch"


ERROR_CLASSES: dict[int, type[ServerError]] = {
    cls.code: cls
    for cls in (
        UnknownServerError, InvalidQueueName, QueueDoesNotExist, QueueAlreadyExists, InvalidPriorityRange,
        InvalidMaxQueueSize, InvalidMaxPayloadSize, PriorityRangeNotSpecified, UnknownPriorityQueueCode,
        InvalidQueuePolicy, InvalidRecord,
    )
}
"""Error code → exception class. A code missing here raises a plain :class:`ServerError` carrying the code."""


def server_error(code: int, message: str = "") -> ServerError:
    """The exception for an error code sent by the server."""
    cls = ERROR_CLASSES.get(code)
    if cls is None:
        return ServerError(message, code=code)
    return cls(message)


# --- policy violations -------------------------------------------------------------------------------------------

class PolicyViolation(TaskFluxError):
    """A queue policy refused the enqueued record; nothing was inserted. ``limits`` are the queue's configured
    limits as the server reported them."""

    policy: PolicyCode = PolicyCode.GENERIC

    def __init__(self, limits: tuple[int, ...] = (), message: str = "") -> None:
        self.limits = limits
        self.server_message = message
        super().__init__(self._describe())

    def _describe(self) -> str:
        return f"policy violation: {self.server_message}" if self.server_message else "policy violation"


class GenericPolicyViolation(PolicyViolation):
    """A queue policy refused the record (generic policy, with a message)."""

    policy = PolicyCode.GENERIC


class MaxQueueSizeExceeded(PolicyViolation):
    """The queue is full."""

    policy = PolicyCode.MAX_QUEUE_SIZE

    @property
    def max_queue_size(self) -> int:
        """The queue's size limit."""
        return self.limits[0]

    def _describe(self) -> str:
        return f"the queue is full (max queue size {self.limits[0]})"


class PriorityOutOfRange(PolicyViolation):
    """The priority is outside the queue's priority range."""

    policy = PolicyCode.PRIORITY_RANGE

    @property
    def priority_range(self) -> tuple[int, int]:
        """The queue's inclusive (min, max) priority range."""
        return self.limits[0], self.limits[1]

    def _describe(self) -> str:
        return f"priority outside the queue's range [{self.limits[0]}, {self.limits[1]}]"


class MaxPayloadSizeExceeded(PolicyViolation):
    """The payload is larger than the queue allows."""

    policy = PolicyCode.MAX_PAYLOAD_SIZE

    @property
    def max_payload_size(self) -> int:
        """The queue's payload size limit in bytes."""
        return self.limits[0]

    def _describe(self) -> str:
        return f"payload too large (max payload size {self.limits[0]} bytes)"


POLICY_CLASSES: dict[int, type[PolicyViolation]] = {
    cls.policy: cls
    for cls in (GenericPolicyViolation, MaxQueueSizeExceeded, PriorityOutOfRange, MaxPayloadSizeExceeded)
}
"""Policy code → exception class."""


# --- transport and outcome ---------------------------------------------------------------------------------------

class NotLeaderError(TaskFluxError):
    """The node is not the leader. The client follows this itself; it only surfaces from ``ack()``, whose record
    stays with the node that handed it out (the record is then delivered again)."""

    def __init__(self, leader_id: int | None) -> None:
        self.leader_id = leader_id
        super().__init__(f"the node is not the leader (leader: {'unknown' if leader_id is None else leader_id})")


class TaskFluxConnectionError(TaskFluxError):
    """No leader could be reached, or the connection failed, before the deadline. The operation did not take
    effect."""


class TaskFluxTimeoutError(TaskFluxConnectionError, TimeoutError):
    """The operation's deadline passed before it completed. The operation did not take effect."""


class OutcomeUnknown(TaskFluxError):
    """The request may or may not have taken effect: it was fully sent (for an enqueue: its Ack was sent) and then
    the answer was lost (connection closed, timeout, garbage). The client never retries such a request blindly:
    check the state (count, list) or accept a possible duplicate before retrying. An enqueue that carried
    idempotency keys has them in ``keys``: enqueue again with them to settle it without a duplicate."""

    def __init__(self, message: str = "", keys: list[bytes] | None = None) -> None:
        super().__init__(message)
        self.keys = keys or []


class TaskFluxProtocolError(TaskFluxError):
    """The server sent bytes or a packet that the protocol does not allow at this point."""


class HandshakeRefused(TaskFluxProtocolError):
    """The server refused the authorization or (``version``) the protocol version."""

    def __init__(self, message: str, version: bool = False) -> None:
        super().__init__(message)
        self.version = version
