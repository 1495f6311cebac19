"""`quorumdb bench --target quorumdb://...` on a real 3-node cluster follows a partition
leader's failover: the leader is SIGKILLed while the bench runs, and the bench goes on
writing that partition at its new leader, finishes on time and reports its errors.

The evidence that the partition was written after the kill is the partition's log: the
new leader's last sequence against what a survivor held right after the kill. A bench
that kept its first map never asks for the partition again (its clients draw only keys of
their own node, and the dead node's clients lost their connections), so the log would
not grow by more than the few writes in flight at the kill."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx

from cluster_harness import LocalTestCluster, wait_for

KEYSPACE = "benchfollow"
BENCH_SECONDS = 9.0
WRITES_AFTER_KILL_MIN = 50


def cluster_view(cluster: LocalTestCluster, index: int) -> dict[str, object]:
    document: dict[str, object] = httpx.get(
        f"{cluster.http_url(index)}/v1/cluster", timeout=5
    ).json()
    return document


def leaders(cluster: LocalTestCluster, index: int) -> dict[int, str]:
    """partition -> its leader, as node `index` sees it."""
    keyspaces = cluster_view(cluster, index)["keyspaces"]
    sets = keyspaces[KEYSPACE]["replica_sets"]  # type: ignore[index]
    return {int(partition): entry["replicas"][0] for partition, entry in sets.items()}


def last_sequence(cluster: LocalTestCluster, index: int, partition: int) -> int:
    """The last log sequence of node `index`'s replica of `partition`."""
    rows = cluster_view(cluster, index)["replicas"]
    for row in rows:  # type: ignore[attr-defined]
        if row["keyspace"] == KEYSPACE and row["partition"] == partition:
            return int(row["last"][1])
    raise AssertionError(f"node{index} holds no replica of partition {partition}")


def test_bench_follows_a_killed_partition_leader(tmp_path) -> None:
    with LocalTestCluster(3, tmp_path) as cluster:
        body = {"name": KEYSPACE, "partitioning": "fixed:3", "replication": "single-leader",
                "replicas": 3, "sync": "majority"}  # fmt: skip
        created = httpx.post(f"{cluster.http_url(0)}/v1/keyspaces", json=body, timeout=10)
        assert created.status_code == 201, created.text
        wait_for(lambda: all(len(leaders(cluster, index)) == 3 for index in range(3)))
        # The victim leads a partition and is not the controller leader (so the failover
        # does not wait for a controller election first).
        controller = cluster.wait_controller_leader()
        led = leaders(cluster, 0)
        victim = next(
            index
            for index in range(3)
            if f"node{index}" != controller and f"node{index}" in led.values()
        )
        partition = next(p for p, node in led.items() if node == f"node{victim}")
        survivors = [index for index in range(3) if index != victim]
        wait_for(lambda: all(len(cluster_view(cluster, i)["replicas"]) == 3 for i in range(3)))  # type: ignore[arg-type]
        before_bench = last_sequence(cluster, victim, partition)

        seeds = ",".join(f"127.0.0.1:{cluster.resp_port(index)}" for index in range(3))
        command = [
            sys.executable, "-m", "quorumdb", "bench", "--target", f"quorumdb://{seeds}",
            "--keyspace", KEYSPACE, "--clients", "6", "--keys", "3000",
            "--duration", str(BENCH_SECONDS), "--json",
        ]  # fmt: skip
        bench = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # Kill the leader once the bench is writing its partition.
            wait_for(lambda: last_sequence(cluster, victim, partition) >= before_bench + 20)
            cluster.kill_node(victim)
            at_kill = max(last_sequence(cluster, index, partition) for index in survivors)
            wait_for(lambda: leaders(cluster, survivors[0])[partition] != f"node{victim}")
            failed_over_at = time.monotonic()
            stdout, stderr = bench.communicate(timeout=BENCH_SECONDS + 30)
        finally:
            if bench.poll() is None:
                bench.kill()
                bench.wait(10)
        assert bench.returncode == 0, stderr[-3000:]
        print(f"bench ended {time.monotonic() - failed_over_at:.1f} s after the failover")
        successor = int(leaders(cluster, survivors[0])[partition].removeprefix("node"))
        after = last_sequence(cluster, successor, partition)

    [report] = json.loads(stdout)["targets"]
    print({key: report.get(key) for key in ("count", "errors", "retries", "map_refreshes")})
    print("first error:", report["first_error"])
    print(f"partition {partition}: sequence {at_kill} at the kill, {after} at the end")
    assert report["failure"] is None
    # The partition whose leader was killed was written at its new leader.
    assert after - at_kill >= WRITES_AFTER_KILL_MIN
    # The failover was noticed and followed; errors are reported, not fatal.
    assert report["retries"] > 0 and report["map_refreshes"] > 0
    assert isinstance(report["errors"], int) and report["count"] - report["errors"] > 0
