"""A bare client-protocol connection for byte-level integration tests: raw bytes in and out."""

from __future__ import annotations

import socket

from taskflux.wire import client_protocol as wire

HANDSHAKE = bytes.fromhex("414e") + bytes.fromhex("42 00000001 00000000 00000000")


class RawConnection:
    """A socket to a node's client port that sends bytes and reads whole server packets."""

    def __init__(self, address: str, handshake: bool = True, timeout: float = 10.0) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.decoder = wire.PacketDecoder(wire.Direction.SERVER_TO_CLIENT)
        self._fed = bytearray()  # bytes fed to the decoder, of which it has not returned the last pending_bytes
        self.raw_seen = bytearray()
        if handshake:
            self.send(HANDSHAKE)
            assert self.read_bytes(4) == bytes.fromhex("6101 6201")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_packet(self, packet: wire.Packet) -> None:
        self.send(wire.encode(packet))

    def read_bytes(self, count: int) -> bytes:
        """Exactly ``count`` raw bytes (for byte-for-byte checks), starting with any that ``read`` received past
        the packet it returned (two answers may arrive in one segment)."""
        pending = self.decoder.pending_bytes
        buffered = bytes(self._fed[len(self._fed) - pending:]) if pending else b""
        data, rest = buffered[:count], buffered[count:]
        if pending:
            self.decoder = wire.PacketDecoder(wire.Direction.SERVER_TO_CLIENT)
            self._fed = bytearray()
            self._feed(rest)
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError(f"closed after {data.hex()}")
            data += chunk
        return data

    def read(self) -> wire.Packet:
        while True:
            packet = self.decoder.next_packet()
            if packet is not None:
                return packet
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the server")
            self._feed(chunk)

    def _feed(self, data: bytes) -> None:
        if not self.decoder.pending_bytes:
            self._fed.clear()  # keep only what the decoder has not returned yet
        self._fed += data
        self.decoder.feed(data)

    def request(self, packet: wire.Packet) -> wire.Packet:
        self.send_packet(packet)
        return self.read()

    def command(self, command: wire.Command) -> wire.Packet:
        return self.request(wire.CommandRequest(command))

    def enqueue(self, queue: str, priority: int, payload: bytes) -> wire.Packet:
        """The whole two-phase enqueue: request, Ack, final answer."""
        assert self.command(wire.EnqueueCommand(queue, priority, payload)) == wire.Ok()
        return self.request(wire.Ack())

    def dequeue(self, queue: str, timeout_ms: int = 0, ack: bool = True) -> wire.Packet:
        """Dequeue; when a record comes, Ack (or Nack) it and check the final Ok. Returns the response."""
        response = self.command(wire.DequeueCommand(queue, timeout_ms))
        if isinstance(response, wire.CommandResponse) and isinstance(response.response, wire.DequeueResponse) \
                and response.response.record is not None:
            assert self.request(wire.Ack() if ack else wire.Nack()) == wire.Ok()
        return response

    def is_closed_by_server(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()
