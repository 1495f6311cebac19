"""CPU time a server process spends per request under redis-benchmark, robust to a busy machine.

Wall-clock throughput on a shared 2-core machine moves with whatever else runs; the
server's own CPU seconds per request moves much less, so use this to compare changes.

    python scripts/cpu_per_request.py [--requests 200000] [--pipeline 16] [--redis]
    python scripts/cpu_per_request.py --tree /tmp/before --tree . --rounds 6

With `--tree` (repeated), one node per checkout runs side by side and they take turns,
`--rounds` times: the way to compare two builds on a noisy machine.

With `--perf`, `perf record` samples each server while it serves and the script prints
how much of its time went to the kernel and, of that, to waking the client
(`sock_def_readable`: a write to a socket whose reader sleeps wakes it, which on a
virtual machine is expensive). Needs `perf` (apt-get install linux-perf) and the right
to attach to the process (root, or kernel.perf_event_paranoid <= 1).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from cluster_harness import free_base_port, wait_for_port  # noqa: E402


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds the process has used (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


# The kernel function a write reaches when it wakes the socket's sleeping reader.
WAKE_SYMBOL = "sock_def_readable"


def perf_shares(perf_data: str) -> tuple[float, float]:
    """From a `perf record -g` file: the share of samples in the kernel, and the share
    under `WAKE_SYMBOL` (waking the other end), both in percent."""
    report = subprocess.run(
        ["perf", "report", "-i", perf_data, "--children", "--sort", "sym", "-g", "none",
         "--stdio"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    kernel = wake = 0.0
    for line in report.splitlines():
        fields = line.split()
        # "  16.17%     0.21%  [k] sock_def_readable": children, self, kind, symbol
        if len(fields) < 4 or not fields[0].endswith("%") or not fields[1].endswith("%"):
            continue
        if fields[2] == "[k]":
            kernel += float(fields[1].rstrip("%"))
            if fields[3] == WAKE_SYMBOL:
                wake = float(fields[0].rstrip("%"))
    return kernel, wake


def measure(
    pid: int, port: int, test: str, requests: int, pipeline: int, perf_data: str | None = None
) -> tuple[float, float, float]:
    """CPU microseconds per request, the system (kernel) share of them, requests/s. With
    `perf_data`, the server is also sampled by `perf record` into that file meanwhile."""
    recorder = None
    if perf_data is not None:
        recorder = subprocess.Popen(
            ["perf", "record", "-F", "999", "-g", "-p", str(pid), "-o", perf_data, "-q"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.5)  # perf attaches before the load starts
    user_before, system_before = cpu_times(pid)
    started = time.monotonic()
    subprocess.run(
        [
            "redis-benchmark",
            "-p",
            str(port),
            "-t",
            test,
            "-n",
            str(requests),
            "-c",
            "50",
            "-P",
            str(pipeline),
            "-q",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    elapsed = time.monotonic() - started
    user_after, system_after = cpu_times(pid)
    if recorder is not None:
        recorder.send_signal(signal.SIGINT)
        recorder.wait(30)
    spent = user_after - user_before + system_after - system_before
    system_share = (system_after - system_before) / spent if spent else 0.0
    return spent / requests * 1e6, system_share, requests / elapsed


def start_node(
    source: Path | None, data_dir: str, fsync: str
) -> tuple[subprocess.Popen[bytes], int]:
    """A quorumdb node from `source` (a checkout: its src/ goes first on the path), or
    from this environment's quorumdb."""
    port = free_base_port(1)
    environment = dict(os.environ)
    if source is not None:
        paths = [str(source / "src"), environment.get("PYTHONPATH", "")]
        environment["PYTHONPATH"] = os.pathsep.join(path for path in paths if path)
    command = [sys.executable, "-m", "quorumdb", "node", "--port", str(port),
               "--data-dir", data_dir, "--fsync", fsync, "--log-level", "warning"]  # fmt: skip
    return subprocess.Popen(command, env=environment), port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--pipeline", type=int, default=16)
    parser.add_argument("--fsync", default="no")
    parser.add_argument("--redis", action="store_true", help="also measure redis-server")
    parser.add_argument(
        "--tree",
        action="append",
        type=Path,
        help="a checkout to measure (repeat to compare builds: e.g. a `git worktree` of "
        "the commit before a change and this one); default: this environment's quorumdb",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="servers take turns this many times; medians"
    )
    parser.add_argument(
        "--perf",
        action="store_true",
        help="also sample each server with `perf record` and print its kernel share and "
        "the share spent waking the client",
    )
    args = parser.parse_args()
    if shutil.which("redis-benchmark") is None:
        print("redis-benchmark not found (apt-get install redis-tools)", file=sys.stderr)
        return 2
    if args.perf and shutil.which("perf") is None:
        print("perf not found (apt-get install linux-perf)", file=sys.stderr)
        return 2
    trees: list[Path | None] = list(args.tree) if args.tree else [None]
    servers: list[tuple[str, subprocess.Popen[bytes], int]] = []
    samples: dict[tuple[str, str], list[float]] = {}  # CPU us per request
    wake_samples: dict[tuple[str, str], list[float]] = {}  # % of perf samples waking
    with tempfile.TemporaryDirectory() as data_dir:
        try:
            for index, tree in enumerate(trees):
                node_dir = os.path.join(data_dir, f"node{index}")
                os.mkdir(node_dir)
                node, port = start_node(tree, node_dir, args.fsync)
                name = "quorumdb" if tree is None else f"{index}:{tree.resolve().name}"
                servers.append((name, node, port))
            if args.redis:
                redis_port = free_base_port(1)
                redis = subprocess.Popen(
                    ["redis-server", "--port", str(redis_port), "--save", "",
                     "--appendonly", "no", "--dir", data_dir],
                    stdout=subprocess.DEVNULL,
                )  # fmt: skip
                servers.append(("redis", redis, redis_port))
            for _, _, port in servers:
                wait_for_port("127.0.0.1", port)
            for round_number in range(1, args.rounds + 1):
                for name, process, port in servers:
                    for test in ("set", "get"):
                        perf_data = os.path.join(data_dir, "perf.data") if args.perf else None
                        cpu_us, system_share, rate = measure(
                            process.pid, port, test, args.requests, args.pipeline, perf_data
                        )
                        samples.setdefault((name, test), []).append(cpu_us)
                        sampled = ""
                        if perf_data is not None:
                            kernel, wake = perf_shares(perf_data)
                            wake_samples.setdefault((name, test), []).append(wake)
                            sampled = f"  perf: {kernel:4.1f} % kernel, {wake:4.1f} % waking"
                        print(
                            f"round {round_number} {name:12s} {test:4s} P{args.pipeline:<3d} "
                            f"cpu {cpu_us:6.2f} us/request ({system_share:4.0%} in the kernel)"
                            f"  {rate:10,.0f} requests/s (wall, noisy){sampled}",
                            flush=True,
                        )
        finally:
            for _, process, _ in servers:
                process.terminate()
                process.wait(10)
    if args.rounds > 1:
        for label, table, unit in (
            ("cpu", samples, "us/request"),
            ("waking", wake_samples, "% of samples"),
        ):
            for (name, test), values in table.items():
                print(
                    f"median {name:12s} {test:4s} {label} {statistics.median(values):6.2f} "
                    f"{unit} (runs: {', '.join(f'{value:.2f}' for value in values)})"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
