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


@pytest.mark.parametrize("fsync", ["always", "no"])
def test_pipelined_fast_commands_are_ordered_durable_and_counted(
    tmp_path: Path, fsync: str
) -> None:
    async def scenario() -> None:
        settings = node_config.local_settings(0, 1, 19950, str(tmp_path), fsync)
        runtime = NodeRuntime(settings, asyncio.get_running_loop())
        transport = RecordingTransport()
        connection = RespConnection(RespServer(runtime, resp_limits_for(settings)))
        connection.connection_made(transport)  # type: ignore[arg-type]
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
