"""One blocking connection to a node's client port: the handshake, then packets sent and received against a
deadline. Uses only the socket module, so it works with plain threads and under gevent monkey-patching."""

from __future__ import annotations

import contextlib
import socket
import time

from taskflux.client.errors import HandshakeRefused, TaskFluxProtocolError
from taskflux.values import parse_endpoint
from taskflux.wire.client_protocol import (
    ORIGINAL_VERSION,
    AuthorizationRequest,
    AuthorizationResponse,
    BootstrapRequest,
    BootstrapResponse,
    Direction,
    Packet,
    PacketDecoder,
    encode,
)
from taskflux.wire.primitives import ProtocolError

_RECV_BYTES = 256 * 1024
_HANDSHAKE = encode(AuthorizationRequest()) + encode(BootstrapRequest())
_ORIGINAL_HANDSHAKE = encode(AuthorizationRequest()) + encode(BootstrapRequest(*ORIGINAL_VERSION))


class SendFailed(Exception):
    """The request was not fully handed to the network: the server cannot have executed it."""


class ReceiveFailed(Exception):
    """The connection failed or timed out while waiting for an answer; ``timed_out`` tells which."""

    def __init__(self, message: str, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class ConnectFailed(Exception):
    """Connecting or the handshake failed (nothing was sent but the handshake)."""


def remaining(deadline: float) -> float:
    """Seconds left until ``deadline`` (time.monotonic()), never negative."""
    return max(0.0, deadline - time.monotonic())


class Connection:
    """A handshaken connection to ``endpoint``. Any failure closes it; it is then never used again."""

    def __init__(self, endpoint: str, sock: socket.socket, max_payload_bytes: int) -> None:
        self.endpoint = endpoint
        self._sock: socket.socket | None = sock
        self._decoder = PacketDecoder(Direction.SERVER_TO_CLIENT, max_payload_bytes=max_payload_bytes)
        self.extended = True  # the server accepted protocol 1.1: the extension's commands may be sent

    @classmethod
    def open(cls, endpoint: str, deadline: float, max_payload_bytes: int, try_extension: bool = True) -> Connection:
        """Connect and perform the handshake (authorization "none", version 1.1.0; on a server that refuses 1.1,
        or without ``try_extension``, with 1.0.0: ``extended`` is then False)."""
        try:
            if try_extension:
                return cls._open(endpoint, deadline, max_payload_bytes, _HANDSHAKE)
        except HandshakeRefused as refused:
            if not refused.version:
                raise
        connection = cls._open(endpoint, deadline, max_payload_bytes, _ORIGINAL_HANDSHAKE)
        connection.extended = False
        return connection

    @classmethod
    def _open(cls, endpoint: str, deadline: float, max_payload_bytes: int, handshake: bytes) -> Connection:
        host, port = parse_endpoint(endpoint)
        timeout = remaining(deadline)
        if timeout <= 0:
            raise ConnectFailed(f"{endpoint}: no time left to connect")
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise ConnectFailed(f"{endpoint}: {_describe(exc)}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = cls(endpoint, sock, max_payload_bytes)
        try:
            conn.send(handshake, deadline)
            authorization = conn.receive(deadline)
            if not isinstance(authorization, AuthorizationResponse):
                raise TaskFluxProtocolError(f"{endpoint}: expected an authorization response, got {authorization}")
            if not authorization.success:
                raise HandshakeRefused(f"{endpoint} refused the authorization: {authorization.reason}")
            bootstrap = conn.receive(deadline)
            if not isinstance(bootstrap, BootstrapResponse):
                raise TaskFluxProtocolError(f"{endpoint}: expected a bootstrap response, got {bootstrap}")
            if not bootstrap.success:
                raise HandshakeRefused(f"{endpoint} refused the protocol version: {bootstrap.reason}", version=True)
        except (SendFailed, ReceiveFailed) as exc:
            conn.close()
            raise ConnectFailed(f"handshake with {exc}") from exc
        except TaskFluxProtocolError:
            conn.close()
            raise
        return conn

    @property
    def closed(self) -> bool:
        """True once the connection failed or was closed."""
        return self._sock is None

    def close(self) -> None:
        """Close the socket (idempotent)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def send(self, data: bytes, deadline: float) -> None:
        """Send all of ``data`` before ``deadline``, or close and raise :class:`SendFailed`."""
        sock = self._sock
        if sock is None:
            raise SendFailed(f"{self.endpoint}: connection closed")
        try:
            sock.settimeout(remaining(deadline) or 1e-6)
            sock.sendall(data)
        except OSError as exc:
            self.close()
            raise SendFailed(f"{self.endpoint}: {_describe(exc)}") from exc

    def receive(self, deadline: float) -> Packet:
        """The next packet from the server before ``deadline``; on failure close and raise :class:`ReceiveFailed`
        (or :class:`TaskFluxProtocolError` for bytes that are not a valid server packet)."""
        decoder = self._decoder
        while True:
            try:
                packet = decoder.next_packet()
            except ProtocolError as exc:
                self.close()
                raise TaskFluxProtocolError(f"{self.endpoint} sent an invalid packet: {exc}") from exc
            if packet is not None:
                return packet
            sock = self._sock
            if sock is None:
                raise ReceiveFailed(f"{self.endpoint}: connection closed")
            timeout = remaining(deadline)
            if timeout <= 0:
                self.close()
                raise ReceiveFailed(f"{self.endpoint}: timed out waiting for an answer", timed_out=True)
            try:
                sock.settimeout(timeout)
                data = sock.recv(_RECV_BYTES)
            except TimeoutError as exc:
                self.close()
                raise ReceiveFailed(f"{self.endpoint}: timed out waiting for an answer", timed_out=True) from exc
            except OSError as exc:
                self.close()
                raise ReceiveFailed(f"{self.endpoint}: {_describe(exc)}") from exc
            if not data:
                self.close()
                raise ReceiveFailed(f"{self.endpoint} closed the connection")
            decoder.feed(data)

    def is_alive(self) -> bool:
        """False when the server has already closed this idle connection (it never sends unprompted, so anything
        readable means EOF, a reset or garbage). Lets a caller avoid sending a non-idempotent request into a
        connection that is already dead, whose loss would otherwise leave the outcome unknown."""
        sock = self._sock
        if sock is None:
            return False
        if self._decoder.pending_bytes:
            self.close()
            return False
        try:
            sock.settimeout(0.0)
            data = sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, TimeoutError):
            return True
        except OSError:
            self.close()
            return False
        self.close()  # EOF (b"") or unprompted bytes: either way unusable
        del data
        return False


def _describe(exc: OSError) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return exc.strerror or str(exc) or type(exc).__name__
