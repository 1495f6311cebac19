"""Pipelined fast-path commands driven straight into one connection (no sockets).

Checks what the batched hot path must keep: replies in request order, replies held until
the covering fsync, and every request counted in the metrics with a latency."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fake_transport import RecordingTransport
from quorumdb.api.resp_server import RespConnection, RespServer
from quorumdb.runtime import node_config
from quorumdb.runtime.node_runtime import NodeRuntime
from quorumdb.runtime.process import resp_limits_for


def _set(key: bytes, value: bytes) -> bytes:
    return b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value)


def _get(key: bytes) -> bytes:
    return b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)


def _connection(
    tmp_path: Path, fsync: str
) -> tuple[NodeRuntime, RespConnection, RecordingTransport]:
    """One node runtime and one RESP connection on it (call inside a running loop)."""
    settings = node_config.local_settings(0, 1, 19950, str(tmp_path), fsync)
    runtime = NodeRuntime(settings, asyncio.get_running_loop())
    transport = RecordingTransport()
    connection = RespConnection(RespServer(runtime, resp_limits_for(settings)))
    connection.connection_made(transport)  # type: ignore[arg-type]
    return runtime, connection, transport


@pytest.mark.parametrize("fsync", ["always", "no"])
def test_pipelined_fast_commands_are_ordered_durable_and_counted(
    tmp_path: Path, fsync: str
) -> None:
    async def scenario() -> None:
        runtime, connection, transport = _connection(tmp_path, fsync)
        chunk = b"".join(_set(b"k%d" % i, b"v%d" % i) + _get(b"k%d" % i) for i in range(16))
        connection.data_received(chunk)
        connection.data_received(_get(b"missing") * 3)
        if fsync == "always":
            # Nothing may leave before the fsync covering the writes, which runs at the
            # end of this turn.
            assert transport.written == b""
        for _ in range(5):
            await asyncio.sleep(0)
        expected = b"".join(b"+OK\r\n$%d\r\nv%d\r\n" % (len(b"v%d" % i), i) for i in range(16))
        assert transport.written == expected + b"$-1\r\n" * 3
        metrics = runtime.metrics
        assert metrics.requests_by_operation == {"set": 16, "get": 19}
        assert metrics.latency_by_operation["set"].count == 16
        assert metrics.latency_by_operation["get"].count == 19
        assert sum(metrics.latency_by_operation["get"].bucket_counts) == 19
        await runtime.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("fsync", ["always", "no"])
def test_a_run_of_sets_answers_in_order_before_what_follows_it(tmp_path: Path, fsync: str) -> None:
    """Plain SETs in a row share one held reply; whatever ends the run (a general-path
    command, a GET, bad input) must still answer after them."""

    async def scenario() -> None:
        runtime, connection, transport = _connection(tmp_path, fsync)
        runs = b"".join(_set(b"r%d" % i, b"v") for i in range(5))
        connection.data_received(
            runs + b"*2\r\n$4\r\nINCR\r\n$2\r\nr9\r\n" + runs + _get(b"r0") + runs
        )
        connection.data_received(runs + b"*1\r\n$4\r\nPING\r\n" + runs + b"*x\r\n")
        for _ in range(5):
            await asyncio.sleep(0)
        ok = b"+OK\r\n" * 5
        error = b"-ERR Protocol error: invalid multibulk length\r\n"
        expected = ok + b":1\r\n" + ok + b"$1\r\nv\r\n" + ok + ok + b"+PONG\r\n" + ok + error
        assert transport.written == expected
        assert runtime.metrics.requests_by_operation["set"] == 25
        assert runtime.metrics.latency_by_operation["set"].count == 25
        await runtime.close()

    asyncio.run(scenario())


def test_a_run_of_sets_answers_before_a_failure_inside_the_node(tmp_path: Path) -> None:
    """A bug met halfway through a run: the SETs before it were taken, so they answer
    first, then the error, then the connection closes."""

    async def scenario() -> None:
        runtime, connection, transport = _connection(tmp_path, "always")
        write_partition = connection.write_partition

        def broken_for_one_key(keyspace: str, key: bytes, value: bytes) -> int:
            if key == b"bad":
                raise RuntimeError("a bug")
            return write_partition(keyspace, key, value)

        connection.write_partition = broken_for_one_key  # type: ignore[method-assign]
        runs = b"".join(_set(b"r%d" % i, b"v") for i in range(3))
        connection.data_received(runs + _set(b"bad", b"v") + runs)
        for _ in range(5):
            await asyncio.sleep(0)
        error = b"-ERR internal error; see the node's log\r\n"
        assert transport.written == b"+OK\r\n" * 3 + error
        assert transport.closed
        await runtime.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "bad",
    [
        b"*2\r\n$3\r\nGET\r\n:5\r\n",  # an integer key
        b"*2\r\n*1\r\n$3\r\nGET\r\n$1\r\nk\r\n",  # an array where the name goes
        b"*2\r\n$3\r\nGET\r\n*1\r\n$1\r\nk\r\n",  # an array where the key goes
        b"*2\r\n$3\r\nGET\r\n$-1\r\n",  # a null key
    ],
)
def test_cached_gets_answer_before_a_malformed_get(tmp_path: Path, bad: bytes) -> None:
    """GETs of a cached key are answered as hiredis hands them over, unchecked by the
    parser: one that is not an array of byte strings must still fail the stream after the
    replies before it, and no other shape may pass for a GET."""

    async def scenario() -> None:
        runtime, connection, transport = _connection(tmp_path, "no")
        connection.data_received(_set(b"k", b"v") + _get(b"k"))
        for _ in range(5):
            await asyncio.sleep(0)
        assert transport.written == b"+OK\r\n$1\r\nv\r\n"
        assert b"k" in runtime.commit.replies.keyspaces["default"]  # the cache holds it
        transport.chunks.clear()
        mixed_case = b"*2\r\n$3\r\nGet\r\n$1\r\nk\r\n"
        connection.data_received(_get(b"k") * 3 + mixed_case + bad + _get(b"k"))
        for _ in range(5):
            await asyncio.sleep(0)
        replies = b"$1\r\nv\r\n" * 4
        assert transport.written.startswith(replies + b"-ERR Protocol error")
        assert transport.written.count(b"\r\n") == 8 + 1  # nothing after the error
        assert transport.closed
        assert runtime.metrics.requests_by_operation["get"] == 5
        await runtime.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("fsync", ["always", "no"])
def test_replies_leave_after_the_turn_read_every_connection(tmp_path: Path, fsync: str) -> None:
    """Replies known at once are written at the end of the event-loop turn, every
    connection's back to back, not between reads: a client waiting on many connections
    is then woken once per burst (BENCHMARKS.md, "writes at the end of the turn").
    Two chunks one connection reads in one turn leave in one write, in order."""

    async def scenario() -> None:
        runtime, first, first_transport = _connection(tmp_path, fsync)
        second = RespConnection(first.server)
        second_transport = RecordingTransport()
        second.connection_made(second_transport)  # type: ignore[arg-type]
        first.data_received(b"*1\r\n$4\r\nPING\r\n" + _get(b"absent"))
        second.data_received(_get(b"absent"))
        first.data_received(b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n")
        assert first_transport.write_count == second_transport.write_count == 0
        await asyncio.sleep(0)
        assert first_transport.chunks == [b"+PONG\r\n$-1\r\n$2\r\nhi\r\n"]
        assert second_transport.chunks == [b"$-1\r\n"]
        assert first.server.unflushed == []
        # A connection that closes before the end of the turn drops its replies quietly.
        second.data_received(_get(b"absent"))
        second.connection_lost(None)
        await asyncio.sleep(0)
        assert second_transport.write_count == 1
        await runtime.close()

    asyncio.run(scenario())
