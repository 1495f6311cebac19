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

KEY_COUNT = 600
LOAD_SECONDS_MAX = 120.0


class Load:
    """Clients writing and reading through every node, bounded in time, recording what
    was acknowledged and every read that came back wrong."""

    def __init__(self, cluster: LocalTestCluster, seed: int) -> None:
        self.cluster = cluster
        self.rng = random.Random(seed)
        # key -> values it may hold: the last acknowledged and any attempted after it
        self.possible: dict[str, set[bytes]] = {}
        self.acknowledged = 0
        self.refused = 0
        self.misses: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.pause_requested = threading.Event()
        self.idle = threading.Semaphore(0)
        self.resumed = threading.Event()

    def preload(self) -> None:
        with redis.Redis(port=self.cluster.resp_port(0), socket_timeout=10) as client:
            pipeline = client.pipeline(transaction=False)
            for index in range(KEY_COUNT):
                pipeline.set(f"load:{index}", b"0")
            assert all(pipeline.execute())
        self.possible = {f"load:{index}": {b"0"} for index in range(KEY_COUNT)}

    def start(self, ports: list[int], clients: int = 4) -> None:
        for number in range(clients):
            thread = threading.Thread(target=self._run, args=(ports, number), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _run(self, ports: list[int], number: int) -> None:
        rng = random.Random(self.rng.random())
        deadline = time.monotonic() + LOAD_SECONDS_MAX
        connections = [redis.Redis(port=port, socket_timeout=10) for port in ports]
        step = 0
        while not self.stop.is_set() and time.monotonic() < deadline:
            if self.pause_requested.is_set():
                self.idle.release()  # no request of ours is in flight
                self.resumed.wait(60)
            step += 1
            key = f"load:{rng.randrange(KEY_COUNT)}"
            client = connections[rng.randrange(len(connections))]
            if rng.random() < 0.5:
                value = f"{number}-{step}".encode()
                with self.lock:
                    self.possible[key].add(value)
                try:
                    client.set(key, value)
                except (redis.ResponseError, redis.ConnectionError, redis.TimeoutError):
                    with self.lock:
                        self.refused += 1
                    continue
                with self.lock:
                    self.possible[key] = {value}  # acknowledged: nothing older may show
                    self.acknowledged += 1
            else:
                with self.lock:
                    allowed = set(self.possible[key])
                try:
                    value = client.get(key)
                except (redis.ResponseError, redis.ConnectionError, redis.TimeoutError):
                    with self.lock:
                        self.refused += 1
                    continue
                with self.lock:
                    if value not in allowed and value not in self.possible[key]:
                        self.misses.append(f"{key}: read {value!r}, expected one of {allowed}")
        for connection in connections:
            connection.close()

    def pause(self) -> None:
        """Until `resume`: every client waits between requests, so what was acknowledged
        stands still while a test reads it all back."""
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


def check_everything(cluster: LocalTestCluster, load: Load, indexes: list[int]) -> None:
    keys = sorted(load.possible)
    for index in indexes:
        with redis.Redis(port=cluster.resp_port(index), socket_timeout=10) as client:
            values = client.mget(keys)
        for key, value in zip(keys, values, strict=True):
            assert value in load.possible[key], (index, key, value, load.possible[key])


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
    # A slow copy, so the load overlaps it: 64 KiB/s per transfer.
    settings = {"throttle_bytes_per_second": 65_536}
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
        wait_plan(cluster, "done")
        document = httpx.get(f"{cluster.http_url(3)}/v1/cluster", timeout=10).json()
        owners = document["keyspaces"]["default"]["layout"]["owners"]
        assert {owner: owners.count(owner) for owner in set(owners)} == {
            "node0": 16, "node1": 16, "node2": 16, "node3": 16,
        }  # fmt: skip
        load.pause()
        check_everything(cluster, load, [0, 1, 2, 3])
        load.resume()

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
    print(f"{load.acknowledged} writes acknowledged, {load.refused} refused or failed")
    assert not load.misses, load.misses[:10]
    assert load.acknowledged > 200
    check_everything(cluster, load, [0, 1, 2])
    cluster.stop_node(3)
