"""The gRPC service ``taskflux.TaskFluxService`` over a QueueService, and the server that hosts it.

The same guarantees as the binary protocol: an enqueue is answered once committed; a dequeued record is
reserved on the leader until its ack commits, and put back on a nack, when the stream completes, is
cancelled or fails, or when the client goes away while it waits. The original's defects are fixed as
``docs/grpc.md`` describes.

Runs under gevent: ``monkey.patch_all()`` and ``grpc.experimental.gevent.init_gevent()`` must come first.
The executor's workers are then greenlets; every open stream holds one for its whole life.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import gevent
import grpc

from taskflux.config import format_endpoint
from taskflux.domain.commands import MAX_BATCH_RECORDS, POLICY_DELAY
from taskflux.domain.errors import ErrorCode
from taskflux.domain.names import is_valid_queue_name
from taskflux.domain.policies import MAX_DELAY_MS
from taskflux.domain.results import Failure, PolicyViolation, RecordRemoved, RecordsAdded
from taskflux.server.grpc_api import admission, messages
from taskflux.server.grpc_api import taskflux_pb2 as pb
from taskflux.server.grpc_api import taskflux_pb2_grpc as pb_grpc
from taskflux.server.grpc_api.observe import MetricsInterceptor
from taskflux.server.leases import MAX_LEASE_SECONDS, LeaseNotFound, LeaseTable
from taskflux.server.metrics import NodeMetrics
from taskflux.server.node import Node, NodeStopped, NotLeader, OutcomeUnknown
from taskflux.server.service import (
    INVALID_NAME,
    STOPPING_MESSAGE,
    Delivery,
    Ending,
    QueueService,
    RecordIn,
    ending_of,
    outcome_unknown_message,
)

logger = logging.getLogger("taskflux.grpc")

DEFAULT_MAX_WORKERS = 512
ADMISSION_HEADROOM = 32
MIN_NATIVE_THREADS = 64  # every blocking gRPC poll holds one thread of the hub's pool
MESSAGE_OVERHEAD_BYTES = 64 * 1024  # a request's fields besides the payload (queue name, framing)
WAIT_WITHOUT_LIMIT = -1
MAX_WAIT_MS = 300_000  # LeaseDequeue's longest wait, as REST's
DEFAULT_LEASE_MS = 30_000  # LeaseDequeue's lease when the request gives none

Response = TypeVar("Response")


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> NoReturn:
    logger.info("gRPC call from %s ended with %s: %s", context.peer(), code.name, details)
    context.abort(code, details)
    raise AssertionError("context.abort returned")  # it always raises


def _abort_ended(context: grpc.ServicerContext, error: NodeStopped | OutcomeUnknown) -> NoReturn:
    """End a call the service ended without a result: UNKNOWN when the write may or may not take effect
    (a status gRPC clients do not retry by themselves), UNAVAILABLE (safe to retry) when the node stopped
    before doing anything. Not the leader is a ``not_leader`` answer, not a status."""
    if ending_of(error) is Ending.OUTCOME_UNKNOWN:
        assert isinstance(error, OutcomeUnknown)
        _abort(context, grpc.StatusCode.UNKNOWN, outcome_unknown_message(error))
    _abort(context, grpc.StatusCode.UNAVAILABLE, STOPPING_MESSAGE)


def _protocol_violation(context: grpc.ServicerContext, expected: str, got: str | None) -> NoReturn:
    _abort(context, grpc.StatusCode.FAILED_PRECONDITION, f"expected {expected}, got {got or 'an empty message'}")


class _DequeueCall:
    """One Dequeue stream's record in hand and wait in progress. ``end`` runs when gRPC terminates the
    call (completed, cancelled, deadline, abort) and may run while the handler is blocked or abandoned:
    it ends the delivery the stream still holds (a failed one: its consumer is gone), so no record is ever
    lost with a stream."""

    def __init__(self, service: QueueService) -> None:
        self.service = service
        self.held: Delivery | None = None
        self.waiter: gevent.Greenlet | None = None
        self.ended = False

    def end(self) -> None:
        self.ended = True
        if self.waiter is not None:
            self.waiter.kill(block=False)
        self.abandon()

    def abandon(self) -> None:
        """The held record was shown and the stream ended without an ack: a failed delivery (at most once)."""
        held, self.held = self.held, None
        if held is not None:
            held.abandon()

    def take(self) -> Delivery:
        """The held delivery, now the caller's to end."""
        held, self.held = self.held, None
        assert held is not None, "no record is held"
        return held

    def reserve(self, name: str, wait: float | None) -> Delivery | Failure | None:
        """Reserve a record of ``name`` (held by this call), waiting up to ``wait`` seconds (None: without
        limit). The wait runs in its own greenlet so that the end of the call interrupts it."""
        outcome = self.service.reserve(name, 0)
        if outcome is None and wait != 0 and not self.ended:
            outcome = self._wait(name, wait)
        if isinstance(outcome, Delivery):
            if self.ended:
                outcome.put_back()  # never shown
                return None
            self.held = outcome
        return outcome

    def _wait(self, name: str, wait: float | None) -> Delivery | Failure | None:
        waiter = self.waiter = gevent.spawn(self.service.reserve, name, wait)
        try:
            outcome = waiter.get()  # re-raises NotLeader, NodeStopped, OutcomeUnknown
        except BaseException:
            waiter.kill()
            if isinstance(waiter.value, Delivery):
                waiter.value.put_back()
            raise
        finally:
            self.waiter = None
        return outcome if isinstance(outcome, Delivery | Failure) else None  # GreenletExit: the call ended


class TaskFluxServicer(pb_grpc.TaskFluxServiceServicer):
    """The RPCs of ``taskflux.proto`` over a QueueService (the leader serves; other nodes answer not_leader)."""

    def __init__(self, service: QueueService, max_payload_size: int, leases: LeaseTable) -> None:
        self.service = service
        self.max_payload_size = max_payload_size
        self.leases = leases

    # --- unary RPCs -------------------------------------------------------------------------------

    def CreateQueue(self, request: pb.CreateQueueRequest, context: grpc.ServicerContext) -> pb.CreateQueueResponse:
        def create() -> pb.CreateQueueResponse:
            result = self.service.create_queue(messages.create_command(request))
            if isinstance(result, Failure):
                if result.code is ErrorCode.UNKNOWN_PRIORITY_QUEUE_CODE:  # name the code the client sent
                    result = Failure(result.code, f"unknown priority queue code {request.code}; "
                                                  f"accepted: Heap4 (0), QueueArray (1)")
                return pb.CreateQueueResponse(error=messages.error(result, request.queue))
            return pb.CreateQueueResponse(data=pb.CreateQueueResponse.CreateQueueResponseData())

        return self._unary(context, pb.CreateQueueResponse, create)

    def DeleteQueue(self, request: pb.DeleteQueueRequest, context: grpc.ServicerContext) -> pb.DeleteQueueResponse:
        def delete() -> pb.DeleteQueueResponse:
            result = self.service.delete_queue(request.queue)
            if isinstance(result, Failure):
                return pb.DeleteQueueResponse(error=messages.error(result, request.queue))
            return pb.DeleteQueueResponse(data=pb.DeleteQueueResponse.DeleteQueueResponseData())

        return self._unary(context, pb.DeleteQueueResponse, delete)

    def GetCount(self, request: pb.GetCountRequest, context: grpc.ServicerContext) -> pb.GetCountResponse:
        def count() -> pb.GetCountResponse:
            queue = self.service.get_queue(request.queue)
            if isinstance(queue, Failure):
                return pb.GetCountResponse(error=messages.error(queue, request.queue))
            return pb.GetCountResponse(data=pb.GetCountResponse.GetCountResponseData(count=queue.count))

        return self._unary(context, pb.GetCountResponse, count)

    def ListQueues(self, request: pb.ListQueuesRequest, context: grpc.ServicerContext) -> pb.ListQueuesResponse:
        def list_queues() -> pb.ListQueuesResponse:
            queues = [messages.queue_info(queue) for queue in self.service.list_queues()]
            return pb.ListQueuesResponse(data=pb.ListQueuesResponse.ListQueuesResponseData(queues=queues))

        return self._unary(context, pb.ListQueuesResponse, list_queues)

    def _unary(
        self, context: grpc.ServicerContext, response_type: Callable[..., Response], action: Callable[[], Response]
    ) -> Response:
        try:
            return action()
        except NotLeader as error:
            return response_type(not_leader=messages.not_leader(error.leader_id))
        except (OutcomeUnknown, NodeStopped) as error:
            _abort_ended(context, error)

    # --- the work-queue RPCs ------------------------------------------------------------------------

    def EnqueueMany(self, request: pb.EnqueueManyRequest, context: grpc.ServicerContext) -> pb.EnqueueManyResponse:
        def enqueue() -> pb.EnqueueManyResponse:
            size = sum(len(record.payload) for record in request.records)
            if size > self.max_payload_size:
                _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                       f"the batch's payloads ({size} bytes) exceed max_payload_size ({self.max_payload_size} "
                       "bytes); nothing was inserted")
            records = [RecordIn(record.priority, record.payload, record.key or None, record.delay_ms,
                                record.not_before_ms) for record in request.records]
            result = self.service.add_records(request.queue, records) if records else Failure(
                ErrorCode.INVALID_RECORD, "a batch has 1-1000 records, not 0")
            if isinstance(result, RecordsAdded):
                return pb.EnqueueManyResponse(data=pb.EnqueueManyResponse.EnqueueManyResponseData(records=[
                    pb.AddedRecord(id=record_id, duplicate=not added)
                    for record_id, added in zip(result.record_ids, result.added, strict=True)]))
            if isinstance(result, PolicyViolation):
                first = request.records[0]
                return pb.EnqueueManyResponse(policy_violation=messages.policy_violation(
                    result, request.queue, first.priority, len(first.payload)))
            assert isinstance(result, Failure), f"unexpected result of an enqueue: {result!r}"
            return pb.EnqueueManyResponse(error=messages.error(result, request.queue))

        return self._unary(context, pb.EnqueueManyResponse, enqueue)

    def LeaseDequeue(self, request: pb.LeaseDequeueRequest, context: grpc.ServicerContext) -> pb.LeaseDequeueResponse:
        def dequeue() -> pb.LeaseDequeueResponse:
            limit, lease_ms = request.max or 1, request.lease_ms or DEFAULT_LEASE_MS
            if not 1 <= limit <= MAX_BATCH_RECORDS or not 0 <= request.wait_ms <= MAX_WAIT_MS or \
                    not 0 < lease_ms <= MAX_LEASE_SECONDS * 1000:
                return pb.LeaseDequeueResponse(error=messages.error(Failure(
                    ErrorCode.INVALID_RECORD, f"max is 1-{MAX_BATCH_RECORDS}, wait_ms 0-{MAX_WAIT_MS}, lease_ms "
                    f"1-{int(MAX_LEASE_SECONDS * 1000)}"), request.queue))
            taken = self.service.reserve_many(request.queue, limit, request.wait_ms / 1000)
            if isinstance(taken, Failure):
                return pb.LeaseDequeueResponse(error=messages.error(taken, request.queue))
            if not context.is_active():  # the client gave up while waiting: nobody would see the records
                for delivery in taken:
                    delivery.put_back()
                return pb.LeaseDequeueResponse(data=pb.LeaseDequeueResponse.LeaseDequeueResponseData())
            leased = [messages.record(delivery.record, self.leases.grant(delivery, lease_ms / 1000).token)
                      for delivery in taken]
            return pb.LeaseDequeueResponse(data=pb.LeaseDequeueResponse.LeaseDequeueResponseData(records=leased))

        return self._unary(context, pb.LeaseDequeueResponse, dequeue)

    def AckLease(self, request: pb.LeaseRequest, context: grpc.ServicerContext) -> pb.LeaseResponse:
        def ack() -> pb.LeaseResponse:
            result = self.leases.ack(request.lease)
            if isinstance(result, Failure):
                return pb.LeaseResponse(error=messages.error(result, ""))
            return pb.LeaseResponse(data=pb.LeaseResponse.LeaseResponseData())

        return self._lease_call(context, ack)

    def NackLease(self, request: pb.NackLeaseRequest, context: grpc.ServicerContext) -> pb.LeaseResponse:
        def nack() -> pb.LeaseResponse:
            delay = request.delay_ms if request.HasField("delay_ms") else POLICY_DELAY
            if not (delay == POLICY_DELAY or 0 <= delay <= MAX_DELAY_MS):
                return pb.LeaseResponse(error=messages.error(Failure(
                    ErrorCode.INVALID_RECORD, f"delay_ms is 0-{MAX_DELAY_MS}, not {delay}"), ""))
            outcome = self.leases.nack(request.lease, delay)
            return pb.LeaseResponse(data=pb.LeaseResponse.LeaseResponseData(outcome=outcome))

        return self._lease_call(context, nack)

    def ReleaseLease(self, request: pb.LeaseRequest, context: grpc.ServicerContext) -> pb.LeaseResponse:
        def release() -> pb.LeaseResponse:
            self.leases.release(request.lease)
            return pb.LeaseResponse(data=pb.LeaseResponse.LeaseResponseData())

        return self._lease_call(context, release)

    def ExtendLease(self, request: pb.ExtendLeaseRequest, context: grpc.ServicerContext) -> pb.LeaseResponse:
        def extend() -> pb.LeaseResponse:
            if not 0 < request.lease_ms <= MAX_LEASE_SECONDS * 1000:
                return pb.LeaseResponse(error=messages.error(Failure(
                    ErrorCode.INVALID_RECORD, f"lease_ms is 1-{int(MAX_LEASE_SECONDS * 1000)}"), ""))
            lease = self.leases.extend(request.lease, request.lease_ms / 1000)
            return pb.LeaseResponse(data=pb.LeaseResponse.LeaseResponseData(
                lease_ms_left=round(lease.seconds_left * 1000)))

        return self._lease_call(context, extend)

    def _lease_call(self, context: grpc.ServicerContext, action: Callable[[], pb.LeaseResponse]) -> pb.LeaseResponse:
        """A lease RPC: an unknown (acked, nacked, released or expired) lease is NOT_FOUND."""
        try:
            return self._unary(context, pb.LeaseResponse, action)
        except LeaseNotFound:
            _abort(context, grpc.StatusCode.NOT_FOUND,
                   "no such lease: unknown, already acked, nacked or released, or expired (its record went back)")

    def Peek(self, request: pb.PeekRequest, context: grpc.ServicerContext) -> pb.PeekResponse:
        def peek() -> pb.PeekResponse:
            records = self.service.peek(request.queue, request.limit or 10)
            if isinstance(records, Failure):
                return pb.PeekResponse(error=messages.error(records, request.queue))
            return pb.PeekResponse(data=pb.PeekResponse.PeekResponseData(
                records=[messages.record(record) for record in records]))

        return self._unary(context, pb.PeekResponse, peek)

    # --- Enqueue: rounds of data -> data{} "received", then ack -> the outcome ----------------------

    def Enqueue(
        self, requests: Iterator[pb.EnqueueRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.EnqueueResponse]:
        for request in requests:
            kind = request.WhichOneof("result")
            if kind != "data":
                _protocol_violation(context, "data (queue and record) to start an enqueue", kind)
            data = request.data
            refusal = self._receive(data, context)
            yield refusal or RECEIVED
            if refusal is not None:
                continue
            decision = next(requests, None)
            if decision is None:
                return  # the client completed the stream instead of acking: nothing was inserted
            kind = decision.WhichOneof("result")
            if kind != "ack":
                _protocol_violation(context, "ack for the record just sent", kind)
            yield self._insert(data, context) if decision.ack.ack else RECEIVED

    def _receive(self, data: pb.EnqueueRequest.EnqueueRequestData, context: grpc.ServicerContext) -> (
        pb.EnqueueResponse | None
    ):
        """The refusal of a record on arrival (invalid name, not the leader), or None: send the ack."""
        if not data.HasField("record"):
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "enqueue data without a record")
        size = len(data.record.payload)
        if size > self.max_payload_size:
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                   f"payload of {size} bytes is larger than this server's max_payload_size of "
                   f"{self.max_payload_size} bytes; nothing was inserted")
        if not is_valid_queue_name(data.queue):
            return pb.EnqueueResponse(error=messages.error(INVALID_NAME, data.queue))
        try:
            self.service.node.ensure_serving()  # not_leader now is safe to retry: nothing was sent yet
        except NotLeader as error:
            return pb.EnqueueResponse(not_leader=messages.not_leader(error.leader_id))
        except NodeStopped as error:
            _abort_ended(context, error)
        return None

    def _insert(self, data: pb.EnqueueRequest.EnqueueRequestData, context: grpc.ServicerContext) -> pb.EnqueueResponse:
        record = data.record
        try:
            result = self.service.enqueue(data.queue, record.priority, record.payload)
        except NotLeader as error:
            return pb.EnqueueResponse(not_leader=messages.not_leader(error.leader_id))
        except (OutcomeUnknown, NodeStopped) as error:
            _abort_ended(context, error)
        if isinstance(result, Failure):
            return pb.EnqueueResponse(error=messages.error(result, data.queue))
        if isinstance(result, PolicyViolation):
            violation = messages.policy_violation(result, data.queue, record.priority, len(record.payload))
            return pb.EnqueueResponse(data=pb.EnqueueResponse.EnqueueResponseData(policy_violation=violation))
        return RECEIVED

    # --- Dequeue: rounds of request -> record (or none), then ack/nack -> success{} -------------------

    def Dequeue(
        self, requests: Iterator[pb.DequeueRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.DequeueResponse]:
        call = _DequeueCall(self.service)
        if not context.add_callback(call.end):
            return  # the call is already over
        try:
            yield from self._dequeue_rounds(requests, context, call)
        finally:
            call.abandon()

    def _dequeue_rounds(
        self, requests: Iterator[pb.DequeueRequest], context: grpc.ServicerContext, call: _DequeueCall
    ) -> Iterator[pb.DequeueResponse]:
        for request in requests:
            kind = request.WhichOneof("operation")
            if kind != "request":
                _protocol_violation(context, "request (queue and timeout) to start a dequeue", kind)
            name = request.request.queue
            try:
                outcome = call.reserve(name, self._wait_seconds(request.request.timeout, context))
            except NotLeader as error:
                yield pb.DequeueResponse(not_leader=messages.not_leader(error.leader_id))
                continue
            except (OutcomeUnknown, NodeStopped) as error:
                _abort_ended(context, error)
            if not isinstance(outcome, Delivery):
                yield NO_RECORD if outcome is None else pb.DequeueResponse(error=messages.error(outcome, name))
                continue
            yield pb.DequeueResponse(success=pb.DequeueResponse.DequeueResponseData(
                record=messages.queue_record(outcome.record)))
            decision = next(requests, None)
            if decision is None:
                return  # completed without an ack: the record goes back (Dequeue's finally)
            kind = decision.WhichOneof("operation")
            if kind != "ack":
                _protocol_violation(context, "ack for the record just received", kind)
            yield self._settle(call, decision.ack.ack, name, context)

    @staticmethod
    def _wait_seconds(timeout_ms: int, context: grpc.ServicerContext) -> float | None:
        if timeout_ms == WAIT_WITHOUT_LIMIT:
            return None
        if timeout_ms < WAIT_WITHOUT_LIMIT:
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                   f"timeout {timeout_ms} ms is invalid: -1 waits without limit, 0 does not wait, "
                   "a positive number waits that many milliseconds")
        return timeout_ms / 1000

    def _settle(self, call: _DequeueCall, ack: bool, name: str, context: grpc.ServicerContext) -> pb.DequeueResponse:
        """Ack (remove for good, once committed) or nack (a failed delivery, logged) the held record."""
        if not ack:
            call.take().fail()
            return NO_RECORD
        try:
            result = call.take().ack()  # puts the record back itself when it cannot commit
        except NotLeader as error:
            return pb.DequeueResponse(not_leader=messages.not_leader(error.leader_id))
        except (OutcomeUnknown, NodeStopped) as error:
            _abort_ended(context, error)
        if isinstance(result, Failure):
            return pb.DequeueResponse(error=messages.error(result, name))
        assert isinstance(result, RecordRemoved), f"unexpected result of a removal: {result!r}"
        return NO_RECORD


RECEIVED = pb.EnqueueResponse(data=pb.EnqueueResponse.EnqueueResponseData())
NO_RECORD = pb.DequeueResponse(success=pb.DequeueResponse.DequeueResponseData())


@dataclass(frozen=True)
class GrpcSettings:
    """What the gRPC server reads of the node's configuration (``grpc_listen_address``, ``max_payload_size``),
    and its worker limit."""

    listen_host: str
    listen_port: int
    max_payload_size: int = 16 * 1024 * 1024
    max_workers: int = DEFAULT_MAX_WORKERS


class GrpcServer:
    """Serves ``taskflux.TaskFluxService`` on ``settings.listen_host:listen_port`` (h2c, no TLS).

    ``max_workers`` bounds the calls in progress, streams included (each holds a worker greenlet for its
    life): at the limit a stream idle on its client makes room, otherwise the call is refused at once with
    RESOURCE_EXHAUSTED instead of queueing behind streams (``admission``). Messages larger than
    ``max_payload_size`` plus a small overhead are refused by gRPC itself with RESOURCE_EXHAUSTED before
    they are buffered whole.
    """

    def __init__(
        self, service: QueueService, node: Node, settings: GrpcSettings, metrics: NodeMetrics | None = None,
        leases: LeaseTable | None = None,
    ) -> None:
        self.node = node
        self._host, self._port = settings.listen_host, settings.listen_port
        self._bound_port = 0
        self.admission = admission.CallAdmission(settings.max_workers)
        interceptors: list[grpc.ServerInterceptor] = [self.admission]
        if metrics is not None:
            interceptors.insert(0, MetricsInterceptor(metrics))  # outermost: it also sees refused calls
        # Beyond the admitted calls, room for the ones that evict an idle stream while it winds down.
        workers = settings.max_workers + ADMISSION_HEADROOM
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
            options=[
                ("grpc.max_receive_message_length", settings.max_payload_size + MESSAGE_OVERHEAD_BYTES),
                ("grpc.so_reuseport", 0),  # a second node on the same port must fail, not share it
                ("grpc.server_handshake_timeout_ms", int(admission.HANDSHAKE_TIMEOUT_SECONDS * 1000)),
                ("grpc.max_connection_idle_ms", int(admission.CONNECTION_IDLE_SECONDS * 1000)),
            ],
            maximum_concurrent_rpcs=workers,
            interceptors=interceptors,
        )
        counted = service.for_interface(None if metrics is None else metrics.interface("grpc"))
        self._own_leases = leases is None  # a server on its own (tests) keeps its own lease table
        self.leases = LeaseTable() if leases is None else leases
        servicer = TaskFluxServicer(counted, settings.max_payload_size, self.leases)
        pb_grpc.add_TaskFluxServiceServicer_to_server(servicer, self._server)

    @property
    def address(self) -> str:
        """The bound ``host:port`` (the real port once started, also when configured as 0)."""
        return format_endpoint(self._host, self._bound_port or self._port)

    def start(self) -> None:
        """Bind and serve. Raises OSError when the address cannot be bound."""
        hub_threads = gevent.get_hub().threadpool
        hub_threads.maxsize = max(hub_threads.maxsize, MIN_NATIVE_THREADS)
        endpoint = format_endpoint(self._host, self._port)
        try:
            self._bound_port = self._server.add_insecure_port(endpoint)
        except RuntimeError as error:
            raise OSError(f"cannot listen for gRPC on {endpoint}: {error}") from None
        if self._bound_port == 0:
            raise OSError(f"cannot listen for gRPC on {endpoint}")
        self._server.start()
        self.admission.table.start()
        if self._own_leases:
            self.leases.start()

    def stop(self, grace: float) -> None:
        """Refuse new calls, give those in progress ``grace`` seconds, then cancel the rest (a stream's
        unacknowledged record goes back to its queue) and return once everything is shut down."""
        self._server.stop(grace).wait()
        self.admission.table.stop()
        if self._own_leases:
            self.leases.stop()
