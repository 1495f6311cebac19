"""The Redis-protocol front of a node: connections, pipelining, ordered replies.

Pipelined commands are parsed and started as they arrive, without waiting for the
previous reply; replies are written strictly in request order, even when a later
command (a local GET) finishes before an earlier one (a forwarded SET waiting for
another node's fsync). Everything a connection has to write in one turn leaves in one
socket write, after the turn has read every readable connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from quorumdb.api import resp_protocol
from quorumdb.api.redis_errors import unknown_command
from quorumdb.api.resp_commands import (
    COMMANDS,
    FAST_GET,
    FAST_OPERATIONS,
    FAST_SET,
    CommandContext,
)
from quorumdb.api.resp_fast_parser import DecodeError, FastRequestParser
from quorumdb.api.resp_protocol import NULL_BULK, OK, encode_bulk
from quorumdb.core.messages import Operation, Outcome
from quorumdb.core.node import NOT_LOCAL
from quorumdb.core.records import PLAIN_RECORD_PREFIX, live_value
from quorumdb.runtime.metrics import NodeMetrics
from quorumdb.runtime.node_runtime import NodeRuntime

LOG = logging.getLogger(__name__)

_SET_NAMES = frozenset((b"SET", b"set", b"Set"))
_GET_NAME = FAST_OPERATIONS[FAST_GET]
_SET_NAME = FAST_OPERATIONS[FAST_SET]
# Held replies of one kind, from one chunk, waiting for the same sync share a slot up to
# this size (a pipeline of SETs is one slot, not one per reply).
_SHARED_SLOT_BYTES_MAX = 4096


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
        # Connections with replies to write once this event-loop turn has read every
        # readable connection (see `RespConnection.flush_at_end_of_turn`).
        self.unflushed: list[RespConnection] = []

    def flush_all(self) -> None:
        unflushed = self.unflushed
        self.unflushed = []
        for connection in unflushed:
            connection._flush()

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
        self.read_local = server.runtime.read_local
        self.read_local_record = server.runtime.node.read_local_record
        self.write_partition = server.runtime.node.write_partition
        self._commit = server.runtime.commit
        self._node = server.runtime.node
        self.parser = FastRequestParser(server.limits)
        self.transport: asyncio.Transport | None = None
        self.client_id = server.next_client_id
        server.next_client_id += 1
        self.name: bytes | None = None
        self.keyspace = "default"
        self.redirects = False
        self.protocol = 2
        self.created_at_ms = int(time.time() * 1000)
        # Each slot is [reply or None, durable group it waits for (0: none)] plus, for
        # replies timed on release, [arrival time, fast operation index, reply count]
        # (consecutive such replies of one chunk share a slot, their bytes joined).
        self._slots: deque[list[Any]] = deque()
        self._watching = False
        self._output: list[bytes] = []
        self._flush_scheduled = False
        self._paused = False
        self._closing_after_flush = False
        self._chunk_started_ns = 0
        self.now_ms = 0
        self._fast_counts = [0] * len(FAST_OPERATIONS)
        self._max_pipeline_depth = self.runtime.settings.max_pipeline_depth

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
        # Replies answered at once are timed together, from this chunk's arrival. The wall
        # clock is read only when a command needs it (expiry), once per chunk at most.
        self._chunk_started_ns = time.perf_counter_ns()
        now_ms = 0
        table = COMMANDS
        parser = self.parser
        check = parser.check
        commit = self._commit
        replies = commit.replies
        node = self._node
        keyspace = self.keyspace
        cached = replies.keyspaces.get(keyspace)  # `for_keyspace`, its common case inlined
        if cached is None or replies.routing_version != node.fast_path_version:
            cached = replies.for_keyspace(keyspace, node.fast_path_version)
        output = self._output  # cleared in place, never replaced
        append = output.append
        slots = self._slots
        # A GET's reply can go out at once only behind no held reply and no write that is
        # not yet durable (it might reveal it); only this loop's commands change that.
        held = bool(slots) or commit.pending
        hits = 0  # GETs answered at once from the reply cache, counted after the loop
        hit_key = b""
        # Plain SETs in a row answer together: one held reply for the run, not one each.
        set_run = 0
        command: Any = None
        try:
            # Parsing and answering in one walk over the read: hiredis's commands come
            # unchecked, and what is not a GET of a cached key is checked first.
            for command in parser.unchecked(data):
                if (
                    type(command) is list
                    and len(command) == 2
                    and type(key := command[1]) is bytes
                    and (command[0] == b"GET" or command[0] == b"get")
                ):
                    # The `get` handler's fast path, inlined (its call and context hops
                    # were about 5 % of a GET): a hot key's reply comes ready-made from
                    # the reply cache.
                    reply = cached.get(key)
                    if reply is not None and not held:
                        append(reply)
                        hits += 1
                        hit_key = key
                        continue
                    if set_run:
                        self._reply_sets(set_run)
                        set_run = 0
                    if self._get(keyspace, key, reply, cached):
                        held = bool(slots) or commit.pending
                        continue
                    # owned elsewhere: the handler forwards it
                elif type(command) is not list or len(command) != 3:
                    command = check(command)
                    if command is None:
                        continue  # an empty request: nothing to answer
                elif (
                    type(command[0]) is bytes
                    and command[0] in _SET_NAMES
                    and type(key := command[1]) is bytes
                    and type(value := command[2]) is bytes
                    and not commit.failed
                ):
                    # The `set` handler's plain case, inlined for the same reason.
                    partition = self.write_partition(keyspace, key, value)
                    if partition >= 0:
                        commit.add_one(keyspace, partition, key, PLAIN_RECORD_PREFIX + value)
                        set_run += 1
                        held = True
                        continue
                else:
                    command = check(command)
                if set_run:
                    self._reply_sets(set_run)
                    set_run = 0
                if hits:  # counted in their keyspace, which the command may switch
                    replies.hit_count += hits
                    self._fast_counts[FAST_GET] += hits
                    node.note_cached_reads(keyspace, hit_key, hits)
                    hits = 0
                self.now_ms = now_ms = now_ms or time.time_ns() // 1_000_000
                self._general(table, command)
                # A command may have switched keyspace or changed what this node serves.
                keyspace = self.keyspace
                cached = replies.for_keyspace(keyspace, node.fast_path_version)
                held = bool(slots) or commit.pending
                if self._closing_after_flush:
                    break
            else:
                if set_run:
                    self._reply_sets(set_run)
                    set_run = 0
                parser.end_of_read(command is not None)  # raises if the rest is bad
        except (resp_protocol.RespProtocolError, DecodeError) as error:
            if isinstance(error, DecodeError):
                error = parser.decode_failed(error)
            if set_run:
                self._reply_sets(set_run)
            self.metrics.protocol_errors += 1
            self.reply(resp_protocol.encode_error(str(error)))
            self._closing_after_flush = True
        except Exception:
            # A bug or a storage fault, not the client's doing: say so, log the evidence,
            # and drop only this connection (its later replies could be out of order).
            LOG.exception("command failed inside the node")
            if set_run:
                self._reply_sets(set_run)
            self.reply(resp_protocol.encode_error("ERR internal error; see the node's log"))
            self._closing_after_flush = True
        counts = self._fast_counts
        if hits:
            replies.hit_count += hits
            counts[FAST_GET] += hits
            node.note_cached_reads(keyspace, hit_key, hits)
        if counts[FAST_GET] or counts[FAST_SET]:
            latency_ns = time.perf_counter_ns() - self._chunk_started_ns
            if counts[FAST_GET]:
                self.metrics.record_many(_GET_NAME, latency_ns, counts[FAST_GET])
                counts[FAST_GET] = 0
            if counts[FAST_SET]:
                self.metrics.record_many(_SET_NAME, latency_ns, counts[FAST_SET])
                counts[FAST_SET] = 0
        if self._closing_after_flush:
            self._flush()
        elif output and not self._flush_scheduled:
            self.flush_at_end_of_turn()
        if slots and not self._paused and len(slots) > self._max_pipeline_depth:
            self._paused = True
            if self.transport is not None:
                self.transport.pause_reading()

    def _get(
        self, keyspace: str, key: bytes, reply: bytes | None, cached: dict[bytes, bytes]
    ) -> bool:
        """A GET that is not a cached reply sent at once: `reply` is the cached one, if any.
        False if the key is owned elsewhere (the general handler forwards it)."""
        replies = self._commit.replies
        if reply is not None:
            replies.hit_count += 1
            self._node.note_cached_reads(keyspace, key, 1)
        else:
            record = self.read_local_record(keyspace, key)
            if record is NOT_LOCAL:
                return False
            replies.miss_count += 1
            if record is None:
                reply = NULL_BULK  # absent: as cacheable as a value
                replies.put(cached, key, reply)
            elif record[0] == 0:  # type: ignore[index]  # never expires: cacheable
                reply = b"$%d\r\n%b\r\n" % (len(record) - 1, record[1:])  # type: ignore[arg-type, index]
                replies.put(cached, key, reply)
            else:
                reply = encode_bulk(live_value(record, time.time_ns() // 1_000_000))  # type: ignore[arg-type]
        self.reply_when_durable(reply, FAST_GET)
        return True

    def _reply_sets(self, count: int) -> None:
        """The held reply of a run of `count` plain SETs, all in the overlay already."""
        self.reply_when_durable(OK * count, FAST_SET, count)

    def _general(self, table: dict[bytes, Any], command: list[bytes]) -> None:
        handler = table.get(command[0]) or table.get(command[0].lower())
        if handler is None:
            self.reply(resp_protocol.encode_error(unknown_command(command[0], command[1:])))
        else:
            handler(self, command)

    # --- replies in order --------------------------------------------------------------

    def reply(self, data: bytes) -> None:
        """A reply known now; it still queues behind earlier unfinished replies."""
        if self._slots:
            self._slots.append([data, 0])
        else:
            self._output.append(data)

    def submit(self, operation: Operation, render: Callable[[Outcome], bytes], name: str) -> None:
        slot: list[Any] = [None, 0]
        self._slots.append(slot)
        started_ns = time.perf_counter_ns()
        metrics = self.metrics

        def finished(outcome: Outcome) -> None:
            metrics.record(name, time.perf_counter_ns() - started_ns, outcome.error is not None)
            slot[0] = render(outcome)
            self._drain()

        self.runtime.submit(operation, finished, self.redirects)

    def reply_when_durable(self, data: bytes, operation_index: int, count: int = 1) -> None:
        """A reply (`count` replies, joined) that may reveal a write not yet synced waits
        for the covering fsync."""
        commit = self.runtime.commit
        if not commit.pending:
            self._fast_counts[operation_index] += count
            if self._slots:
                self._slots.append([data, 0])
            else:
                self._output.append(data)
            return
        target = commit.durable_target()
        slots = self._slots
        if slots:
            last = slots[-1]
            if (
                len(last) > 2
                and last[1] == target
                and last[3] == operation_index
                and last[2] == self._chunk_started_ns
                and len(last[0]) < _SHARED_SLOT_BYTES_MAX
            ):
                last[0] += data
                last[4] += count
                return
        slots.append([data, target, self._chunk_started_ns, operation_index, count])
        if not self._watching:
            self._watching = True
            commit.watch(self)

    def on_lost(self, first_lost_sequence: int) -> None:
        """Replies waiting for writes that will never be durable are never sent: the client
        sees the connection drop, which it must treat as an unknown outcome."""
        if any(slot[1] >= first_lost_sequence for slot in self._slots):
            self._slots.clear()
            self._watching = False
            if self.transport is not None:
                self.transport.abort()

    def on_durable(self) -> bool:
        slots = self._slots
        if len(slots) == 1 and not self._output and not self._paused:
            # The common case, an unpipelined client's one held reply, without `_drain`'s
            # generality (~0.3 us of each unpipelined durable SET).
            head = slots[0]
            if head[0] is not None and head[1] <= self.runtime.commit.durable_sequence:
                slots.clear()
                if len(head) > 2:
                    latency_ns = time.perf_counter_ns() - head[2]
                    self.metrics.record_many(FAST_OPERATIONS[head[3]], latency_ns, head[4])
                transport = self.transport
                if transport is not None:
                    transport.write(head[0])
                    if self._closing_after_flush:
                        transport.close()
                self._watching = False
                return False
        self._drain(write_now=True)  # already at the end of a turn: no need to wait one more
        self._watching = bool(slots) and self.transport is not None
        return self._watching

    def deferred(self) -> Callable[[bytes], None]:
        """A slot filled later by a multi-step command (MGET over many owners, INFO)."""
        slot: list[Any] = [None, 0]
        self._slots.append(slot)

        def fill(data: bytes) -> None:
            slot[0] = data
            self._drain()

        return fill

    def _drain(self, write_now: bool = False) -> None:
        slots = self._slots
        output = self._output
        durable = self.runtime.commit.durable_sequence
        timed = _TimedRun(self.metrics)
        while slots:
            head = slots[0]
            if head[0] is None or head[1] > durable:
                break
            slots.popleft()
            output.append(head[0])
            if len(head) > 2:
                timed.add(head[2], head[3], head[4])
        timed.record()
        if write_now:
            self._flush()
        elif output and not self._flush_scheduled:
            self.flush_at_end_of_turn()
        if self._paused and len(slots) <= self._max_pipeline_depth // 2:
            self._paused = False
            if self.transport is not None:
                self.transport.resume_reading()

    def flush_at_end_of_turn(self) -> None:
        """Write this connection's replies after the loop has read every connection that
        was readable this turn, all connections' writes back to back (as Redis writes its
        replies just before it polls again).

        Why: writing to a socket whose reader sleeps wakes that process, and on a busy
        2-core machine that wake-up was 11-17 % of this server's CPU under a pipelined GET
        load, 3-4 % after (`scripts/cpu_per_request.py --perf`: `sock_def_readable`).
        Interleaving reads and writes woke a client waiting on many connections once per
        reply; writes in a burst find it awake after the first. Durable GET -P 16 against
        Redis went from a median of 0.73 to 0.85-0.89 (BENCHMARKS.md, "Writes at the end
        of the turn")."""
        self._flush_scheduled = True
        unflushed = self.server.unflushed
        unflushed.append(self)
        if len(unflushed) == 1:
            self.runtime.loop.call_soon(self.server.flush_all)

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


class _TimedRun:
    """Records the latency of fast replies released together, one metrics call per run.

    A durable group releases a whole pipeline of fast replies at once, mostly from the
    same chunk (same arrival time, same operation): reading the clock and updating the
    histogram once per run of equal (arrival, operation) instead of once per reply makes
    each release much cheaper. Every reply is still counted, with the same latency."""

    __slots__ = ("_metrics", "_now_ns", "_started_ns", "_operation", "_count")

    def __init__(self, metrics: NodeMetrics) -> None:
        self._metrics = metrics
        self._now_ns = 0
        self._started_ns = 0
        self._operation = 0
        self._count = 0

    def add(self, started_ns: int, operation_index: int, count: int) -> None:
        if self._count:
            if started_ns == self._started_ns and operation_index == self._operation:
                self._count += count
                return
            self.record()
        else:
            self._now_ns = self._now_ns or time.perf_counter_ns()
        self._started_ns = started_ns
        self._operation = operation_index
        self._count = count

    def record(self) -> None:
        if self._count:
            latency_ns = self._now_ns - self._started_ns
            self._metrics.record_many(FAST_OPERATIONS[self._operation], latency_ns, self._count)
            self._count = 0
