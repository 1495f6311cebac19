"""The stock Redis tools against a real 3-node cluster: redis-cli and redis-benchmark.

CI installs them (Debian's redis-tools, from .ci/run); without them these tests skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import redis

REDIS_CLI = shutil.which("redis-cli")
REDIS_BENCHMARK = shutil.which("redis-benchmark")
needs_cli = pytest.mark.skipif(
    REDIS_CLI is None, reason="redis-cli is not on PATH (install Debian's redis-tools)"
)
needs_benchmark = pytest.mark.skipif(
    REDIS_BENCHMARK is None, reason="redis-benchmark is not on PATH (install Debian's redis-tools)"
)


def run(*arguments: str, timeout: float = 60) -> str:
    completed = subprocess.run(
        arguments, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    assert completed.returncode == 0, (completed.returncode, completed.stdout, completed.stderr)
    return completed.stdout


def cli(port: int, *arguments: str) -> str:
    assert REDIS_CLI is not None
    return run(REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), *arguments)


@needs_cli
def test_redis_cli_commands_through_every_node(cluster3) -> None:
    ports = [cluster3.resp_port(index) for index in range(3)]
    assert cli(ports[0], "set", "cli:a", "b").strip() == "OK"
    for port in ports:
        assert cli(port, "get", "cli:a").strip() == "b"
    assert cli(ports[1], "get", "cli:missing").strip() == ""
    assert cli(ports[2], "ping").strip() == "PONG"
    assert cli(ports[2], "incrby", "cli:n", "5").strip() == "5"
    assert cli(ports[1], "get", "nope", "extra").strip() == (
        "ERR wrong number of arguments for 'get' command"
    )


@needs_cli
def test_redis_cli_scan_info_and_dbsize(cluster3) -> None:
    keys = {f"cliscan:{index}" for index in range(120)}
    with redis.Redis(port=cluster3.resp_port(0)) as client:
        client.mset({key: "v" for key in keys})
        total = client.dbsize()
    assert total >= len(keys)
    for index in range(3):
        port = cluster3.resp_port(index)
        scanned = cli(port, "--scan", "--pattern", "cliscan:*").split()
        assert sorted(scanned) == sorted(keys)
        assert len(cli(port, "--scan").split()) == total
        assert cli(port, "dbsize").strip() == str(total)
        info = cli(port, "info")
        for header in ("# Server", "# Clients", "# Stats", "# Keyspace"):
            assert header in info
        assert f"tcp_port:{port}" in info
        assert f"db0:keys={total}" in info
        assert "redis_version:" in cli(port, "info", "server")


def benchmark(port: int, *extra: str) -> dict[str, float]:
    assert REDIS_BENCHMARK is not None
    output = run(
        REDIS_BENCHMARK,
        "-h", "127.0.0.1", "-p", str(port),
        "-t", "set,get", "-n", "2000", "-c", "10", "-q", *extra,
        timeout=120,
    )  # fmt: skip
    # -q prints progress lines separated by \r, then "SET: 1234.56 requests per second, ...".
    rates = {
        name: float(rate)
        for name, rate in re.findall(r"\b(SET|GET): ([0-9.]+) requests per second", output)
    }
    assert set(rates) == {"SET", "GET"}, output
    assert all(rate > 0 for rate in rates.values()), rates
    return rates


@needs_benchmark
def test_redis_benchmark_set_get(cluster3) -> None:
    benchmark(cluster3.resp_port(1))


@needs_benchmark
def test_redis_benchmark_pipelined(cluster3) -> None:
    benchmark(cluster3.resp_port(2), "-P", "16")
    with redis.Redis(port=cluster3.resp_port(0)) as client:
        # Without -r, redis-benchmark SETs the literal key:__rand_int__ to a 3-byte value.
        assert client.strlen("key:__rand_int__") == 3
