"""`quorumdb bench` against a `quorumdb://` target follows map changes: requests that meet
a dead owner, a REDIRECT or UNAVAILABLE are retried at the owner by a refreshed map, with a
bounded number of retries. Run in process against fake nodes that share one "truth" (the
map and the data), so a failover is one assignment and a kill closes sockets."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import json
import time
from collections.abc import AsyncIterator

import hiredis
from rich.console import Console

from quorumdb.bench.report import print_table, render_json
from quorumdb.bench.resp_client import ReplyError, RespConnectionError
from quorumdb.bench.routing import is_retryable, retry_delay
from quorumdb.bench.runner import BenchConfig, run_bench_async
from quorumdb.bench.workload import WorkloadConfig
from quorumdb.core.partitioning import FixedLayout
from quorumdb.core.partitioning.leaders import LeaderLayout
from test_bench import run_async, small_config


class FakeCluster:
    """Nodes `a`, `b`, ... leading the partitions of keyspace `default` (fixed; one
    partition per node unless `leaders` says otherwise). Each node answers from the shared
    truth; with QUORUMDB.REDIRECTS ON it answers REDIRECT for keys another node leads."""

    def __init__(self, node_ids: list[str], leaders: list[str] | None = None) -> None:
        self.node_ids = node_ids
        self.layout = FixedLayout(tuple(leaders or node_ids))
        self.leaders = dict(enumerate(leaders or node_ids))
        self.version = 1
        self.data: dict[bytes, bytes] = {}
        self.nodes = {node_id: FakeNode(self, node_id) for node_id in node_ids}
        self.unavailable_sets = False

    def partition(self, key: bytes) -> int:
        return self.layout.locate(key)

    def fail_over(self, partition: int, to: str) -> None:
        self.leaders[partition] = to
        self.version += 1

    def document(self) -> bytes:
        layout = LeaderLayout(self.layout, dict(self.leaders))
        return json.dumps(
            {
                "version": self.version,
                "members": [
                    {"node_id": node.node_id, "host": "127.0.0.1", "resp_port": node.port}
                    for node in self.nodes.values()
                ],
                "keyspaces": {"default": {"layout": layout.to_dict()}},
            }
        ).encode()

    def url(self, node_id: str) -> str:
        return f"quorumdb://127.0.0.1:{self.nodes[node_id].port}"


class FakeNode:
    def __init__(self, cluster: FakeCluster, node_id: str) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.port = 0
        self.served: collections.Counter[int] = collections.Counter()  # by partition
        self.redirects = 0
        self.commands: collections.Counter[bytes] = collections.Counter()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def kill(self) -> None:
        """Like SIGKILL: no new connections, open ones reset."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()

    async def stop(self) -> None:
        if self._server is not None:
            self.kill()
            await self._server.wait_closed()

    def _reply(self, arguments: list[bytes], session: dict[str, bool]) -> bytes:
        cluster = self.cluster
        name = arguments[0].upper()
        self.commands[name] += 1
        if name == b"QUORUMDB.MAP":
            document = cluster.document()
            return b"$%d\r\n%s\r\n" % (len(document), document)
        if name == b"QUORUMDB.REDIRECTS":
            session["redirects"] = arguments[1].upper() == b"ON"
            return b"+OK\r\n"
        if name == b"QUORUMDB.KEYSPACE":
            return b"+OK\r\n"
        if name not in (b"GET", b"SET"):
            return b"-ERR unknown command\r\n"
        key = arguments[1]
        partition = cluster.partition(key)
        owner = cluster.leaders[partition]
        if owner != self.node_id and session.get("redirects"):
            self.redirects += 1
            port = cluster.nodes[owner].port
            return (
                b"-REDIRECT partition %d of 'default' is on %s at 127.0.0.1:%d (map version %d)\r\n"
                % (partition, owner.encode(), port, cluster.version)
            )
        if name == b"SET" and cluster.unavailable_sets:
            return b"-UNAVAILABLE node elsewhere is unreachable\r\n"
        self.served[partition] += 1
        if name == b"SET":
            cluster.data[key] = arguments[2]
            return b"+OK\r\n"
        value = cluster.data.get(key)
        return b"$-1\r\n" if value is None else b"$%d\r\n%s\r\n" % (len(value), value)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = hiredis.Reader()
        session: dict[str, bool] = {}
        self._writers.add(writer)
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                replies = []
                while (arguments := parser.gets()) is not False:
                    replies.append(self._reply(arguments, session))
                writer.write(b"".join(replies))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


@contextlib.asynccontextmanager
async def fake_cluster(
    node_ids: list[str], leaders: list[str] | None = None
) -> AsyncIterator[FakeCluster]:
    cluster = FakeCluster(node_ids, leaders)
    for node in cluster.nodes.values():
        await node.start()
    try:
        yield cluster
    finally:
        for node in cluster.nodes.values():
            await node.stop()


def config_for(target: str, **overrides: object) -> BenchConfig:
    workload = WorkloadConfig(key_count=400, read_ratio=0.5, value_size_bytes=16, seed=3)
    return small_config(target, **{"clients": 4, "workload": workload, **overrides})


def test_which_failures_are_retried_and_how_long_to_wait() -> None:
    assert is_retryable(RespConnectionError("connection lost"))
    assert is_retryable(ConnectionRefusedError())
    assert is_retryable(ReplyError("REDIRECT partition 2 of 'orders' is on node1 at h:1"))
    assert is_retryable(ReplyError("MOVED 3999 127.0.0.1:6381"))
    assert is_retryable(ReplyError("UNAVAILABLE node node2 is unreachable"))
    assert not is_retryable(ReplyError("ERR unknown keyspace 'x'"))
    assert not is_retryable(ReplyError("TIMEOUT the outcome is unknown"))
    assert not is_retryable(b"OK") and not is_retryable(None)
    delays = [retry_delay(attempt, 0.02) for attempt in range(1, 11)]
    assert delays[0] == 0.0  # right after the map refresh
    assert delays[1:5] == [0.02, 0.04, 0.08, 0.16]
    assert max(delays) == 0.5 and sorted(delays) == delays
    assert 2.0 < sum(delays) < 3.0  # rides out a failover (leader timeout 1 s)


async def _fail_over_while_benching(mode: str) -> None:
    async with fake_cluster(["a", "b"]) as cluster:
        a, b = cluster.nodes["a"], cluster.nodes["b"]
        killed_at: list[float] = []

        async def kill_then_fail_over() -> None:
            await asyncio.sleep(0.4)
            a.kill()
            killed_at.append(time.perf_counter())
            served_before = b.served[0]
            await asyncio.sleep(0.2)  # the failover takes a while; retries back off
            assert b.served[0] == served_before
            cluster.fail_over(0, to="b")

        failing = asyncio.create_task(kill_then_fail_over())
        overrides: dict[str, object] = {"duration_seconds": 1.6}
        if mode == "open":
            overrides.update(mode="open", rate_per_second=600)
        started = time.perf_counter()
        [report] = await run_bench_async(config_for(cluster.url("a"), **overrides))
        elapsed = time.perf_counter() - started
        await failing
    assert report.failure is None
    # Every request that met the dead node or the stale map succeeded on a retry.
    assert report.errors == 0, report.first_error
    assert report.retries > 0 and report.map_refreshes >= 1
    # Partition 0's keys reached its new leader (only a led it before).
    assert b.served[0] > 20
    assert elapsed < 1.6 + 2.0
    # A retried request's latency includes the wait for the failover.
    assert report.latency.max_ms >= 150
    config = config_for(cluster.url("a"), **overrides)
    document = json.loads(render_json([report], config))
    assert document["targets"][0]["retries"] == report.retries
    assert document["config"]["retries"] == 10
    output = io.StringIO()
    print_table([report], config, Console(file=output, width=200))
    assert f"{report.retries} retries after redirects" in output.getvalue()


@run_async
async def test_closed_loop_follows_a_killed_leader_to_its_successor() -> None:
    await _fail_over_while_benching("closed")


@run_async
async def test_open_loop_follows_a_killed_leader_to_its_successor() -> None:
    await _fail_over_while_benching("open")


@run_async
async def test_a_failover_slower_than_the_retries_costs_errors_then_is_followed() -> None:
    """The dead leader's keys keep being asked for during the outage (each failing after
    its few retries: the outage is not hidden), and once the map names the successor they
    reach it, although no request failed in a way that asked for the new map by then."""
    async with fake_cluster(["a", "b"]) as cluster:
        a, b = cluster.nodes["a"], cluster.nodes["b"]
        served_at_failover: list[int] = []

        async def slow_failover() -> None:
            await asyncio.sleep(0.3)
            a.kill()
            await asyncio.sleep(0.6)
            served_at_failover.append(b.served[0])
            cluster.fail_over(0, to="b")

        failing = asyncio.create_task(slow_failover())
        config = config_for(
            cluster.url("a"), duration_seconds=1.8, retries=2, retry_backoff_seconds=0.005
        )
        [report] = await run_bench_async(config)
        await failing
    assert report.failure is None
    assert report.errors > 0 and report.first_error is not None
    assert served_at_failover == [0]
    assert b.served[0] > 20


@run_async
async def test_a_moved_partition_is_followed_after_one_redirect_per_client() -> None:
    async with fake_cluster(["a", "b"]) as cluster:
        a, b = cluster.nodes["a"], cluster.nodes["b"]

        async def move() -> None:
            await asyncio.sleep(0.3)
            cluster.fail_over(0, to="b")  # a lives on, leading nothing

        moving = asyncio.create_task(move())
        [report] = await run_bench_async(config_for(cluster.url("b"), duration_seconds=1.0))
        await moving
    assert report.failure is None
    assert report.errors == 0, report.first_error
    assert 0 < report.retries <= 10
    assert 0 < a.redirects <= 10  # a's 2 clients noticed and moved to b
    assert b.served[0] > 20


@run_async
async def test_partitions_moved_to_a_node_without_clients_are_still_asked_for() -> None:
    """c owns nothing at the start, so it gets no client; once half the partitions move
    to it, clients move too, and c serves about its half of the requests."""
    async with fake_cluster(["a", "b", "c"], leaders=["a", "b", "a", "b"]) as cluster:
        before: dict[str, int] = {}

        async def move_to_c() -> None:
            await asyncio.sleep(0.3)
            before.update({n: sum(node.served.values()) for n, node in cluster.nodes.items()})
            cluster.fail_over(2, to="c")
            cluster.fail_over(3, to="c")

        moving = asyncio.create_task(move_to_c())
        [report] = await run_bench_async(config_for(cluster.url("a"), duration_seconds=1.2))
        await moving
    assert report.failure is None
    assert report.errors == 0, report.first_error
    assert before["c"] == 0
    served = {n: sum(node.served.values()) - before[n] for n, node in cluster.nodes.items()}
    assert served["c"] > 0.3 * sum(served.values()), served  # c owns half the keys now


@run_async
async def test_a_request_still_failing_after_its_retries_is_an_error() -> None:
    async with fake_cluster(["a"]) as cluster:
        cluster.unavailable_sets = True
        config = config_for(
            cluster.url("a"), request_count=200, retries=3, retry_backoff_seconds=0.001
        )
        started = time.perf_counter()
        [report] = await run_bench_async(config)
        elapsed = time.perf_counter() - started
    assert report.count == 200
    writes = report.count - report.reads.count
    assert writes > 50 and report.errors == writes and report.writes.count == 0
    assert report.retries == 3 * writes
    assert report.first_error is not None and "UNAVAILABLE" in report.first_error
    assert elapsed < 5


@run_async
async def test_every_node_gone_ends_the_run_on_time_with_errors() -> None:
    async with fake_cluster(["a", "b"]) as cluster:

        async def kill_all() -> None:
            await asyncio.sleep(0.3)
            for node in cluster.nodes.values():
                node.kill()

        killing = asyncio.create_task(kill_all())
        config = config_for(cluster.url("a"), duration_seconds=0.8, drain_timeout_seconds=1.0)
        started = time.perf_counter()
        [report] = await run_bench_async(config)
        elapsed = time.perf_counter() - started
        await killing
    assert report.failure is None
    assert report.errors > 0 and report.count > report.errors
    assert report.first_error is not None and "Error" in report.first_error
    assert elapsed < 0.8 + 1.0 + 1.5
