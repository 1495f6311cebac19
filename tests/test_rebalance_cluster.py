"""Real processes: a loaded 3-node cluster grows to 4 (a node joins, the plan is approved,
partitions stream while clients write and read) and shrinks back to 3 (the node is
decommissioned). No acknowledged write is lost and no read misses an existing key."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from cluster_harness import LocalTestCluster, free_base_port
from quorumdb.check.linearizability import Operation, RegisterModel, check_per_key

KEY_COUNT = 600
PRELOAD_VALUE = "0" * 1_000  # 600 kB in all: the throttled copy takes seconds
LOAD_SECONDS_MAX = 120.0


class Load:
    """Clients writing and reading through every node, bounded in time, recording a
    history that the linearizability checker judges per key afterwards."""

    def __init__(self, cluster: LocalTestCluster, seed: int) -> None:
        self.cluster = cluster
        self.rng = random.Random(seed)
        self.history: list[Operation] = []
        self.acknowledged = 0
        self.refused = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.pause_requested = threading.Event()
        self.idle = threading.Semaphore(0)
        self.resumed = threading.Event()
        self.values: dict[str, bytes] = {}  # what a quiet cluster must hold (see pause)

    def preload(self) -> None:
        started = _now_us()
        with redis.Redis(port=self.cluster.resp_port(0), socket_timeout=10) as client:
            pipeline = client.pipeline(transaction=False)
            for index in range(KEY_COUNT):
                pipeline.set(f"load:{index}", PRELOAD_VALUE)
            assert all(pipeline.execute())
        finished = _now_us()
        for index in range(KEY_COUNT):
            key = f"load:{index}"
            self.history.append(Operation(-1, "put", key, PRELOAD_VALUE, True, started, finished))

    def start(self, ports: list[int], clients: int = 4) -> None:
        for number in range(clients):
            thread = threading.Thread(target=self._run, args=(ports, number), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _run(self, ports: list[int], number: int) -> None:
        rng = random.Random(self.rng.random())
        deadline = time.monotonic() + LOAD_SECONDS_MAX
        connections = [redis.Redis(port=port, socket_timeout=10) for port in ports]
        errors = (redis.ResponseError, redis.ConnectionError, redis.TimeoutError)
        step = 0
        while not self.stop.is_set() and time.monotonic() < deadline:
            if self.pause_requested.is_set():
                self.idle.release()  # no request of ours is in flight
                self.resumed.wait(60)
            step += 1
            key = f"load:{rng.randrange(KEY_COUNT)}"
            client = connections[rng.randrange(len(connections))]
            invoked = _now_us()
            if rng.random() < 0.5:
                value = f"{number}-{step}"
                try:
                    client.set(key, value)
                    completed: int | None = _now_us()
                except errors:
                    completed = None  # perhaps applied, perhaps not: indeterminate
                with self.lock:
                    self.history.append(
                        Operation(number, "put", key, value, True, invoked, completed)
                    )
                    if completed is None:
                        self.refused += 1
                    else:
                        self.acknowledged += 1
            else:
                try:
                    read = client.get(key)
                except errors:
                    with self.lock:
                        self.refused += 1
                    continue  # a failed read changes nothing
                result = None if read is None else read.decode()
                with self.lock:
                    self.history.append(
                        Operation(number, "read", key, None, result, invoked, _now_us())
                    )
        for connection in connections:
            connection.close()

    def pause(self) -> None:
        """Until `resume`: every client waits between requests."""
        self.resumed.clear()
        self.pause_requested.set()
        for _ in self.threads:
            assert self.idle.acquire(timeout=30)

    def resume(self) -> None:
        self.pause_requested.clear()
        self.resumed.set()

    def finish(self) -> None:
        self.resumed.set()
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def verdicts(self) -> list[str]:
        results = check_per_key(self.history, lambda key: RegisterModel())
        return [
            f"{key}: {result.verdict.value} {result.detail}"
            for key, result in results.items()
            if not result.ok
        ]


def _now_us() -> int:
    return time.monotonic_ns() // 1_000


def rebalance(cluster: LocalTestCluster, action: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "quorumdb", "rebalance", action,
         "--http", f"127.0.0.1:{cluster.members[1].http_port}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def wait_plan(cluster: LocalTestCluster, state: str, seconds: float = 90.0) -> dict:
    deadline = time.monotonic() + seconds
    plan = None
    while time.monotonic() < deadline:
        plan = httpx.get(f"{cluster.http_url(0)}/v1/rebalance", timeout=10).json()["plan"]
        if plan is not None and plan["state"] == state:
            return plan
        time.sleep(0.2)
    raise AssertionError(f"plan never reached {state}: {json.dumps(plan)[:2000]}")


def read_back(cluster: LocalTestCluster, load: Load, indexes: list[int]) -> None:
    """Read every key through each node, recorded in the history like any read."""
    keys = [f"load:{index}" for index in range(KEY_COUNT)]
    for index in indexes:
        with redis.Redis(port=cluster.resp_port(index), socket_timeout=10) as client:
            invoked = _now_us()
            values = client.mget(keys)
            completed = _now_us()
        for key, value in zip(keys, values, strict=True):
            result = None if value is None else value.decode()
            load.history.append(
                Operation(100 + index, "read", key, None, result, invoked, completed)
            )


@pytest.fixture
def grown_cluster(tmp_path: Path):
    cluster = LocalTestCluster(3, tmp_path / "grow", base_port=free_base_port(4))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def test_grow_from_3_to_4_and_shrink_back_under_load(grown_cluster: LocalTestCluster) -> None:
    cluster = grown_cluster
    seed = 5
    print(f"seed {seed}: pytest tests/test_rebalance_cluster.py")
    # A slow copy, so the load overlaps it: 8 KiB/s per transfer, ~37 kB each.
    settings = {"throttle_bytes_per_second": 8_192}
    assert httpx.put(f"{cluster.http_url(2)}/v1/rebalance", json=settings).status_code == 200
    load = Load(cluster, seed)
    load.preload()
    load.start([cluster.resp_port(index) for index in range(3)])
    try:
        cluster.join_node(3)
        plan = wait_plan(cluster, "proposed")  # manual mode: shown, waiting for approval
        assert {transfer["target_node"] for transfer in plan["transfers"]} == {"node3"}
        assert len(plan["transfers"]) == 16  # 64 partitions: a quarter moves to node3
        rebalance(cluster, "approve")
        done = wait_plan(cluster, "done")
        document = httpx.get(f"{cluster.http_url(0)}/v1/cluster", timeout=10).json()
        progress = document["rebalance"]
        assert progress["plan_id"] == done["plan_id"] and progress["state"] == "done"
        assert progress["transfers_done"] == progress["transfers_total"] == 16
        assert progress["copied_bytes"] > 0  # what the targets reported receiving
        metrics = httpx.get(f"{cluster.http_url(3)}/metrics", timeout=10).text
        assert 'quorumdb_rebalance_transfers_done{node="node3"} 16.0' in metrics
        owners = document["keyspaces"]["default"]["layout"]["owners"]
        assert {owner: owners.count(owner) for owner in set(owners)} == {
            "node0": 16, "node1": 16, "node2": 16, "node3": 16,
        }  # fmt: skip
        read_back(cluster, load, [0, 1, 2, 3])

        leave = httpx.post(f"{cluster.http_url(0)}/v1/members/node3/decommission", timeout=30)
        assert leave.status_code == 200, leave.text
        plan = wait_plan(cluster, "proposed")
        assert {transfer["source_node"] for transfer in plan["transfers"]} == {"node3"}
        rebalance(cluster, "approve")
        wait_plan(cluster, "done")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            document = httpx.get(f"{cluster.http_url(0)}/v1/cluster", timeout=10).json()
            if "node3" not in {member["node_id"] for member in document["members"]}:
                break
            time.sleep(0.2)
        assert "node3" not in {member["node_id"] for member in document["members"]}
    finally:
        load.finish()
    read_back(cluster, load, [0, 1, 2])
    print(f"{load.acknowledged} writes acknowledged, {load.refused} refused or failed,"
          f" {len(load.history)} operations checked")  # fmt: skip
    assert load.acknowledged > 200
    violations = load.verdicts()
    assert not violations, violations[:10]
    cluster.stop_node(3)
