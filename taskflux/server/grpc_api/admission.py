"""Which gRPC calls may hold one of the server's worker places, as a server interceptor.

An HTTP/2 connection costs the server no worker, only a little memory: gRPC itself closes a connection
that has not completed its HTTP/2 handshake within ``HANDSHAKE_TIMEOUT_SECONDS`` and one without calls for
``CONNECTION_IDLE_SECONDS`` (clients reconnect by themselves). A call in progress holds a worker greenlet,
a stream for its whole life: the calls are places in a ``ConnectionTable``. A stream waiting for its client
must send its first message within ``FIRST_MESSAGE_SECONDS`` and each next one within
``IDLE_TIMEOUT_SECONDS`` (past that it is cancelled: a record it holds goes back to its queue); at the limit
a new call takes the place of the stream that has waited longest for its client (those that never sent a
message first), and is refused with RESOURCE_EXHAUSTED only when every call is being served (a unary call,
a stream waiting on the node for a record or a commit).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from taskflux.server.connections import Connection, ConnectionTable

logger = logging.getLogger("taskflux.grpc")

HANDSHAKE_TIMEOUT_SECONDS = 10.0
CONNECTION_IDLE_SECONDS = 300.0
FIRST_MESSAGE_SECONDS = 10.0
IDLE_TIMEOUT_SECONDS = 60.0
BUSY = "every call in progress is being served (the server's limit); retry shortly"


class CallAdmission(grpc.ServerInterceptor):  # type: ignore[misc]
    """Admits at most ``limit`` calls of the service, evicting streams idle on their client to make room."""

    def __init__(self, limit: int) -> None:
        self.table = ConnectionTable(limit, "gRPC", logger)

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._stream(handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _admit(self, context: grpc.ServicerContext) -> Connection:
        place = self.table.admit(context.peer(), context.cancel)
        if place is None:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, BUSY)
            raise AssertionError("context.abort returned")  # it always raises
        return place

    def _unary(self, behaviour: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            place = self._admit(context)  # being served from the start: the request is in
            try:
                return behaviour(request, context)
            finally:
                self.table.remove(place)

        return call

    def _stream(self, behaviour: Callable[[Any, Any], Iterator[Any]]) -> Callable[[Any, Any], Iterator[Any]]:
        def call(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            place = self._admit(context)
            try:
                yield from behaviour(self._watched(requests, place), context)
            finally:
                self.table.remove(place)

        return call

    @staticmethod
    def _watched(requests: Iterator[Any], place: Connection) -> Iterator[Any]:
        """The client's messages; while the handler waits for the next one, the call waits for its client."""
        place.wait_for_client(FIRST_MESSAGE_SECONDS, "first message")
        for request in requests:
            place.requests += 1
            place.serving()
            yield request
            place.wait_for_client(IDLE_TIMEOUT_SECONDS, "next message")
        place.serving()
