"""SWIM in real node processes: a killed node is declared down by the others (two sources
agree), and is alive again after it restarts."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from cluster_harness import LocalTestCluster


def health_seen_by(cluster: LocalTestCluster, observer: int, node_id: str) -> str:
    document = httpx.get(f"{cluster.http_url(observer)}/v1/cluster", timeout=5).json()
    return next(m["health"] for m in document["members"] if m["node_id"] == node_id)


def wait_health(cluster: LocalTestCluster, observers: list[int], node_id: str, state: str) -> float:
    started = time.monotonic()
    deadline = started + 40
    while time.monotonic() < deadline:
        if all(health_seen_by(cluster, index, node_id) == state for index in observers):
            return time.monotonic() - started
        time.sleep(0.2)
    views = {index: health_seen_by(cluster, index, node_id) for index in observers}
    raise AssertionError(f"{node_id} never {state} for all of {observers}: {views}")


def test_a_killed_node_is_declared_down_and_comes_back_alive(tmp_path: Path) -> None:
    with LocalTestCluster(4, tmp_path / "swim") as cluster:
        wait_health(cluster, [0, 1, 2, 3], "node3", "alive")
        cluster.kill_node(3)
        seconds_down = wait_health(cluster, [0, 1, 2], "node3", "down")
        print(f"node3 declared down by all survivors {seconds_down:.1f} s after SIGKILL")
        cluster.start_node(3)
        wait_health(cluster, [0, 1, 2], "node3", "alive")
        assert health_seen_by(cluster, 3, "node0") == "alive"
