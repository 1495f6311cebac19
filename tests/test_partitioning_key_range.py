"""Key ranges: splits and merges keep keys covered and in order; the policy splits and merges."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quorumdb.core.partitioning import (
    KeyRangeLayout,
    KeyRangeStrategy,
    MergeDecision,
    PartitioningError,
    PartitionLoad,
    SplitDecision,
    apply_decisions,
    merge,
    parse_partitioning,
    plan_rebalance,
    split,
)

KEYS = st.binary(min_size=0, max_size=4)


def fresh(members: dict[str, int] | None = None) -> KeyRangeLayout:
    layout = parse_partitioning("range").initial_layout(members or {"a": 1}, random.Random(0))
    assert isinstance(layout, KeyRangeLayout)
    return layout


def naive_locate(layout: KeyRangeLayout, key: bytes) -> int:
    """The partition whose [start, end) holds the key, by scanning every range."""
    holders = [
        partition_id
        for partition_id in layout.partition_ids
        if layout.bounds(partition_id)[0] <= key
        and (layout.bounds(partition_id)[1] is None or key < layout.bounds(partition_id)[1])
    ]
    assert len(holders) == 1
    return holders[0]


@st.composite
def split_and_merged(draw: st.DrawFn) -> KeyRangeLayout:
    layout = fresh()
    for _ in range(draw(st.integers(0, 12))):
        key = draw(KEYS)
        partition_id = layout.locate(key)
        if key > layout.bounds(partition_id)[0]:
            layout = split(layout, partition_id, key)
        if draw(st.booleans()) and len(layout.partition_ids) > 1:
            index = draw(st.integers(0, len(layout.partition_ids) - 2))
            layout = merge(layout, layout.partition_ids[index], layout.partition_ids[index + 1])
    return layout


@settings(max_examples=150, deadline=None)
@given(split_and_merged(), st.lists(KEYS, max_size=30))
def test_every_key_lands_in_exactly_its_range(layout: KeyRangeLayout, keys: list[bytes]) -> None:
    for key in keys:
        assert layout.locate(key) == naive_locate(layout, key)


@settings(max_examples=150, deadline=None)
@given(split_and_merged(), KEYS, st.none() | KEYS, st.lists(KEYS, max_size=30))
def test_range_scans_visit_the_covering_ranges_in_key_order(
    layout: KeyRangeLayout, start: bytes, end: bytes | None, keys: list[bytes]
) -> None:
    route = layout.partitions_for_range(start, end)
    assert route.in_key_order
    starts = [layout.bounds(partition_id)[0] for partition_id in route.partition_ids]
    assert starts == sorted(starts)
    for key in keys:
        if start <= key and (end is None or key < end):
            assert layout.locate(key) in route.partition_ids
    # no range is visited that cannot hold a key of [start, end)
    for partition_id in route.partition_ids[1:]:
        assert end is None or layout.bounds(partition_id)[0] < end


def test_split_keeps_the_left_id_and_gives_the_right_a_fresh_one() -> None:
    layout = split(fresh(), 0, b"m")
    assert layout.partition_ids == (0, 1)
    assert layout.bounds(0) == (b"", b"m") and layout.bounds(1) == (b"m", None)
    layout = split(layout, 0, b"f")
    assert layout.partition_ids == (0, 2, 1)
    merged = merge(layout, 0, 2)
    assert merged.partition_ids == (0, 1) and merged.bounds(0) == (b"", b"m")
    again = split(merged, 0, b"c")
    assert again.partition_ids == (0, 3, 1)  # id 2 is never reused


def test_split_and_merge_refuse_bad_requests() -> None:
    layout = split(fresh(), 0, b"m")
    with pytest.raises(PartitioningError, match="not strictly inside"):
        split(layout, 1, b"m")
    with pytest.raises(PartitioningError, match="not strictly inside"):
        split(layout, 0, b"z")
    with pytest.raises(PartitioningError, match="no partition 7"):
        split(layout, 7, b"a")
    with pytest.raises(PartitioningError, match="not the right-hand neighbour"):
        merge(layout, 1, 0)


def test_split_is_a_local_refile_then_a_rebalance_moves_whole_ranges() -> None:
    layout = fresh({"a": 1, "b": 1})
    after_split = split(layout, 0, b"m")
    plan = plan_rebalance(layout, after_split, {0: 1000})
    assert [(t.source_node, t.target_node, t.target_partition) for t in plan.transfers] == [
        ("a", "a", 1)
    ]
    assert plan.estimated_bytes == 500 and plan.network_bytes == 0
    strategy = parse_partitioning("range")
    balanced = strategy.rebalance(after_split, {"a": 1, "b": 1}, random.Random(1))
    moved = plan_rebalance(after_split, balanced, {0: 500, 1: 500})
    assert len(moved.transfers) == 1 and moved.network_bytes == 500


def test_policy_splits_big_or_hot_ranges_and_merges_small_cool_neighbours() -> None:
    strategy = KeyRangeStrategy(split_bytes=1000, split_ops_per_second=100, merge_bytes=400)
    layout = fresh()
    for key in (b"d", b"h", b"m", b"q", b"u"):
        layout = split(layout, layout.locate(key), key)
    ids = layout.partition_ids  # ranges: "" d h m q u
    loads = {
        ids[0]: PartitionLoad(2000, 1, b"b"),  # too big
        ids[1]: PartitionLoad(10, 500, b"f"),  # too hot
        ids[2]: PartitionLoad(100, 1, b"i"),  # small and cool ...
        ids[3]: PartitionLoad(100, 1, b"n"),  # ... with a small, cool neighbour
        ids[4]: PartitionLoad(100, 20, b"r"),  # small but too warm to merge with ...
        ids[5]: PartitionLoad(100, 20, b"a"),  # ... and its median lies outside: no split
    }
    decisions = strategy.decide(layout, loads)
    assert decisions == (
        SplitDecision(ids[0], b"b", "size"),
        SplitDecision(ids[1], b"f", "load"),
        MergeDecision(ids[2], ids[3]),
    )
    after = apply_decisions(layout, decisions)
    assert len(after.partition_ids) == len(ids) + 1
    for key in (b"", b"b", b"c", b"f", b"i", b"n", b"z"):
        assert after.locate(key) == naive_locate(after, key)
