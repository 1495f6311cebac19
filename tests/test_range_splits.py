"""Key ranges split and merge on a running cluster: by size, by load, and back by merge,
while every key stays readable."""

from __future__ import annotations

import json
import random

from quorumdb.core.cluster import founding_metadata, local_members
from quorumdb.core.cluster_metadata import ClusterMetadata, command
from quorumdb.core.keyspace import KeyspaceConfig
from quorumdb.core.messages import CreateKeyspace, Delete, Get, Put
from quorumdb.core.node import NodeLimits
from quorumdb.core.partitioning.key_range_policy import PartitionLoad
from quorumdb.core.partitioning.spec import parse_partitioning
from quorumdb.core.range_splits import (
    WALK_KEYS_PER_TICK,
    RangeMeasurements,
    parse_measurements,
    split_merge_command,
)
from quorumdb.storage.interface import Write
from test_core_node import Cluster, DictStorage
from test_rebalance_core import metadata_change

SMALL_RANGES = "range:split_bytes=20000,split_ops_per_second=1000000,merge_bytes=6000"


def metadata_with(partitioning: str) -> ClusterMetadata:
    metadata = founding_metadata(local_members(3, 7000))
    config = KeyspaceConfig("events", partitioning).canonical()
    layout = parse_partitioning(partitioning).initial_layout(
        metadata.active_members(), random.Random(0)
    )
    result = metadata.apply(
        len(metadata.keyspaces) + 10,
        command(
            "create_keyspace",
            config=config.to_dict(),
            layout=layout.to_dict(),
            placed_for=metadata.active_members(),
        ),
    )
    assert json.loads(result)["ok"], result
    return metadata


def test_a_big_range_is_walked_to_its_median_a_batch_per_tick() -> None:
    metadata = metadata_with(SMALL_RANGES)
    record = metadata.keyspaces["events"]
    owner = str(record.layout["owners"][0])
    storage = DictStorage()
    count = 3 * WALK_KEYS_PER_TICK + 7
    storage.apply(tuple(Write("events", 0, b"k%06d" % i, b"x" * 40) for i in range(count)))
    measurements = RangeMeasurements(load_window_ms=1_000)

    def measure(now_ms: int) -> list[object]:
        document = measurements.measure(
            now_ms, owner, metadata, storage, lambda ks, p: 60 * count, {}, set()
        )
        entry = document["events"]
        assert entry["version"] == record.layout_version
        return entry["partitions"]["0"]  # type: ignore[index, no-any-return]

    size, rate, split_key = measure(0)
    assert (size, rate, split_key) == (60 * count, None, None)  # the walk has just begun
    measurements.on_tick(storage)
    assert measure(100)[2] is None  # one batch read, the median (key 1539) not reached
    measurements.on_tick(storage)
    assert bytes.fromhex(measure(200)[2]) == b"k%06d" % (count // 2)  # type: ignore[arg-type]
    # Rates are published only once two load windows postdate the layout.
    assert measure(2_000)[1] == 0.0


def test_the_leader_plans_splits_then_merges_from_current_measurements() -> None:
    metadata = metadata_with(SMALL_RANGES)
    version = metadata.keyspaces["events"].layout_version
    stale = {"events": {"version": version - 1, "partitions": {"0": [10**6, 0.0, b"m".hex()]}}}
    assert parse_measurements({"node0": stale}, metadata) == {}
    fresh = {"events": {"version": version, "partitions": {"0": [10**6, None, b"m".hex()]}}}
    loads = parse_measurements({"node0": fresh}, metadata)
    assert loads == {"events": {0: PartitionLoad(10**6, None, b"m")}}
    proposal = split_merge_command(metadata, loads, random.Random(1), {"events": {0: 10**6}})
    assert proposal is not None
    document = json.loads(proposal)
    assert "split 0 at 'm' (size)" in document["reason"]
    target = document["target_layouts"]["events"]
    assert target["starts"] == ["", b"m".hex()] and target["partition_ids"] == [0, 1]
    (transfer,) = document["transfers"]
    assert (transfer["source_partition"], transfer["target_partition"]) == (0, 1)
    assert transfer["estimated_bytes"] == 10**6 // 2
    # A small, cool range next to another merges into it; an unmeasured rate never merges.
    applied = metadata.apply(100, proposal)
    assert json.loads(applied)["ok"], applied
    plan = metadata.plan
    assert plan is not None
    metadata.apply(101, command("plan_step", plan_id=plan.plan_id, action="approve"))
    metadata.apply(
        102,
        command(
            "transfer_progress", plan_id=plan.plan_id, transfer=0, state="done", copied_bytes=1
        ),
    )
    assert metadata.keyspaces["events"].layout["partition_ids"] == [0, 1]
    small = {0: PartitionLoad(100, 1.0, None), 1: PartitionLoad(100, None, None)}
    assert split_merge_command(metadata, {"events": small}, random.Random(1), {}) is None
    small[1] = PartitionLoad(100, 2.0, None)
    merge = split_merge_command(metadata, {"events": small}, random.Random(1), {})
    assert merge is not None and "merge 0 and 1" in json.loads(merge)["reason"]
    merged = json.loads(merge)["target_layouts"]["events"]
    assert merged["partition_ids"] == [0]
    assert merged["owners"] == [metadata.keyspaces["events"].layout["owners"][0]]


def range_layout(cluster: Cluster) -> dict[str, object]:
    layout: dict[str, object] = (
        cluster.nodes["node0"].controller.metadata.keyspaces["events"].layout
    )
    return layout


def test_a_growing_range_keyspace_splits_spreads_and_merges_back() -> None:
    seed = 5
    print(f"seed {seed}: replay with pytest tests/test_range_splits.py")
    cluster = Cluster(seed=seed)
    cluster.settle()
    automatic = command("set_rebalance_mode", mode="automatic")
    assert metadata_change(cluster, "node0", automatic)["ok"]
    created = cluster.request("node1", CreateKeyspace(KeyspaceConfig("events", SMALL_RANGES)))
    assert created.error is None, created
    expected: dict[bytes, bytes] = {}
    step = 0
    for index in range(1_600):
        key = b"user:%05d" % ((index * 7919) % 100_000)  # spread over the key space
        value = b"v%d-" % index + b"x" * 80
        assert cluster.request(f"node{index % 3}", Put("events", key, value)).ok
        expected[key] = value
        step += 1
        if step % 4 == 0:
            cluster.tick()
    splits_seen: list[str] = []
    for _ in range(60):  # up to a minute of virtual time for the splits to settle
        for _ in range(50):
            cluster.tick()
        plan = cluster.nodes["node0"].controller.metadata.plan
        if plan is not None and plan.reason not in splits_seen:
            splits_seen.append(plan.reason)
        # Every key reads back through every node while ranges split and move.
        for key in list(expected)[::97]:
            outcome = cluster.request("node2", Get("events", key))
            assert outcome.value == expected[key], (key, outcome)
    layout = range_layout(cluster)
    print("plans:", splits_seen)
    print("ranges:", len(layout["partition_ids"]), "owners:", layout["owners"])  # type: ignore[arg-type]
    assert all("(size)" in reason for reason in splits_seen if "split" in reason)
    assert len(layout["partition_ids"]) >= 6  # type: ignore[arg-type]  # ~150 KB / 20 KB
    assert set(layout["owners"]) == {"node0", "node1", "node2"}  # type: ignore[arg-type]
    for node_id, storage in cluster.storages.items():
        for (keyspace, partition), table in storage.data.items():
            if keyspace == "events" and table:
                node = cluster.nodes[node_id]
                placement = node.partition_map.keyspaces["events"]
                assert placement.owner(partition) == node_id, (node_id, partition)
    for key, value in expected.items():
        assert cluster.request("node0", Get("events", key)).value == value
    # Deleting almost everything makes neighbours small and cool: they merge.
    kept = dict(list(sorted(expected.items()))[::40])
    for key in expected:
        if key not in kept:
            assert cluster.request("node1", Delete("events", key)).ok
    before = len(layout["partition_ids"])  # type: ignore[arg-type]
    for _ in range(80):
        for _ in range(50):
            cluster.tick()
    after = len(range_layout(cluster)["partition_ids"])  # type: ignore[arg-type]
    print(f"ranges before the deletes {before}, after {after}")
    assert after < before
    for key, value in kept.items():
        assert cluster.request("node2", Get("events", key)).value == value


def test_a_hot_range_splits_by_load_at_its_requested_median() -> None:
    seed = 9
    print(f"seed {seed}: replay with pytest tests/test_range_splits.py")
    cluster = Cluster(seed=seed, limits=NodeLimits(load_window_ms=1_000, load_sample_every=1))
    cluster.settle()
    automatic = command("set_rebalance_mode", mode="automatic")
    assert metadata_change(cluster, "node0", automatic)["ok"]
    hot = "range:split_bytes=100000000,split_ops_per_second=100,merge_bytes=0"
    assert cluster.request("node1", CreateKeyspace(KeyspaceConfig("events", hot))).error is None
    keys = [b"item:%03d" % index for index in range(200)]
    for key in keys:
        assert cluster.request("node0", Put("events", key, b"v")).ok
    # 400 reads per virtual second, spread over the keys in the upper half.
    for _ in range(1_500):
        for key in keys[100:][::25]:
            assert cluster.request("node1", Get("events", key)).value == b"v"
        cluster.tick()
    plan = cluster.nodes["node0"].controller.metadata.plan
    assert plan is not None and "(load)" in plan.reason, plan
    starts = [bytes.fromhex(start) for start in range_layout(cluster)["starts"]]  # type: ignore[attr-defined]
    print("plan:", plan.reason, "starts:", starts)
    assert len(starts) >= 2 and b"item:100" <= starts[1] <= b"item:199"
    for key in keys:
        assert cluster.request("node2", Get("events", key)).value == b"v"
