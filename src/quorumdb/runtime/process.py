"""One node as an OS process: storage, peers, RESP and HTTP servers on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
from collections.abc import Iterator
from dataclasses import replace

import uvicorn
import uvloop

from quorumdb.api import resp_protocol
from quorumdb.api.http_app import create_app
from quorumdb.api.prometheus import RateSampler
from quorumdb.api.resp_server import RespServer
from quorumdb.core.cluster import Member
from quorumdb.gc_tuning import PAUSES, tune_for_hot_loop
from quorumdb.runtime.node_runtime import NodeRuntime, NodeSettings

LOG = logging.getLogger(__name__)


class _EmbeddedHttpServer(uvicorn.Server):
    """uvicorn sharing our loop; the node process owns the signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def resp_limits_for(settings: NodeSettings) -> resp_protocol.RespLimits:
    """A request may carry the largest value plus its key and the command's framing."""
    limits = settings.limits
    request_bytes = limits.max_value_bytes + limits.max_key_bytes + 64 * 1024
    return resp_protocol.RespLimits(max_request_bytes=request_bytes)


class JoinError(RuntimeError):
    """The cluster could not be joined through the given member."""


async def joined(settings: NodeSettings) -> NodeSettings:
    """Settings of a node that joins (or joined before) a running cluster.

    The founding members are what every node's metadata starts from, so a joiner keeps
    them in its data directory: after a restart it rebuilds the same state from its log."""
    import httpx

    founders_path = os.path.join(settings.data_dir, settings.node_id, "founders.json")
    me = settings.member
    if os.path.exists(founders_path):
        with open(founders_path) as file:
            founders = tuple(Member(**item) for item in json.load(file))
        members = founders
    else:
        url = f"http://{settings.join}/v1/members"
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                response = await client.post(url, json=me.to_dict())
        except httpx.HTTPError as error:
            raise JoinError(f"cannot reach {settings.join}: {error}") from None
        if response.status_code != 200:
            raise JoinError(f"{settings.join} refused the join: {response.text}")
        document = response.json()
        founders = tuple(Member(**item) for item in document["founding_members"])
        members = tuple(Member(**item) for item in document["members"])
        os.makedirs(os.path.dirname(founders_path), exist_ok=True)
        with open(founders_path, "w") as file:
            json.dump([member.to_dict() for member in founders], file)
    others = tuple(member for member in members if member.node_id != me.node_id)
    return replace(settings, founders=founders, members=(*others, me))


async def serve(settings: NodeSettings, ready: asyncio.Event | None = None) -> None:
    """Run until SIGINT or SIGTERM, then stop accepting, flush and close storage."""
    if settings.join is not None:
        settings = await joined(settings)
    loop = asyncio.get_running_loop()
    runtime = NodeRuntime(settings, loop)
    member = settings.member
    stop = asyncio.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop.set)
    try:
        await runtime.start()
        resp = RespServer(runtime, resp_limits_for(settings))
        await resp.start(member.host, member.resp_port)
        # Bind before announcing readiness so a taken port fails the start, not a task.
        http_socket = socket.create_server((member.host, member.http_port))
    except OSError:
        await runtime.close()
        raise
    sampler = RateSampler(runtime)
    http_config = uvicorn.Config(
        create_app(runtime, sampler),
        host=member.host,
        port=member.http_port,
        log_level="warning",
        lifespan="off",
        access_log=False,
    )
    http = _EmbeddedHttpServer(http_config)
    http_task = loop.create_task(http.serve(sockets=[http_socket]))

    async def sample_rates() -> None:
        while True:
            await asyncio.sleep(1.0)
            sampler.sample(1.0)

    sampler_task = loop.create_task(sample_rates())
    LOG.info(
        "node %s ready: RESP %s:%d, HTTP %s:%d, peers %s:%d",
        settings.node_id,
        member.host,
        member.resp_port,
        member.host,
        member.http_port,
        member.host,
        member.peer_port,
    )
    if ready is not None:
        ready.set()
    await stop.wait()
    LOG.info("node %s stopping", settings.node_id)
    sampler_task.cancel()
    resp.close()
    http.should_exit = True
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(http_task, 5)
    await runtime.close()


def run(settings: NodeSettings, tune_gc: bool = True) -> None:
    """The node process's main: the collector tuned for the hot path (unless not
    `tune_gc`) and its pauses counted, then serve."""
    if tune_gc:
        tune_for_hot_loop()
    PAUSES.install()
    uvloop.run(serve(settings))
