"""Load tracking: exact partition counts, space-saving hot keys, windows that fade."""

from __future__ import annotations

import json
from collections import Counter

import httpx
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from quorumdb.core.load_tracker import LoadTracker
from quorumdb.core.messages import Get, Put
from quorumdb.core.node import NodeLimits
from test_cli import quorumdb
from test_core_node import Cluster, owner_of


@settings(max_examples=200, deadline=None)
@given(
    stream=st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=400),
    capacity=st.integers(min_value=1, max_value=12),
)
def test_space_saving_bounds_hold_for_any_stream(stream: list[int], capacity: int) -> None:
    tracker = LoadTracker(window_ms=1_000, hot_key_capacity=capacity, sample_every=1)
    tracker.on_tick(0)
    for item in stream:
        tracker.record_sample("ks", 0, str(item).encode())
    truth = Counter(str(item).encode() for item in stream)
    # Over a span of one second (now = window start + 1 s) a rate is a count.
    reported = {hot.key: hot for hot in tracker.hottest(1_000, limit=capacity)}
    for key, hot in reported.items():
        assert hot.requests_per_second >= truth[key]  # never under-estimates
        assert hot.requests_per_second - hot.error_per_second <= truth[key]
    for key, count in truth.items():
        if count > len(stream) / capacity:  # a heavy hitter is always monitored
            assert key in reported


def test_partition_counts_are_exact_and_windows_fade() -> None:
    tracker = LoadTracker(window_ms=1_000, sample_every=4)
    tracker.on_tick(0)
    for index in range(100):  # 100 samples standing for 400 requests
        tracker.record_sample("ks", index % 4, b"hot" if index % 2 else f"k{index}".encode())
    loads = {entry.partition: entry for entry in tracker.partitions(1_000)}
    assert {partition: entry.requests_total for partition, entry in loads.items()} == {
        0: 100,
        1: 100,
        2: 100,
        3: 100,
    }
    assert loads[1].requests_per_second == 100.0
    assert tracker.hottest(1_000, limit=1)[0].key == b"hot"
    tracker.on_tick(1_000)  # the window ends: still reported from the previous one
    assert tracker.hottest(1_500, limit=1)[0].key == b"hot"
    tracker.on_tick(2_000)
    tracker.on_tick(3_000)  # two quiet windows later the key has faded away
    assert tracker.hottest(3_500) == []
    assert all(entry.requests_per_second == 0 for entry in tracker.partitions(3_500))
    assert sum(entry.requests_total for entry in tracker.partitions(3_500)) == 400


def test_load_is_counted_on_the_owner_for_local_and_forwarded_requests() -> None:
    cluster = Cluster(limits=NodeLimits(load_sample_every=1))
    key = next(k for k in (f"k{i}".encode() for i in range(100)) if owner_of(cluster, k) != "node0")
    owner = owner_of(cluster, key)
    cluster.request("node0", Put("default", key, b"v"))  # forwarded general path
    for _ in range(5):
        cluster.request("node0", Get("default", key))  # forwarded, owner fast path
        cluster.request(owner, Get("default", key))  # local general path
    served = {
        node_id: sum(entry.requests_total for entry in node.load.partitions(cluster.now_ms))
        for node_id, node in cluster.nodes.items()
    }
    assert served == {node_id: 11 if node_id == owner else 0 for node_id in cluster.nodes}
    assert cluster.nodes[owner].read_local(cluster.now_ms, "default", key) == b"v"
    assert sum(e.requests_total for e in cluster.nodes[owner].load.partitions(0)) == 12


def test_the_node_samples_one_request_in_n() -> None:
    cluster = Cluster(1, limits=NodeLimits(load_sample_every=8))
    for index in range(80):
        cluster.request("node0", Put("default", f"k{index}".encode(), b"v"))
    node = cluster.nodes["node0"]
    for index in range(80):
        node.read_local(cluster.now_ms, "default", f"k{index}".encode())
    assert sum(entry.requests_total for entry in node.load.partitions(cluster.now_ms)) == 160
    assert sum(count for count in node.load._sketch.counts.values()) == 20


def test_status_hot_names_the_hottest_key(cluster3) -> None:
    with redis.Redis(port=cluster3.resp_port(0)) as client:
        pipeline = client.pipeline(transaction=False)
        for index in range(2_000):
            pipeline.get("the-hot-key" if index % 2 else f"cold-{index}")
        pipeline.execute()
    http = ["--http", f"127.0.0.1:{cluster3.members[1].http_port}"]
    result = quorumdb("status", "--hot", "--json", *http)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["unreachable"] == []
    assert document["hot_keys"][0]["key"] == "the-hot-key"
    assert sum(entry["requests_total"] for entry in document["partitions"]) >= 1  # top 10 only
    table = quorumdb("status", "--hot", *http)
    assert table.returncode == 0 and "the-hot-key" in table.stdout

    exported = "".join(
        httpx.get(f"http://127.0.0.1:{member.http_port}/metrics").text
        for member in cluster3.members
    )
    assert 'key="the-hot-key"' in exported
    assert "quorumdb_partition_requests_total{" in exported
