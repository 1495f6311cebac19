"""A minimal asyncio RESP client built for load generation, not for general use.

Why not redis-py: the generator must measure a real Redis and quorumdb nodes through the exact
same code path, and it must stay cheap per request on a small machine. So this client:

* keeps a FIFO of reply callbacks per connection, which makes pipelining free (RESP replies
  come back in request order) and avoids a future plus a task switch per request on the hot path;
* parses with `hiredis.Reader` (C parser);
* returns server errors as `hiredis.ReplyError` instances instead of raising, so a load run
  counts them and goes on;
* buffers requests and writes each connection's with one system call at the end of the
  event-loop turn, every connection's back to back (as the server does with replies):
  a write to a sleeping server wakes it, and writes interleaved with reads woke each node
  once per request instead of once per burst.

Requests that can no longer be answered because the connection is gone receive a
`RespConnectionError` instance through the same callback.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import cast

import hiredis

ReplyError = hiredis.ReplyError
ReplyCallback = Callable[[object], None]

_NOT_ENOUGH_DATA = object()
_CRLF = b"\r\n"


class RespConnectionError(ConnectionError):
    """The connection closed or broke before a reply arrived."""


def _as_bytes(argument: bytes | str | int | float) -> bytes:
    if isinstance(argument, bytes):
        return argument
    if isinstance(argument, str):
        return argument.encode()
    if isinstance(argument, int | float):
        return str(argument).encode()
    raise TypeError(f"cannot encode {type(argument).__name__} as a RESP argument")


def encode_command(*arguments: bytes | str | int | float) -> bytes:
    """One command as a RESP array of bulk strings (the form servers must accept)."""
    parts = [b"*%d\r\n" % len(arguments)]
    for argument in arguments:
        encoded = _as_bytes(argument)
        parts.append(b"$%d\r\n" % len(encoded))
        parts.append(encoded)
        parts.append(_CRLF)
    return b"".join(parts)


class _RespProtocol(asyncio.Protocol):
    """Feeds bytes to hiredis and hands each reply to the oldest pending callback."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.pending: deque[ReplyCallback] = deque()
        self.closed = asyncio.get_running_loop().create_future()
        self.lost_error: RespConnectionError | None = None
        self._reader = hiredis.Reader(notEnoughData=_NOT_ENOUGH_DATA)
        self._loop = asyncio.get_running_loop()
        self._outgoing: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        pending = self.pending
        reader.feed(data)
        try:
            while True:
                reply = reader.gets()
                if reply is _NOT_ENOUGH_DATA:
                    break
                if not pending:
                    self.abort("reply received with no request pending")
                    return
                pending.popleft()(reply)
        except hiredis.ProtocolError as error:
            self.abort(f"protocol error: {error}")

    def write(self, payload: bytes) -> None:
        """Queue `payload`; it leaves at the end of this event-loop turn."""
        outgoing = self._outgoing
        outgoing.append(payload)
        if len(outgoing) == 1:
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        outgoing = self._outgoing
        if not outgoing:
            return  # the connection was lost meanwhile
        payload = outgoing[0] if len(outgoing) == 1 else b"".join(outgoing)
        outgoing.clear()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(payload)

    def abort(self, reason: str) -> None:
        self.lost_error = RespConnectionError(reason)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, error: Exception | None) -> None:
        if self.lost_error is None:
            self.lost_error = RespConnectionError(str(error) if error else "connection closed")
        self._outgoing.clear()
        pending = self.pending
        while pending:
            pending.popleft()(self.lost_error)
        if not self.closed.done():
            self.closed.set_result(None)


class RespConnection:
    """One TCP connection to a RESP server; several requests may be in flight at once."""

    def __init__(self, transport: asyncio.Transport, protocol: _RespProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    @classmethod
    async def open(
        cls, host: str, port: int, connect_timeout_seconds: float = 5.0
    ) -> RespConnection:
        """Connect to host:port (TCP_NODELAY is set by asyncio and uvloop for TCP)."""
        loop = asyncio.get_running_loop()
        transport, protocol = await asyncio.wait_for(
            loop.create_connection(_RespProtocol, host, port), connect_timeout_seconds
        )
        return cls(transport, protocol)

    @property
    def is_open(self) -> bool:
        return self._protocol.lost_error is None and not self._transport.is_closing()

    @property
    def in_flight_count(self) -> int:
        """Requests sent whose replies have not arrived yet."""
        return len(self._protocol.pending)

    def send_encoded(self, payload: bytes, on_reply: ReplyCallback) -> None:
        """Send one already encoded command; `on_reply` gets its reply, error or lost error.

        This is the hot path of the load generator: no future, no task. `on_reply` runs inside
        the protocol's receive callback and may itself send; it must not raise.
        """
        protocol = self._protocol
        if protocol.lost_error is not None or self._transport.is_closing():
            raise protocol.lost_error or RespConnectionError("connection closed")
        protocol.pending.append(on_reply)
        protocol.write(payload)

    async def execute_encoded(self, payload: bytes) -> object:
        """Send one encoded command and wait for its reply (server errors are returned)."""
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()

        def resolve(reply: object) -> None:
            if future.done():
                return
            if isinstance(reply, RespConnectionError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

        self.send_encoded(payload, resolve)
        return await future

    async def execute(self, *arguments: bytes | str | int | float) -> object:
        """Run one command, e.g. `await connection.execute("SET", "k", b"v")`.

        Returns the decoded reply (bytes, int, None, list...), or a `ReplyError` instance when
        the server answered with an error. Raises `RespConnectionError` if the connection is lost.
        """
        return await self.execute_encoded(encode_command(*arguments))

    async def execute_pipeline(self, payloads: Sequence[bytes]) -> list[object]:
        """Send several encoded commands in one write and wait for all their replies, in order."""
        if not payloads:
            return []
        future: asyncio.Future[list[object]] = asyncio.get_running_loop().create_future()
        replies: list[object] = []
        expected = len(payloads)

        def collect(reply: object) -> None:
            if future.done():
                return
            if isinstance(reply, RespConnectionError):
                future.set_exception(reply)
                return
            replies.append(reply)
            if len(replies) == expected:
                future.set_result(replies)

        protocol = self._protocol
        if protocol.lost_error is not None or self._transport.is_closing():
            raise protocol.lost_error or RespConnectionError("connection closed")
        protocol.pending.extend([collect] * expected)
        protocol.write(b"".join(payloads))
        return await future

    def abort(self, reason: str) -> None:
        """Drop the connection now; pending replies get a `RespConnectionError(reason)`."""
        self._protocol.abort(reason)

    def close(self) -> None:
        """Close the connection; replies still pending get a `RespConnectionError`."""
        self._transport.close()

    async def wait_closed(self) -> None:
        """Wait until the transport is really closed (after `close`)."""
        await self._protocol.closed
