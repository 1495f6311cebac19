"""Failover time of a single-leader partition, with real node processes on loopback.

A 3-node cluster (fsync on) with keyspace `orders` (3 replicas, `--sync` mode, default
majority). Each run: wait until every replica is caught up; find the leader of the
partition of key `probe`; SIGKILL it; from then on, write `probe` through the survivors
(QUORUMDB.SET, each attempt with a 0.25 s socket timeout, retried at once on any error)
until a write is acknowledged in a newer epoch. The time from the kill to that
acknowledgement is the failover time. Then restart the killed node on its data, wait
until it has caught up, and repeat `--runs` times. Runs where the killed node also led
the metadata controller (so Raft elected a new controller leader first) are counted
separately.

Every process is started here and stopped here by its PID (SIGTERM, then SIGKILL).

Run: PYTHONPATH=src python scripts/failover_benchmark.py [--runs 20] [--sync majority] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when imported by a test
from machine_facts import machine  # noqa: E402

from cluster_harness import LocalTestCluster  # noqa: E402

KEYSPACE = "orders"
PROBE_KEY = b"probe"
ATTEMPT_TIMEOUT_SECONDS = 0.25
RUN_TIMEOUT_SECONDS = 30.0
SETTLE_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Run:
    killed: str
    killed_controller_leader: bool
    failover_ms: float
    attempts: int
    old_epoch: int
    new_epoch: int


def cluster_view(cluster: LocalTestCluster, index: int) -> dict[str, object]:
    document: dict[str, object] = httpx.get(
        f"{cluster.http_url(index)}/v1/cluster", timeout=2
    ).json()
    return document


def probe_leader(cluster: LocalTestCluster, index: int) -> tuple[str, int]:
    """The node leading the probe key's partition, and its epoch, as node `index` sees it."""
    from quorumdb.core.partitioning import layout_from_dict

    document = cluster_view(cluster, index)
    placement = document["keyspaces"][KEYSPACE]  # type: ignore[index]
    layout = layout_from_dict(placement["layout"])
    partition = layout.locate(PROBE_KEY)
    entry = placement["replica_sets"][str(partition)]
    return str(entry["replicas"][0]), int(entry["epoch"])


def settled(cluster: LocalTestCluster) -> bool:
    """Every node up, one controller leader, every follower of every leader caught up."""
    try:
        views = [cluster_view(cluster, index) for index in sorted(cluster.processes)]
    except httpx.HTTPError:
        return False
    leaders = {view["controller"]["leader"] for view in views}  # type: ignore[index]
    if len(leaders) != 1 or None in leaders:
        return False
    for view in views:
        for row in view["replicas"]:  # type: ignore[attr-defined]
            for progress in row.get("followers", {}).values():
                if progress["lag"] != 0:
                    return False
    return True


def wait_settled(cluster: LocalTestCluster) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    while not settled(cluster):
        if time.monotonic() > deadline:
            raise TimeoutError("the cluster did not settle")
        time.sleep(0.1)


def write_until_failed_over(
    cluster: LocalTestCluster, survivors: list[int], old_epoch: int
) -> tuple[int, int]:
    """Write the probe key through the survivors until a newer epoch acknowledges it."""
    clients = [
        redis.Redis(port=cluster.resp_port(index), socket_timeout=ATTEMPT_TIMEOUT_SECONDS)
        for index in survivors
    ]
    try:
        for client in clients:
            client.execute_command("QUORUMDB.KEYSPACE", KEYSPACE)
        attempts = 0
        deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            client = clients[attempts % len(clients)]
            attempts += 1
            try:
                reply = client.execute_command("QUORUMDB.SET", PROBE_KEY, b"v%d" % attempts)
            except (redis.ResponseError, redis.ConnectionError, redis.TimeoutError):
                continue
            if reply[0] == b"OK" and reply[2] > old_epoch:
                return attempts, int(reply[2])
        raise TimeoutError("no write was acknowledged by a new leader")
    finally:
        for client in clients:
            client.close()


def run(runs: int, sync: str, data_dir: Path) -> list[Run]:
    results: list[Run] = []
    with LocalTestCluster(3, data_dir) as cluster:
        body = {
            "name": KEYSPACE,
            "partitioning": "fixed:8",
            "replication": "single-leader",
            "replicas": 3,
            "sync": sync,
        }
        created = httpx.post(f"{cluster.http_url(0)}/v1/keyspaces", json=body, timeout=10)
        created.raise_for_status()
        for number in range(runs):
            wait_settled(cluster)
            leader, old_epoch = probe_leader(cluster, 0)
            controller = cluster.wait_controller_leader()
            victim = int(leader.removeprefix("node"))
            survivors = [index for index in sorted(cluster.processes) if index != victim]
            started = time.monotonic()
            cluster.kill_node(victim)
            attempts, new_epoch = write_until_failed_over(cluster, survivors, old_epoch)
            failover_ms = (time.monotonic() - started) * 1000
            results.append(
                Run(leader, leader == controller, failover_ms, attempts, old_epoch, new_epoch)
            )
            print(
                f"run {number + 1}: killed {leader}"
                f"{' (controller leader)' if leader == controller else ''},"
                f" failover {failover_ms:.0f} ms, epoch {old_epoch} -> {new_epoch}",
                file=sys.stderr,
            )
            cluster.start_node(victim)
    return results


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary(results: list[Run]) -> dict[str, object]:
    times = [result.failover_ms for result in results]
    plain = [r.failover_ms for r in results if not r.killed_controller_leader]
    with_controller = [r.failover_ms for r in results if r.killed_controller_leader]
    document: dict[str, object] = {
        "runs": len(results),
        "median_ms": round(statistics.median(times), 1),
        "p99_ms": round(percentile(times, 0.99), 1),
        "min_ms": round(min(times), 1),
        "max_ms": round(max(times), 1),
        "killed_controller_leader_runs": len(with_controller),
    }
    if plain:
        document["median_ms_partition_leader_only"] = round(statistics.median(plain), 1)
    if with_controller:
        document["median_ms_also_controller_leader"] = round(statistics.median(with_controller), 1)
    return document


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--sync", default="majority", choices=["all", "majority", "semi", "async"])
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="quorumdb-failover-") as directory:
        results = run(args.runs, args.sync, Path(directory))
    document = {
        "machine": machine(Path(__file__).resolve().parent.parent),
        "sync": args.sync,
        "summary": summary(results),
        "runs": [asdict(result) for result in results],
    }
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        for key, value in document["summary"].items():  # type: ignore[attr-defined]
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
