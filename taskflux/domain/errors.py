"""Wire-visible codes shared by every interface: error codes, policy codes, implementation codes."""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Error codes of the client protocol (docs/client-protocol.md §7), also used by REST and gRPC."""

    UNKNOWN = 0
    INVALID_QUEUE_NAME = 1
    QUEUE_DOES_NOT_EXIST = 2
    QUEUE_ALREADY_EXISTS = 3
    INVALID_PRIORITY_RANGE = 4
    INVALID_MAX_QUEUE_SIZE = 5
    INVALID_MAX_PAYLOAD_SIZE = 6
    PRIORITY_RANGE_NOT_SPECIFIED = 7
    UNKNOWN_PRIORITY_QUEUE_CODE = 8
    # TaskFlux's additions, only ever sent for requests an original client cannot make:
    INVALID_QUEUE_POLICY = 9  # a delivery policy (retries, dead letters, idempotency window) is invalid
    INVALID_RECORD = 10  # a record's key, delay or batch is invalid


class PolicyCode(IntEnum):
    """Policy codes of a PolicyViolation (docs/client-protocol.md §9)."""

    GENERIC = 0
    MAX_QUEUE_SIZE = 1
    PRIORITY_RANGE = 2
    MAX_PAYLOAD_SIZE = 3


class Implementation(IntEnum):
    """Priority-queue structure of a queue (its wire codes: docs/client-protocol.md §5)."""

    H4 = 1
    QA = 2


INT32_MAX = 2**31 - 1
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
