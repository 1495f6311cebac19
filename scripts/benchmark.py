"""Reproduce the figures in BENCHMARKS.md: quorumdb beside a real Redis in one run.

    python scripts/benchmark.py [--sections redis,durable,cluster,memory] [--requests 200000]

Sections:
  redis    redis-benchmark -t set,get -n N -c 50, with and without -P 16: one quorumdb node
           (fsync no) against redis-server without persistence, runs alternating.
  redis-random  the same with -r 100000 (random keys: few reads hit the read cache)
  durable  the same, quorumdb fsync always against redis appendonly yes, appendfsync always.
  cluster  3-node cluster (fsync always), `quorumdb bench`: all clients through one node
           (requests for other nodes' keys are forwarded) against the smart routing that the
           Python client does (each request straight to its owner).
  memory   RSS of one node holding 1,000,000 keys with 100-byte values.
  ceiling  (not run by default) the `redis` runs with -P 16 plus a bare asyncio server
           over a dict (scripts/bare_resp_server.py): how close any Python server gets;
           also the CPU time each server process spends per request.

Installs redis-server and redis-tools with apt-get when missing. Every server it starts
is stopped by PID. Figures are medians over alternating rounds; compare the ratios, as
the machine is shared and absolute rates move with its load. The redis sections also
print the lowest and highest ratio of a single round (Redis's run and quorumdb's right
after it): on a busy machine one round's ratio swings far more than the median.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from cpu_per_request import cpu_seconds  # noqa: E402  (this script's directory)

from cluster_harness import LocalTestCluster, free_base_port, wait_for_port  # noqa: E402
from quorumdb.bench.runner import BenchConfig, run_bench  # noqa: E402
from quorumdb.bench.workload import WorkloadConfig  # noqa: E402


def ensure_redis() -> None:
    if shutil.which("redis-server") and shutil.which("redis-benchmark"):
        return
    subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server", "redis-tools"], check=True)


@dataclass(frozen=True)
class Served:
    port: int
    pid: int


@contextmanager
def serving(arguments: list[str], port: int) -> Iterator[Served]:
    """A server process started with `arguments`, stopped by PID when done."""
    process = subprocess.Popen(arguments, stdout=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, process=process)  # type: ignore[arg-type]
        yield Served(port, process.pid)
    finally:
        process.terminate()
        process.wait(10)


def redis_server(durable: bool, data_dir: str) -> contextlib.AbstractContextManager[Served]:
    port = free_base_port(1)
    arguments = ["redis-server", "--port", str(port), "--save", "", "--dir", data_dir]
    if durable:
        arguments += ["--appendonly", "yes", "--appendfsync", "always"]
    else:
        arguments += ["--appendonly", "no"]
    return serving(arguments, port)


def bare_server(*options: str) -> contextlib.AbstractContextManager[Served]:
    port = free_base_port(1)
    script = Path(__file__).resolve().parent / "bare_resp_server.py"
    return serving([sys.executable, str(script), str(port), *options], port)


@contextmanager
def quorumdb_nodes(count: int, fsync: str, data_dir: str) -> Iterator[LocalTestCluster]:
    with LocalTestCluster(count, Path(data_dir), fsync=fsync) as cluster:
        yield cluster


def redis_benchmark(
    port: int, requests: int, pipeline: int, random_keys: int = 0, tests: str = "set,get"
) -> dict[str, float]:
    command = ["redis-benchmark", "-p", str(port), "-t", tests, "-n", str(requests),
               "-c", "50", "-P", str(pipeline), "--csv"]  # fmt: skip
    if random_keys:
        command += ["-r", str(random_keys)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    rates = {}
    for line in output.splitlines():
        fields = [field.strip('"') for field in line.split(",")]
        if fields and fields[0] in ("SET", "GET"):
            rates[fields[0]] = float(fields[1])
    return rates


def compare_with_redis(
    durable: bool, requests: int, rounds: int, random_keys: int = 0
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as redis_dir, tempfile.TemporaryDirectory() as q_dir:
        fsync = "always" if durable else "no"
        with redis_server(durable, redis_dir) as redis, quorumdb_nodes(1, fsync, q_dir) as q:
            for pipeline in (1, 16):
                samples: dict[tuple[str, str], list[float]] = {}
                for _ in range(rounds):
                    for name, port in (("redis", redis.port), ("quorumdb", q.resp_port(0))):
                        rates = redis_benchmark(port, requests, pipeline, random_keys)
                        for test, rate in rates.items():
                            samples.setdefault((name, test), []).append(rate)
                for test in ("SET", "GET"):
                    redis_rates = samples[("redis", test)]
                    q_rates = samples[("quorumdb", test)]
                    redis_rate = statistics.median(redis_rates)
                    q_rate = statistics.median(q_rates)
                    # Each round's own ratio (its two runs were back to back): the spread
                    # a single run of redis-benchmark would show.
                    round_ratios = [q / r for q, r in zip(q_rates, redis_rates, strict=True)]
                    rows.append({
                        "test": test, "pipeline": pipeline, "durable": durable,
                        "redis_ops_per_second": round(redis_rate),
                        "quorumdb_ops_per_second": round(q_rate),
                        "ratio": round(q_rate / redis_rate, 3),
                        "round_ratio_min": round(min(round_ratios), 3),
                        "round_ratio_max": round(max(round_ratios), 3),
                    })  # fmt: skip
    return rows


def ceiling(requests: int, rounds: int) -> list[dict[str, object]]:
    """Redis, the bare Python server (plain, and with ready-made GET replies) and quorumdb
    (fsync no), -P 16, alternating: each one's rate, and the CPU time the server process
    spent per request (user plus system, most of it the kernel's socket work), which a
    busy shared machine moves much less than it moves rates."""
    rates: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    names = ("redis", "bare", "ready", "quorumdb")
    with tempfile.TemporaryDirectory() as redis_dir, tempfile.TemporaryDirectory() as q_dir:
        with (
            redis_server(False, redis_dir) as redis,
            bare_server() as bare,
            bare_server("--ready-replies") as ready,
            quorumdb_nodes(1, "no", q_dir) as q,
        ):
            servers = (redis, bare, ready, Served(q.resp_port(0), q.processes[0].pid))
            for _ in range(rounds):
                for name, server in zip(names, servers, strict=True):
                    for test in ("SET", "GET"):  # one at a time, to time each alone
                        before = cpu_seconds(server.pid)
                        rate = redis_benchmark(server.port, requests, 16, tests=test.lower())
                        spent = cpu_seconds(server.pid) - before
                        rates.setdefault((name, test), []).append(rate[test])
                        cpu.setdefault((name, test), []).append(spent / requests * 1e6)
    rows: list[dict[str, object]] = []
    for test in ("SET", "GET"):
        redis_rate, bare_rate, ready_rate, q_rate = (
            statistics.median(rates[(name, test)]) for name in names
        )
        redis_cpu, bare_cpu, ready_cpu, q_cpu = (
            statistics.median(cpu[(name, test)]) for name in names
        )
        rows.append({
            "test": test, "redis_ops_per_second": round(redis_rate),
            "bare_ops_per_second": round(bare_rate),
            "bare_ready_replies_ops_per_second": round(ready_rate),
            "quorumdb_ops_per_second": round(q_rate),
            "bare_to_redis": round(bare_rate / redis_rate, 3),
            "bare_ready_replies_to_redis": round(ready_rate / redis_rate, 3),
            "quorumdb_to_redis": round(q_rate / redis_rate, 3),
            "quorumdb_to_bare_ready_replies": round(q_rate / ready_rate, 3),
            "redis_cpu_us": round(redis_cpu, 2), "bare_cpu_us": round(bare_cpu, 2),
            "bare_ready_replies_cpu_us": round(ready_cpu, 2), "quorumdb_cpu_us": round(q_cpu, 2),
        })  # fmt: skip
    return rows


def cluster_routing(seconds: float) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory() as data_dir, quorumdb_nodes(3, "always", data_dir) as q:
        first = q.resp_port(0)
        config = BenchConfig(
            targets=[f"redis://127.0.0.1:{first}", f"quorumdb://127.0.0.1:{first}"],
            clients=64,
            duration_seconds=seconds,
            preload=True,
            warmup_seconds=1.0,
            workload=WorkloadConfig(key_count=100_000, read_ratio=0.5, seed=1),
        )
        reports = run_bench(config)
    labels = ("all through node0 (2/3 forwarded)", "smart client (straight to owner)")
    return [
        {
            "routing": label,
            "ops_per_second": round(report.throughput_ops_per_second),
            "p50_ms": report.latency.p50_ms,
            "p99_ms": report.latency.p99_ms,
            "errors": report.errors,
        }
        for label, report in zip(labels, reports, strict=True)
    ]


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def memory(key_count: int) -> dict[str, object]:
    value = b"v" * 100
    batch = 1000
    with tempfile.TemporaryDirectory() as data_dir, quorumdb_nodes(1, "no", data_dir) as q:
        pid = q.processes[0].pid
        before = rss_bytes(pid)
        with socket.create_connection(("127.0.0.1", q.resp_port(0))) as connection:
            for start in range(0, key_count, batch):
                end = min(start + batch, key_count)
                connection.sendall(b"".join(
                    b"*3\r\n$3\r\nSET\r\n$16\r\nkey:%012d\r\n$100\r\n%s\r\n" % (index, value)
                    for index in range(start, end)
                ))  # fmt: skip
                expected = b"+OK\r\n" * (end - start)
                received = b""
                while len(received) < len(expected):
                    received += connection.recv(1 << 16)
                if received != expected:
                    raise RuntimeError(f"unexpected reply: {received[:200]!r}")
            connection.sendall(b"*1\r\n$6\r\nDBSIZE\r\n")
            key_total = int(connection.recv(100)[1:-2])
        time.sleep(1.0)
        after = rss_bytes(pid)
        # Allocated blocks, not the size: with writemap the file is as long as the map.
        storage_bytes = sum(f.stat().st_blocks * 512 for f in Path(data_dir).rglob("*.mdb"))
    return {
        "keys": key_total, "value_bytes": 100,
        "rss_empty_mb": round(before / 2**20, 1), "rss_loaded_mb": round(after / 2**20, 1),
        "data_file_mb": round(storage_bytes / 2**20, 1),
    }  # fmt: skip


def print_table(title: str, columns: dict[str, str], rows: list[dict[str, object]]) -> None:
    """A markdown table, ready to paste into BENCHMARKS.md; `columns` maps field to format."""
    print(f"\n## {title}")
    print("| " + " | ".join(columns) + " |\n" + "|---" * len(columns) + "|")
    for row in rows:
        cells = (form.format(row[name]) for name, form in columns.items())
        print("| " + " | ".join(cells) + " |", flush=True)


def machine() -> str:
    cpu = "unknown cpu"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    python = platform.python_version()
    return f"{os.cpu_count()} cores, {cpu}, Linux {platform.release()}, Python {python}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="redis,redis-random,durable,cluster,memory")
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cluster-seconds", type=float, default=10.0)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    ensure_redis()
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
    results: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "redis": version.stdout.strip(),
    }
    print(f"# {results['date']}; {results['machine']}\n# {results['redis']}", flush=True)
    for section, durable, random_keys in (
        ("redis", False, 0),
        ("redis-random", False, 100_000),
        ("durable", True, 0),
    ):
        if section not in sections:
            continue
        rows = compare_with_redis(durable, args.requests, args.rounds, random_keys)
        results[section] = rows
        keys = f" -r {random_keys}" if random_keys else ""
        print_table(
            f"{section}: redis-benchmark -t set,get -n {args.requests} -c 50{keys}",
            {"test": "{}", "pipeline": "{}", "redis_ops_per_second": "{:,}",
             "quorumdb_ops_per_second": "{:,}", "ratio": "{:.2f}",
             "round_ratio_min": "{:.2f}", "round_ratio_max": "{:.2f}"},
            rows,
        )  # fmt: skip
    if "ceiling" in sections:
        rows = ceiling(args.requests, args.rounds)
        results["ceiling"] = rows
        print_table(
            f"ceiling: redis-benchmark -t set,get -n {args.requests} -c 50 -P 16",
            {"test": "{}", "redis_ops_per_second": "{:,}", "bare_ops_per_second": "{:,}",
             "bare_ready_replies_ops_per_second": "{:,}", "quorumdb_ops_per_second": "{:,}",
             "bare_to_redis": "{:.2f}", "bare_ready_replies_to_redis": "{:.2f}",
             "quorumdb_to_redis": "{:.2f}", "quorumdb_to_bare_ready_replies": "{:.2f}"},
            rows,
        )  # fmt: skip
        print_table(
            "ceiling: server CPU time per request, microseconds (user + system)",
            {"test": "{}", "redis_cpu_us": "{:.2f}", "bare_cpu_us": "{:.2f}",
             "bare_ready_replies_cpu_us": "{:.2f}", "quorumdb_cpu_us": "{:.2f}"},
            rows,
        )  # fmt: skip
    if "cluster" in sections:
        rows = cluster_routing(args.cluster_seconds)
        results["cluster"] = rows
        print_table(
            "cluster: 3 nodes, fsync always, 64 clients, 50% reads, 100k keys",
            {"routing": "{}", "ops_per_second": "{:,}", "p50_ms": "{:.2f}", "p99_ms": "{:.2f}",
             "errors": "{}"},
            rows,
        )  # fmt: skip
    if "memory" in sections:
        memory_row = memory(args.keys)
        results["memory"] = memory_row
        print(
            f"\n## memory: {memory_row['keys']:,} keys x 100 B: RSS {memory_row['rss_loaded_mb']}"
            f" MB (empty node {memory_row['rss_empty_mb']} MB; LMDB file "
            f"{memory_row['data_file_mb']} MB)",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
