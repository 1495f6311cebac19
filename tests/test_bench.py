"""Tests of the load generator: workload shape, the RESP client, and end-to-end runs against a
tiny RESP server started inside the test (and a real redis-server when one is installed)."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator

import hiredis
import pytest

from fake_transport import RecordingTransport
from quorumdb.bench import command
from quorumdb.bench.report import build_table, render_json, reports_to_json
from quorumdb.bench.resp_client import (
    ReplyError,
    RespConnection,
    RespConnectionError,
    _RespProtocol,
    encode_command,
)
from quorumdb.bench.runner import (
    BenchConfig,
    BenchReport,
    CommandTemplates,
    Endpoint,
    parse_target,
    run_bench,
    run_bench_async,
)
from quorumdb.bench.workload import KeyChooser, OperationStream, WorkloadConfig, key_name


class TinyRespServer:
    """A dict-backed GET/SET/PING server on 127.0.0.1.

    With `delay_seconds`, it answers ONE request at a time across all connections and sleeps
    that long before each reply: a server with a fixed capacity of 1 / delay_seconds.
    """

    def __init__(self, delay_seconds: float = 0.0) -> None:
        self.delay_seconds = delay_seconds
        self.data: dict[bytes, bytes] = {}
        self.keyspaces = {b"default", b"orders"}
        self.command_counts: collections.Counter[bytes] = collections.Counter()
        self._serial = asyncio.Lock()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    def _reply(self, arguments: list[bytes]) -> bytes:
        name = arguments[0].upper()
        self.command_counts[name] += 1
        if name == b"GET" and len(arguments) == 2:
            value = self.data.get(arguments[1])
            return b"$-1\r\n" if value is None else b"$%d\r\n%s\r\n" % (len(value), value)
        if name == b"SET" and len(arguments) == 3:
            self.data[arguments[1]] = arguments[2]
            return b"+OK\r\n"
        if name == b"PING":
            return b"+PONG\r\n"
        if name == b"QUORUMDB.KEYSPACE" and len(arguments) == 2:
            if arguments[1] not in self.keyspaces:
                return b"-ERR unknown keyspace '%s'\r\n" % arguments[1]
            return b"+OK\r\n"
        return b"-ERR unknown command '%s'\r\n" % name

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = hiredis.Reader()
        self._writers.add(writer)
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                replies = []
                while (arguments := parser.gets()) is not False:
                    if self.delay_seconds:
                        async with self._serial:
                            await asyncio.sleep(self.delay_seconds)
                            writer.write(self._reply(arguments))
                    else:
                        replies.append(self._reply(arguments))
                if replies:
                    writer.write(b"".join(replies))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


@contextlib.asynccontextmanager
async def tiny_server(delay_seconds: float = 0.0) -> AsyncIterator[TinyRespServer]:
    server = TinyRespServer(delay_seconds)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@contextlib.contextmanager
def tiny_server_in_thread() -> Iterator[TinyRespServer]:
    """The tiny server on its own event loop thread, for the synchronous `run_bench` API."""
    loop = asyncio.new_event_loop()
    server = TinyRespServer()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(5)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def run_async(test: Callable[[], Coroutine[object, object, None]]) -> Callable[[], None]:
    """Run an async test on a fresh event loop (the project does not use pytest-asyncio)."""

    @functools.wraps(test)
    def wrapper() -> None:
        asyncio.run(test())

    return wrapper


def assert_percentiles_monotone(report: BenchReport) -> None:
    for summary in (report.latency, report.reads, report.writes):
        if summary.count:
            assert 0 <= summary.p50_ms <= summary.p90_ms <= summary.p99_ms
            assert summary.p99_ms <= summary.p99_9_ms <= summary.max_ms


# --- workload ---------------------------------------------------------------------------


def test_zipfian_top_key_is_much_hotter_than_the_median_key() -> None:
    chooser = KeyChooser(1000, "zipfian", 0.99, seed=7)
    counts = collections.Counter(chooser.next_index() for _ in range(100_000))
    assert set(counts) <= set(range(1000))
    median_key_count = counts[500]
    assert counts[0] > 50 * max(median_key_count, 1)
    assert counts[0] == max(counts.values())


def test_uniform_keys_are_roughly_flat() -> None:
    chooser = KeyChooser(100, "uniform", seed=3)
    counts = collections.Counter(chooser.next_index() for _ in range(100_000))
    assert len(counts) == 100
    assert all(800 <= count <= 1200 for count in counts.values()), counts


def test_operation_stream_is_deterministic_and_follows_read_ratio() -> None:
    config = WorkloadConfig(key_count=50, read_ratio=0.8, distribution="zipfian", seed=11)
    first = [OperationStream(config).next_operation() for _ in range(1)]
    stream_a, stream_b = OperationStream(config), OperationStream(config)
    sequence_a = [stream_a.next_operation() for _ in range(10_000)]
    sequence_b = [stream_b.next_operation() for _ in range(10_000)]
    assert sequence_a == sequence_b
    assert sequence_a[0] == first[0]
    read_share = sum(is_read for is_read, _ in sequence_a) / len(sequence_a)
    assert 0.78 <= read_share <= 0.82
    assert all(0 <= key_index < 50 for _, key_index in sequence_a)


def test_workload_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        WorkloadConfig(read_ratio=1.5)
    with pytest.raises(ValueError):
        WorkloadConfig(key_count=0)
    with pytest.raises(ValueError):
        WorkloadConfig(distribution="gaussian")  # type: ignore[arg-type]


# --- encoding and configuration ---------------------------------------------------------


def test_command_templates_match_generic_encoding() -> None:
    value = b"100%-binary\r\nvalue"
    templates = CommandTemplates(value)
    assert templates.get % 42 == encode_command("GET", key_name(42))
    assert templates.set % 7 == encode_command("SET", key_name(7), value)
    assert key_name(7) == "key:000000000007"


def test_parse_target_handles_clusters_and_defaults() -> None:
    assert parse_target("redis://127.0.0.1:7000") == [Endpoint("127.0.0.1", 7000)]
    assert parse_target("redis://a:1, b:2") == [Endpoint("a", 1), Endpoint("b", 2)]
    assert parse_target("localhost") == [Endpoint("localhost", 6379)]
    with pytest.raises(ValueError):
        parse_target("http://x:1")


def test_bench_config_is_always_bounded() -> None:
    by_time = BenchConfig(duration_seconds=2.0)
    assert by_time.time_limit_seconds == 2.0
    assert by_time.request_limit == by_time.max_request_count
    by_count = BenchConfig(request_count=10)
    assert by_count.request_limit == 10
    assert by_count.time_limit_seconds == by_count.max_duration_seconds
    with pytest.raises(ValueError):
        BenchConfig(mode="open")
    with pytest.raises(ValueError):
        BenchConfig(targets=["rediss://x:1"])


# --- client -----------------------------------------------------------------------------


@run_async
async def test_resp_connection_pipelines_and_returns_server_errors() -> None:
    async with tiny_server() as server:
        connection = await RespConnection.open("127.0.0.1", server.port)
        replies = await asyncio.gather(
            connection.execute("SET", "a", b"1"),
            connection.execute("GET", "a"),
            connection.execute("GET", "missing"),
            connection.execute("NOPE"),
            connection.execute("PING"),
        )
        assert list(replies[:3]) == [b"OK", b"1", None]
        assert isinstance(replies[3], ReplyError)
        assert replies[4] == b"PONG"
        pipelined = await connection.execute_pipeline(
            [encode_command("SET", "b", "2"), encode_command("GET", "b")]
        )
        assert pipelined == [b"OK", b"2"]
        connection.close()
        await connection.wait_closed()


@run_async
async def test_requests_leave_at_the_end_of_the_turn_one_write_per_connection() -> None:
    """Requests wait for the end of the event-loop turn, whether sent from a reply callback
    (the closed loop's next request) or not: each connection's leave in one write, and
    no connection writes between the reads of others (a write wakes a sleeping server)."""
    transports = [RecordingTransport(), RecordingTransport()]
    protocols = [_RespProtocol(), _RespProtocol()]
    for protocol, transport in zip(protocols, transports, strict=True):
        protocol.connection_made(transport)  # type: ignore[arg-type]
    connections = [
        RespConnection(transport, protocol)  # type: ignore[arg-type]
        for protocol, transport in zip(protocols, transports, strict=True)
    ]
    replies: list[object] = []

    def send_next(reply: object) -> None:
        replies.append(reply)
        connections[0].send_encoded(encode_command("GET", "next"), replies.append)

    ping = encode_command("PING")
    connections[0].send_encoded(ping, send_next)
    connections[0].send_encoded(ping, send_next)
    connections[1].send_encoded(ping, replies.append)
    assert transports[0].write_count == transports[1].write_count == 0
    await asyncio.sleep(0)
    assert transports[0].chunks == [ping * 2]
    assert transports[1].chunks == [ping]
    protocols[0].data_received(b"+PONG\r\n+PONG\r\n")
    protocols[1].data_received(b"+PONG\r\n")
    assert replies == [b"PONG", b"PONG", b"PONG"]
    assert transports[0].write_count == 1  # the callbacks' requests are still queued
    await asyncio.sleep(0)
    assert transports[0].chunks[1:] == [encode_command("GET", "next") * 2]
    protocols[0].data_received(b"$-1\r\n$-1\r\n")
    assert replies[3:] == [None, None]
    # Queued on a connection that is lost before the turn ends: not written, and the
    # request's callback hears of the loss.
    lost: list[object] = []
    connections[1].send_encoded(ping, lost.append)
    protocols[1].connection_lost(None)
    await asyncio.sleep(0)
    assert transports[1].write_count == 1
    assert len(lost) == 1 and isinstance(lost[0], RespConnectionError)


# --- end to end -------------------------------------------------------------------------


def small_config(url: str, **overrides: object) -> BenchConfig:
    settings: dict[str, object] = {
        "targets": [url],
        "clients": 8,
        "workload": WorkloadConfig(key_count=1000, read_ratio=0.7, value_size_bytes=32, seed=5),
        "drain_timeout_seconds": 5.0,
    }
    settings.update(overrides)
    return BenchConfig(**settings)  # type: ignore[arg-type]


@run_async
async def test_closed_loop_end_to_end() -> None:
    async with tiny_server() as server:
        config = small_config(server.url, request_count=2000, preload=True)
        [report] = await run_bench_async(config)
    assert report.failure is None
    assert report.count == 2000
    assert report.errors == 0
    assert report.read_misses == 0
    assert report.reads.count + report.writes.count == 2000
    assert 0.65 <= report.reads.count / 2000 <= 0.75
    assert report.throughput_ops_per_second > 0
    assert report.scheduler_lag is None
    assert_percentiles_monotone(report)
    assert server.command_counts[b"SET"] == 1000 + report.writes.count
    # A redis:// target has no map: nothing to follow, nothing retried.
    assert report.retries == 0 and report.map_refreshes == 0
    assert server.command_counts[b"QUORUMDB.REDIRECTS"] == 0


@run_async
async def test_open_loop_end_to_end_and_json_shape() -> None:
    async with tiny_server() as server:
        config = small_config(
            server.url, mode="open", rate_per_second=2000, duration_seconds=0.5, pipeline=2
        )
        [report] = await run_bench_async(config)
    assert report.failure is None
    assert report.errors == 0
    assert 950 <= report.count <= 1001
    assert 0.62 <= report.reads.count / report.count <= 0.78
    assert_percentiles_monotone(report)
    assert report.scheduler_lag is not None

    document = json.loads(render_json([report], config))
    assert set(document) == {"targets", "config"}
    [target] = document["targets"]
    assert target["target"] == server.url
    assert target["count"] == report.count and target["errors"] == 0
    assert target["retries"] == 0 and target["map_refreshes"] == 0
    assert set(target["latency_ms"]) >= {"p50", "p90", "p99", "p99_9", "max"}
    assert set(target["reads"]) >= {"p50", "p99", "max"}
    assert set(target["writes"]) >= {"p50", "p99", "max"}
    assert target["throughput_ops_per_second"] > 0
    assert document["config"]["mode"] == "open"
    assert document["config"]["workload"]["key_count"] == 1000


@run_async
async def test_open_loop_latency_includes_queueing_delay() -> None:
    """Coordinated omission: at 400/s offered to a 200/s server the queue grows for the whole
    run, so open-loop latency (from intended start) must be far above the 5 ms service time,
    while one closed-loop client only ever sees the service time."""
    async with tiny_server(delay_seconds=0.005) as server:
        open_loop = small_config(
            server.url, mode="open", rate_per_second=400, duration_seconds=0.5, clients=4
        )
        closed_loop = small_config(server.url, clients=1, duration_seconds=0.4)
        [open_report] = await run_bench_async(open_loop)
        [closed_report] = await run_bench_async(closed_loop)
    assert open_report.errors == 0 and closed_report.errors == 0
    assert open_report.count == 200
    # The last requests wait ~100 ms-worth of backlog per 40 requests: p99 is ~0.5 s.
    assert open_report.latency.p99_ms > 200.0
    assert open_report.latency.p50_ms > 50.0
    assert 4.5 <= closed_report.latency.p50_ms <= 12.0
    assert closed_report.latency.p99_ms < 30.0


@run_async
async def test_unreachable_target_is_reported_not_raised() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with tiny_server() as server:
        config = small_config(f"redis://127.0.0.1:{port}", request_count=10)
        config = BenchConfig(
            targets=[f"redis://127.0.0.1:{port}", f"{server.url},{server.url}"],
            clients=4,
            request_count=100,
            workload=config.workload,
        )
        failed, reached = await run_bench_async(config)
    assert failed.failure is not None and "cannot connect" in failed.failure
    assert reached.failure is None and reached.count == 100 and reached.errors == 0
    table = build_table([failed, reached], config)
    assert table.row_count == 2


@run_async
async def test_error_replies_are_counted() -> None:
    async with tiny_server() as server:
        original_reply = server._reply

        def failing_sets(arguments: list[bytes]) -> bytes:
            if arguments[0].upper() == b"SET":
                return b"-MOVED 1 elsewhere\r\n"
            return original_reply(arguments)

        server._reply = failing_sets  # type: ignore[method-assign]
        [report] = await run_bench_async(small_config(server.url, request_count=500))
    assert report.count == 500
    assert report.errors == report.count - report.reads.count > 0
    assert report.first_error is not None and "MOVED" in report.first_error
    assert report.retries == 0  # redis:// targets are never retried


@run_async
async def test_unanswered_and_dropped_requests_are_counted_and_the_run_ends() -> None:
    async with tiny_server() as server:
        server._reply = lambda arguments: b""  # type: ignore[method-assign]
        config = small_config(server.url, duration_seconds=0.2, drain_timeout_seconds=0.2)
        started = time.monotonic()
        [silent] = await run_bench_async(config)
        assert time.monotonic() - started < 3
        # Each of the 8 clients sent one request that never got a reply.
        assert silent.count == silent.errors == 8
        assert silent.first_error is not None and "drain timeout" in silent.first_error

        answered = 0

        def reply_then_hang_up(arguments: list[bytes]) -> bytes:
            nonlocal answered
            answered += 1
            if answered > 100:
                raise ConnectionError("server hangs up")
            return b"+OK\r\n"

        server._reply = reply_then_hang_up  # type: ignore[method-assign]
        [dropped] = await run_bench_async(
            small_config(server.url, mode="open", rate_per_second=1000, duration_seconds=0.3)
        )
    assert dropped.failure is None
    assert dropped.count == 300
    assert dropped.errors == 300 - 100
    assert "RespConnectionError" in (dropped.first_error or "")


def test_synchronous_run_bench_and_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    with tiny_server_in_thread() as server:
        [report] = run_bench(small_config(server.url, request_count=300, clients=3))
        assert report.count == 300 and report.errors == 0

        parser = argparse.ArgumentParser()
        command.add_arguments(parser)
        arguments = parser.parse_args(
            ["--target", server.url, "--requests", "200", "--clients", "2", "--keys", "100"]
            + ["--json", "--seed", "3", "--distribution", "zipfian", "--preload"]
        )
        assert command.run(arguments) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["targets"][0]["count"] == 200
    assert document["config"]["workload"]["distribution"] == "zipfian"
    assert reports_to_json([report], small_config(server.url))["targets"][0]["errors"] == 0


def test_keyspace_is_selected_on_every_connection_before_traffic(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with tiny_server_in_thread() as server:
        parser = argparse.ArgumentParser()
        command.add_arguments(parser)
        arguments = parser.parse_args(
            ["--target", server.url, "--requests", "100", "--clients", "3", "--keys", "50"]
            + ["--keyspace", "orders", "--json"]
        )
        assert command.run(arguments) == 0
        assert server.command_counts[b"QUORUMDB.KEYSPACE"] == 3
        document = json.loads(capsys.readouterr().out)
        assert document["config"]["keyspace"] == "orders"
        assert document["targets"][0]["count"] == 100

        arguments = parser.parse_args(["--target", server.url, "--requests", "10"])
        assert command.run(arguments) == 0
        assert server.command_counts[b"QUORUMDB.KEYSPACE"] == 3  # default: nothing sent
        capsys.readouterr()

        traffic_before = server.command_counts[b"GET"] + server.command_counts[b"SET"]
        [refused] = run_bench(small_config(server.url, request_count=10, keyspace="missing"))
        assert refused.failure is not None
        assert "cannot select keyspace 'missing'" in refused.failure
        assert server.command_counts[b"GET"] + server.command_counts[b"SET"] == traffic_before


def test_command_rejects_rate_in_closed_mode(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    assert command.run(parser.parse_args(["--rate", "100"])) == 2
    assert "--rate" in capsys.readouterr().err


# --- against a real Redis, when installed ------------------------------------------------


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_against_real_redis(tmp_path: pathlib.Path) -> None:
    port = free_loopback_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 5
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        config = small_config(f"redis://127.0.0.1:{port}", request_count=3000, preload=True)
        [report] = run_bench(config)
        assert report.count == 3000 and report.errors == 0 and report.read_misses == 0
        assert_percentiles_monotone(report)
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(10)
