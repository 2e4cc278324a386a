"""The TaskFlux Python client: a blocking library over the binary protocol, and a console (python -m taskflux.client).

    from taskflux.client import TaskFluxClient

    with TaskFluxClient(["127.0.0.1:2602"]) as client:
        client.enqueue("jobs", 5, b"hello")
        with client.consume("jobs", wait=1.0) as record:
            if record is not None:
                print(record.priority, record.payload)
"""

from taskflux.client.client import (
    ClusterMetadata,
    DequeuedBatch,
    DequeuedRecord,
    NewRecord,
    PeekedRecord,
    QueueSummary,
    TaskFluxClient,
)
from taskflux.client.errors import (
    ERROR_CLASSES,
    POLICY_CLASSES,
    GenericPolicyViolation,
    HandshakeRefused,
    InvalidMaxPayloadSize,
    InvalidMaxQueueSize,
    InvalidPriorityRange,
    InvalidQueueName,
    InvalidQueuePolicy,
    InvalidRecord,
    MaxPayloadSizeExceeded,
    MaxQueueSizeExceeded,
    NotLeaderError,
    OutcomeUnknown,
    PolicyViolation,
    PriorityOutOfRange,
    PriorityRangeNotSpecified,
    QueueAlreadyExists,
    QueueDoesNotExist,
    ServerError,
    TaskFluxConnectionError,
    TaskFluxError,
    TaskFluxProtocolError,
    TaskFluxTimeoutError,
    UnknownPriorityQueueCode,
    UnknownServerError,
)

__all__ = [
    "ERROR_CLASSES",
    "POLICY_CLASSES",
    "ClusterMetadata",
    "DequeuedBatch",
    "DequeuedRecord",
    "GenericPolicyViolation",
    "HandshakeRefused",
    "InvalidMaxPayloadSize",
    "InvalidMaxQueueSize",
    "InvalidPriorityRange",
    "InvalidQueueName",
    "InvalidQueuePolicy",
    "InvalidRecord",
    "MaxPayloadSizeExceeded",
    "MaxQueueSizeExceeded",
    "NewRecord",
    "NotLeaderError",
    "OutcomeUnknown",
    "PeekedRecord",
    "PolicyViolation",
    "PriorityOutOfRange",
    "PriorityRangeNotSpecified",
    "QueueAlreadyExists",
    "QueueDoesNotExist",
    "QueueSummary",
    "ServerError",
    "TaskFluxClient",
    "TaskFluxConnectionError",
    "TaskFluxError",
    "TaskFluxProtocolError",
    "TaskFluxTimeoutError",
    "UnknownPriorityQueueCode",
    "UnknownServerError",
]
