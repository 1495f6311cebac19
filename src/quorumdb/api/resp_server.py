"""The Redis-protocol front of a node: connections, pipelining, ordered replies.

Pipelined commands are parsed and started as they arrive, without waiting for the
previous reply; replies are written strictly in request order, even when a later
command (a local GET) finishes before an earlier one (a forwarded SET waiting for
another node's fsync). Everything written in one turn leaves in one socket write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from quorumdb.api import resp_protocol
from quorumdb.api.redis_errors import unknown_command
from quorumdb.api.resp_commands import COMMANDS, CommandContext
from quorumdb.core.messages import Operation, Outcome
from quorumdb.runtime.node_runtime import NodeRuntime

LOG = logging.getLogger(__name__)


class RespServer:
    """State shared by every client connection of one node."""

    def __init__(self, runtime: NodeRuntime, limits: resp_protocol.RespLimits) -> None:
        self.runtime = runtime
        self.limits = limits
        self.connections: set[RespConnection] = set()
        self.next_client_id = 1
        self.scan_cursors: dict[int, tuple[int, bytes]] = {}
        self.next_scan_token = 1
        self.server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> None:
        self.server = await self.runtime.loop.create_server(
            lambda: RespConnection(self), host, port, reuse_address=True, backlog=1024
        )

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for connection in list(self.connections):
            connection.close()


class RespConnection(asyncio.Protocol, CommandContext):
    def __init__(self, server: RespServer) -> None:
        self.server = server
        self.runtime = server.runtime
        self.metrics = server.runtime.metrics
        self.parser = resp_protocol.RespRequestParser(server.limits)
        self.transport: asyncio.Transport | None = None
        self.client_id = server.next_client_id
        server.next_client_id += 1
        self.name: bytes | None = None
        self.keyspace = "default"
        self.protocol = 2
        self.created_at_ms = int(time.time() * 1000)
        self._slots: deque[list[bytes | None]] = deque()
        self._output: list[bytes] = []
        self._flush_scheduled = False
        self._paused = False
        self._closing_after_flush = False

    # --- asyncio protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        metrics = self.metrics
        metrics.total_connections += 1
        if len(self.server.connections) >= self.runtime.settings.max_clients:
            metrics.rejected_connections += 1
            transport.write(resp_protocol.encode_error("ERR max number of clients reached"))
            transport.close()
            return
        self.server.connections.add(self)
        metrics.active_clients += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.server.connections:
            self.server.connections.discard(self)
            self.metrics.active_clients -= 1
        self.transport = None

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        try:
            parser.feed(data)
            while True:
                command = parser.next_command()
                if command is None:
                    break
                self._dispatch(command)
                if self._closing_after_flush:
                    break
        except resp_protocol.RespProtocolError as error:
            self.metrics.protocol_errors += 1
            self.reply(resp_protocol.encode_error(str(error)))
            self._closing_after_flush = True
        self._flush()
        if not self._paused and len(self._slots) > self.runtime.settings.max_pipeline_depth:
            self._paused = True
            if self.transport is not None:
                self.transport.pause_reading()

    def _dispatch(self, command: list[bytes]) -> None:
        name = command[0].lower()
        entry = COMMANDS.get(name)
        if entry is None:
            self.reply(resp_protocol.encode_error(unknown_command(command[0], command[1:])))
            return
        entry(self, command)

    # --- replies in order --------------------------------------------------------------

    def reply(self, data: bytes) -> None:
        """A reply known now; it still queues behind earlier unfinished replies."""
        if self._slots:
            self._slots.append([data])
        else:
            self._output.append(data)

    def submit(self, operation: Operation, render: Callable[[Outcome], bytes], name: str) -> None:
        slot: list[bytes | None] = [None]
        self._slots.append(slot)
        started_ns = time.perf_counter_ns()
        metrics = self.metrics

        def finished(outcome: Outcome) -> None:
            metrics.record(name, time.perf_counter_ns() - started_ns, outcome.error is not None)
            slot[0] = render(outcome)
            self._drain()

        self.runtime.submit(operation, finished)

    def deferred(self) -> Callable[[bytes], None]:
        """A slot filled later by a multi-step command (MGET over many owners, INFO)."""
        slot: list[bytes | None] = [None]
        self._slots.append(slot)

        def fill(data: bytes) -> None:
            slot[0] = data
            self._drain()

        return fill

    def _drain(self) -> None:
        slots = self._slots
        output = self._output
        while slots and slots[0][0] is not None:
            output.append(slots.popleft()[0])  # type: ignore[arg-type]
        if output and not self._flush_scheduled:
            self._flush_scheduled = True
            self.runtime.loop.call_soon(self._flush)
        if self._paused and len(slots) <= self.runtime.settings.max_pipeline_depth // 2:
            self._paused = False
            if self.transport is not None:
                self.transport.resume_reading()

    def _flush(self) -> None:
        self._flush_scheduled = False
        transport = self.transport
        if transport is None:
            self._output.clear()
            return
        output = self._output
        if output:
            transport.write(output[0] if len(output) == 1 else b"".join(output))
            output.clear()
        if self._closing_after_flush and not self._slots:
            transport.close()

    def close_after_reply(self) -> None:
        self._closing_after_flush = True

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
