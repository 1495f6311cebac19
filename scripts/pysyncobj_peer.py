"""A 3-replica PySyncObj key-value store (its `ReplDict`), the Python peer of
scripts/replication_benchmark.py.

`replica` runs one replica until SIGTERM, handing the leadership to the driver whenever
it leads (a set through a follower is forwarded to the leader, adding a hop). `drive` runs
a replica too and, once it leads, has `--threads` threads each doing
`ReplDict.set(key, value, sync=True)` of random keys (the call returns when the write is
committed by a majority and applied here) for `--duration` seconds after `--warmup`; it
prints one JSON object. PySyncObj keeps its log in memory here (no journal file, so no
fsync), as in the issue's reference figure.

Run: PYTHONPATH=<dir with pysyncobj> python scripts/pysyncobj_peer.py replica|drive ...
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
import time

from pysyncobj import SyncObj, SyncObjConf  # type: ignore[import-not-found]
from pysyncobj.batteries import ReplDict  # type: ignore[import-not-found]

READY_TIMEOUT_SECONDS = 30.0
REQUEST_TIMEOUT_SECONDS = 10.0
DRIVER_ELECTION_TIMEOUT_SECONDS = (0.4, 0.6)
REPLICA_ELECTION_TIMEOUT_SECONDS = (1.5, 2.0)
APPEND_ENTRIES_USE_BATCH = False
"""PySyncObj's default (True) sends new entries only with the next 100 ms append-entries
beat: 64 threads with one synchronous set each then make about 600 sets/s (p50 105 ms).
False sends each entry at once and wakes the ticking thread through a pipe."""


def start_replica(
    address: str, partners: list[str], driver: bool = False
) -> tuple[SyncObj, ReplDict]:
    """The driver's election timeout is shorter, so it is normally elected leader: a set
    through a follower waits for the next append-entries beat (100 ms) to learn the commit."""
    store = ReplDict()
    timeouts = DRIVER_ELECTION_TIMEOUT_SECONDS if driver else REPLICA_ELECTION_TIMEOUT_SECONDS
    conf = SyncObjConf(
        dynamicMembershipChange=False,
        appendEntriesUseBatch=APPEND_ENTRIES_USE_BATCH,
        raftMinTimeout=timeouts[0],
        raftMaxTimeout=timeouts[1],
    )
    return SyncObj(address, partners, consumers=[store], conf=conf), store


def serve(address: str, partners: list[str], driver_address: str) -> int:
    """Run until SIGTERM; while this replica leads, hand the leadership to the driver."""
    replica, _ = start_replica(address, partners)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.wait(0.2):
        if replica._isLeader():
            replica.transferLeadership(node=driver_address)
    replica.destroy()
    return 0


def percentile_ms(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index] * 1000.0


def drive(args: argparse.Namespace) -> int:
    replica, store = start_replica(args.address, args.partners.split(","), driver=True)
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while not (replica.isReady() and replica._isLeader()):
        if time.monotonic() > deadline:
            print("pysyncobj_peer: the driver was not elected within 30 s", file=sys.stderr)
            return 1
        time.sleep(0.05)
    value = "v" * args.value_size
    start = time.perf_counter()
    measure_start = start + args.warmup
    end = measure_start + args.duration
    latencies: list[list[float]] = [[] for _ in range(args.threads)]
    errors = [0] * args.threads
    last = [measure_start] * args.threads

    def work(index: int) -> None:
        chooser = random.Random(index)
        while True:
            began = time.perf_counter()
            if began >= end:
                return
            key = f"key:{chooser.randrange(args.keys):012d}"
            try:
                store.set(key, value, sync=True, timeout=REQUEST_TIMEOUT_SECONDS)
                failed = False
            except Exception:  # noqa: BLE001 - any failure counts as an error
                failed = True
            ended = time.perf_counter()
            if began < measure_start:
                continue
            last[index] = ended
            if failed:
                errors[index] += 1
            else:
                latencies[index].append(ended - began)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ordered = sorted(latency for per_thread in latencies for latency in per_thread)
    elapsed = max(max(last) - measure_start, 1e-9)
    document = {
        "driver": f"pysyncobj ReplDict.set(sync=True), {args.threads} threads in the leader",
        "threads": args.threads,
        "count": len(ordered) + sum(errors),
        "errors": sum(errors),
        "elapsed_seconds": elapsed,
        "throughput_ops_per_second": len(ordered) / elapsed,
        "latency_ms": {
            "p50": percentile_ms(ordered, 0.50),
            "p90": percentile_ms(ordered, 0.90),
            "p99": percentile_ms(ordered, 0.99),
            "p99_9": percentile_ms(ordered, 0.999),
            "max": percentile_ms(ordered, 1.0),
        },
    }
    print(json.dumps(document))
    replica.destroy()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=["replica", "drive"])
    parser.add_argument("--address", required=True, help="host:port of this replica")
    parser.add_argument("--partners", required=True, help="the other replicas, comma-joined")
    parser.add_argument("--driver", help="replica role: the driver's host:port")
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--keys", type=int, default=100_000)
    args = parser.parse_args()
    if args.role == "replica":
        return serve(args.address, args.partners.split(","), args.driver)
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
