"""A client that pipelines more commands than the node has answered is paused, not failed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fake_transport import RecordingTransport
from quorumdb.api.resp_server import RespConnection, RespServer
from quorumdb.runtime import node_config
from quorumdb.runtime.node_runtime import NodeRuntime
from quorumdb.runtime.process import resp_limits_for


def remote_key(runtime: NodeRuntime) -> bytes:
    placement = runtime.node.partition_map.keyspaces["default"]
    return next(
        key
        for key in (b"k%d" % index for index in range(1000))
        if placement.owner_of_key(key)[1] != runtime.settings.node_id
    )


def test_a_deep_pipeline_pauses_reading_and_resumes_once_answered(tmp_path: Path) -> None:
    async def scenario() -> RecordingTransport:
        # Node 0 of two; node 1 is never started, so forwarded commands stay unanswered.
        settings = node_config.local_settings(0, 2, 19950, str(tmp_path), "no")
        runtime = NodeRuntime(settings, asyncio.get_running_loop())
        connection = RespConnection(RespServer(runtime, resp_limits_for(settings)))
        transport = RecordingTransport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        key = remote_key(runtime)
        command = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)
        depth = settings.max_pipeline_depth
        connection.data_received(command * (depth + 10))
        assert transport.paused == 1 and transport.written == b""
        # The peer turns out unreachable: every forward fails, the slots drain, and the
        # connection reads again; all replies arrive, in order, as errors.
        runtime.execute(runtime.node.on_peer_unreachable(0, "node1"))
        await asyncio.sleep(0.01)
        await runtime.close()
        return transport

    transport = asyncio.run(scenario())
    assert transport.resumed == 1
    replies = transport.written.split(b"\r\n")[:-1]
    assert len(replies) == 1024 + 10
    assert all(reply.startswith(b"-UNAVAILABLE") for reply in replies)


def test_connections_beyond_the_limit_are_refused_with_an_error(tmp_path: Path) -> None:
    async def scenario() -> list[RecordingTransport]:
        members = node_config.local_settings(0, 1, 19960, str(tmp_path)).members
        settings = node_config.build_settings("node0", members, str(tmp_path), "no", max_clients=2)
        runtime = NodeRuntime(settings, asyncio.get_running_loop())
        server = RespServer(runtime, resp_limits_for(settings))
        transports = [RecordingTransport() for _ in range(3)]
        for transport in transports:
            RespConnection(server).connection_made(transport)  # type: ignore[arg-type]
        assert runtime.metrics.rejected_connections == 1
        await runtime.close()
        return transports

    transports = asyncio.run(scenario())
    assert [t.written for t in transports] == [b"", b"", b"-ERR max number of clients reached\r\n"]
