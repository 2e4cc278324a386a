"""Request metrics for the gRPC service, as a server interceptor (the servicer stays unaware of them).

A unary call is one request. On the Enqueue and Dequeue streams every answer is one request, timed from
the client message it answers: a round's data step and ack step are counted separately, by the step
(``Enqueue.data``, ``Enqueue.ack``, ``Dequeue.request``, ``Dequeue.ack``). The outcome is read from the
answer's ``result`` oneof; a call ended with an error status counts once with ``error`` (``timeout`` for
UNKNOWN set by the servicer: the outcome of the write is unknown; ``stopped`` for UNAVAILABLE).

The record counters (``taskflux_records_*_total{interface="grpc"}``) are counted by the service layer, like
every interface's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from taskflux.server import metrics as outcomes
from taskflux.server.metrics import InterfaceMetrics, NodeMetrics

ONEOF_OUTCOMES = {"data": outcomes.OK, "success": outcomes.OK, "error": outcomes.ERROR,
                  "not_leader": outcomes.NOT_LEADER, "policy_violation": outcomes.POLICY_VIOLATION}


def answer_outcome(answer: Any) -> str:
    kind = answer.WhichOneof("result")
    if kind == "data" and "policy_violation" in answer.data.DESCRIPTOR.fields_by_name \
            and answer.data.HasField("policy_violation"):  # only EnqueueResponse's data has one
        return outcomes.POLICY_VIOLATION
    return ONEOF_OUTCOMES.get(kind, outcomes.OK)


class _Step:
    """The stream step being answered: when its client message arrived, and what it was."""

    __slots__ = ("command", "started")

    def __init__(self, started: float, command: str) -> None:
        self.started = started
        self.command = command


class MetricsInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Counts and times every call (unary) or stream step (streaming) of ``taskflux.TaskFluxService``."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics: InterfaceMetrics = metrics.interface("grpc")
        self.active = 0  # calls in progress, streams held open included: gRPC's "connected clients"
        metrics.watch_clients("grpc", lambda: self.active)

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method.rsplit("/", 1)[-1]
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._stream(method, handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _unary(self, method: str, behaviour: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        observe = self.metrics.observe_request

        def call(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            self.active += 1
            try:
                answer = behaviour(request, context)
            except BaseException:
                observe(method, status_outcome(context), time.perf_counter() - started)
                raise
            finally:
                self.active -= 1
            observe(method, answer_outcome(answer), time.perf_counter() - started)
            return answer

        return call

    def _stream(self, method: str, behaviour: Callable[[Any, Any], Iterator[Any]]) -> Callable[[Any, Any], Any]:
        observe = self.metrics.observe_request

        def call(requests: Iterator[Any], context: Any) -> Iterator[Any]:
            last = _Step(time.perf_counter(), method)

            def timed_requests() -> Iterator[Any]:
                for request in requests:
                    last.started = time.perf_counter()
                    last.command = f"{method}.{request.WhichOneof(request.DESCRIPTOR.oneofs[0].name)}"
                    yield request

            self.active += 1
            try:
                for answer in behaviour(timed_requests(), context):
                    outcome = answer_outcome(answer)
                    observe(last.command, outcome, time.perf_counter() - last.started)
                    yield answer
            except GeneratorExit:
                raise
            except BaseException:
                observe(last.command, status_outcome(context), time.perf_counter() - last.started)
                raise
            finally:
                self.active -= 1

        return call


STATUS_OUTCOMES = {grpc.StatusCode.UNKNOWN: outcomes.TIMEOUT, grpc.StatusCode.UNAVAILABLE: outcomes.STOPPED}


def status_outcome(context: Any) -> str:
    """The outcome of a call that ended with an exception (``context.abort`` sets the code, then raises;
    an exception the servicer did not expect leaves no code: an internal error)."""
    code = context.code()
    return outcomes.INTERNAL_ERROR if code is None else STATUS_OUTCOMES.get(code, outcomes.ERROR)
