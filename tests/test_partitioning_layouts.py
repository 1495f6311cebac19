"""Properties every strategy must keep, checked on sampled keys over random member changes."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partitioning_support import (
    ALL_SPECS,
    layout_for,
    members_strategy,
    placement,
    sample_keys,
)
from quorumdb.core.partitioning import (
    KeyRangeLayout,
    Layout,
    layout_from_dict,
    parse_partitioning,
    plan_rebalance,
    split,
)

KEY_COUNT = 600


def grown(layout: Layout, keys: list[bytes]) -> Layout:
    """For range layouts, split at sampled medians until no range holds over 40 keys."""
    if not isinstance(layout, KeyRangeLayout):
        return layout
    while True:
        groups: dict[int, list[bytes]] = {}
        for key in keys:
            groups.setdefault(layout.locate(key), []).append(key)
        big = [(pid, sorted(group)) for pid, group in groups.items() if len(group) > 40]
        if not big:
            return layout
        for partition_id, group in big:
            median = group[len(group) // 2]
            if median > layout.bounds(partition_id)[0]:
                layout = split(layout, partition_id, median)


def check_well_formed(layout: Layout, members: dict[str, int], keys: list[bytes]) -> None:
    ids = set(layout.partition_ids)
    assert len(ids) == len(layout.partition_ids)
    for partition_id in layout.partition_ids:
        assert layout.owner(partition_id) in members
    for key in keys:
        assert layout.locate(key) in ids


@pytest.mark.parametrize("spec", ALL_SPECS)
@settings(max_examples=20, deadline=None)
@given(
    members_strategy(),
    st.lists(members_strategy(), min_size=1, max_size=4),
    st.integers(0, 2**32),
)
def test_every_change_keeps_placement_sound_and_plans_exact(
    spec: str, members: dict[str, int], changes: list[dict[str, int]], seed: int
) -> None:
    print(f"seed={seed} spec={spec}")
    strategy = parse_partitioning(spec)
    rng = random.Random(seed)
    keys = sample_keys(seed, KEY_COUNT)
    layout = grown(strategy.initial_layout(members, rng), keys)
    check_well_formed(layout, members, keys)
    retired: set[int] = set()
    for new_members in changes:
        new_layout = grown(strategy.rebalance(layout, new_members, rng), keys)
        check_well_formed(new_layout, new_members, keys)
        check_plan_covers_exactly_the_moved_keys(layout, new_layout, keys)
        check_round_trip(new_layout, keys)
        retired |= set(layout.partition_ids) - set(new_layout.partition_ids)
        assert not retired & set(new_layout.partition_ids), "a retired id came back"
        layout, members = new_layout, new_members


def check_plan_covers_exactly_the_moved_keys(old: Layout, new: Layout, keys: list[bytes]) -> None:
    sizes: dict[int, int] = {}
    for key in keys:
        sizes[old.locate(key)] = sizes.get(old.locate(key), 0) + 1
    plan = plan_rebalance(old, new, sizes)
    routes = {
        (t.source_node, t.source_partition, t.target_node, t.target_partition)
        for t in plan.transfers
    }
    assert len(routes) == len(plan.transfers)
    for source_node, source, target_node, target in routes:
        assert (source_node, source) != (target_node, target)
        assert old.owner(source) == source_node
        assert new.owner(target) == target_node
    for key in keys:
        before, after = placement(old, key), placement(new, key)
        if before != after:
            assert (before[1], before[0], after[1], after[0]) in routes, key


def check_round_trip(layout: Layout, keys: list[bytes]) -> None:
    copy = layout_from_dict(json.loads(json.dumps(layout.to_dict())))
    assert copy.partition_ids == layout.partition_ids
    for key in keys:
        assert placement(copy, key) == placement(layout, key)


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(ALL_SPECS), members_strategy(), st.integers(0, 2**32))
def test_same_seed_same_layout(spec: str, members: dict[str, int], seed: int) -> None:
    print(f"seed={seed} spec={spec}")
    strategy = parse_partitioning(spec)
    joined = {**members, "joiner": 2}
    first = strategy.rebalance(
        strategy.initial_layout(members, random.Random(seed)), joined, random.Random(seed + 1)
    )
    second = strategy.rebalance(
        strategy.initial_layout(members, random.Random(seed)), joined, random.Random(seed + 1)
    )
    assert first.to_dict() == second.to_dict()


def test_plan_of_an_unchanged_layout_is_empty() -> None:
    members = {"a": 1, "b": 2, "c": 1}
    for spec in ALL_SPECS:
        layout = layout_for(spec, members, seed=5)
        plan = plan_rebalance(layout, layout, dict.fromkeys(layout.partition_ids, 100))
        assert plan.transfers == () and plan.estimated_bytes == 0 and plan.moved_fraction == 0.0


def test_fixed_plan_sizes_are_whole_partitions() -> None:
    strategy = parse_partitioning("fixed:16")
    old = strategy.initial_layout({"a": 1, "b": 1}, random.Random(1))
    new = strategy.rebalance(old, {"a": 1, "b": 1, "c": 1, "d": 1}, random.Random(2))
    sizes = {partition_id: 1000 + partition_id for partition_id in old.partition_ids}
    plan = plan_rebalance(old, new, sizes)
    assert len(plan.transfers) == 8
    assert all(t.source_partition == t.target_partition for t in plan.transfers)
    assert plan.estimated_bytes == sum(sizes[t.source_partition] for t in plan.transfers)
    assert plan.network_bytes == plan.estimated_bytes
    assert plan.moved_fraction == plan.estimated_bytes / sum(sizes.values())
