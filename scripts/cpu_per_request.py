"""CPU time a server process spends per request under redis-benchmark, robust to a busy machine.

Wall-clock throughput on a shared 2-core machine moves with whatever else runs; the
server's own CPU seconds per request moves much less, so use this to compare changes.

    python scripts/cpu_per_request.py [--requests 200000] [--pipeline 16] [--redis]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

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


def measure(
    pid: int, port: int, test: str, requests: int, pipeline: int
) -> tuple[float, float, float]:
    """CPU microseconds per request, the system (kernel) share of them, requests/s."""
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
    spent = user_after - user_before + system_after - system_before
    system_share = (system_after - system_before) / spent if spent else 0.0
    return spent / requests * 1e6, system_share, requests / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--pipeline", type=int, default=16)
    parser.add_argument("--fsync", default="no")
    parser.add_argument("--redis", action="store_true", help="also measure redis-server")
    args = parser.parse_args()
    if shutil.which("redis-benchmark") is None:
        print("redis-benchmark not found (apt-get install redis-tools)", file=sys.stderr)
        return 2
    servers: list[tuple[str, subprocess.Popen[bytes], int]] = []
    with tempfile.TemporaryDirectory() as data_dir:
        base = free_base_port(1)
        node = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "quorumdb",
                "node",
                "--port",
                str(base),
                "--data-dir",
                data_dir,
                "--fsync",
                args.fsync,
                "--log-level",
                "warning",
            ]
        )
        servers.append(("quorumdb", node, base))
        if args.redis:
            redis_port = free_base_port(1)
            redis = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(redis_port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    data_dir,
                ],
                stdout=subprocess.DEVNULL,
            )
            servers.append(("redis", redis, redis_port))
        try:
            for _, _, port in servers:
                wait_for_port("127.0.0.1", port)
            for name, process, port in servers:
                for test in ("set", "get"):
                    cpu_us, system_share, rate = measure(
                        process.pid, port, test, args.requests, args.pipeline
                    )
                    print(
                        f"{name:9s} {test:4s} P{args.pipeline:<3d} cpu {cpu_us:6.2f} us/request"
                        f" ({system_share:4.0%} in the kernel)"
                        f"  {rate:10,.0f} requests/s (wall, noisy)"
                    )
        finally:
            for _, process, _ in servers:
                process.terminate()
                process.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
