"""How much each strategy moves on a join or leave, and how weights share out partitions."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partitioning_support import members_strategy, placement, sample_keys
from quorumdb.core.partitioning import (
    FixedLayout,
    FixedPartitions,
    Layout,
    PerNodeLayout,
    RingLayout,
    parse_partitioning,
    partition_of,
    plan_rebalance,
)
from quorumdb.core.partitioning.hashing import TOKEN_SPACE

SEED = 20261128


def nodes(count: int) -> dict[str, int]:
    return {f"node{index:02d}": 1 for index in range(count)}


def moved_fraction(old: Layout, new: Layout, keys: list[bytes]) -> float:
    return sum(placement(old, key) != placement(new, key) for key in keys) / len(keys)


def join_and_leave(spec: str, count: int, seed: int) -> tuple[float, float]:
    print(f"seed={seed} spec={spec} nodes={count}")
    strategy = parse_partitioning(spec)
    keys = sample_keys(seed, 20_000)
    layout = strategy.initial_layout(nodes(count), random.Random(seed))
    joined = strategy.rebalance(layout, nodes(count + 1), random.Random(seed + 1))
    left = strategy.rebalance(layout, nodes(count - 1), random.Random(seed + 2))
    return moved_fraction(layout, joined, keys), moved_fraction(layout, left, keys)


@pytest.mark.parametrize("count", [4, 8])
def test_mod_n_moves_about_n_over_n_plus_one(count: int) -> None:
    joined, left = join_and_leave("mod-n", count, SEED)
    assert joined == pytest.approx(count / (count + 1), abs=0.02)
    assert left == pytest.approx((count - 1) / count, abs=0.02)


@pytest.mark.parametrize("spec", ["fixed:256", "ring:vnodes=128"])
@pytest.mark.parametrize("count", [4, 8])
def test_fixed_and_ring_move_about_one_over_n_plus_one(spec: str, count: int) -> None:
    joined, left = join_and_leave(spec, count, SEED)
    assert joined == pytest.approx(1 / (count + 1), rel=0.25)
    assert left == pytest.approx(1 / count, rel=0.25)


@pytest.mark.parametrize("count", [4, 8])
def test_per_node_joiner_takes_halves_of_k_partitions(count: int) -> None:
    """From equal ranges, k halves of 1/(kN) each: the joiner gets 1/(2N), not 1/(N+1)."""
    joined, left = join_and_leave("per-node:8", count, SEED)
    assert joined == pytest.approx(1 / (2 * count), rel=0.15)
    assert left == pytest.approx(1 / count, rel=0.15)


def test_mod_n_slot_ids_follow_members() -> None:
    strategy = parse_partitioning("mod-n")
    layout = strategy.initial_layout(nodes(3), random.Random(1))
    grown = strategy.rebalance(layout, nodes(4), random.Random(1))
    shrunk = strategy.rebalance(grown, {"node00": 1, "node02": 1, "node03": 1}, random.Random(1))
    back = strategy.rebalance(shrunk, nodes(4), random.Random(1))
    assert [grown.owner(pid) for pid in grown.partition_ids] == list(nodes(4))
    assert {shrunk.owner(pid): pid for pid in shrunk.partition_ids} == {
        "node00": 0,
        "node02": 2,
        "node03": 3,
    }
    assert back.partition_ids == (0, 2, 3, 4)  # node01 returns with a fresh id
    keys = sample_keys(SEED, 5000)
    for key in keys:  # a key keeps its slot iff hash % N is unchanged
        before, after = layout.locate(key), grown.locate(key)
        assert (before == after) == (before == grown.partition_ids.index(after))


def test_fixed_with_equal_weights_is_the_legacy_placement() -> None:
    layout = parse_partitioning("fixed:64").initial_layout(nodes(3), random.Random(1))
    assert isinstance(layout, FixedLayout)
    assert layout.owners == FixedPartitions(64).assign(tuple(nodes(3)))
    for key in sample_keys(SEED, 3000):
        if b"{" not in key:
            assert layout.locate(key) == partition_of(key, 64)


@settings(max_examples=40, deadline=None)
@given(members_strategy(), members_strategy(), st.integers(0, 2**32))
def test_fixed_moves_the_fewest_whole_partitions(
    before: dict[str, int], after: dict[str, int], seed: int
) -> None:
    print(f"seed={seed}")
    strategy = parse_partitioning("fixed:128")
    old = strategy.initial_layout(before, random.Random(seed))
    new = strategy.rebalance(old, after, random.Random(seed + 1))
    assert isinstance(old, FixedLayout) and isinstance(new, FixedLayout)
    counts = owner_counts(new.owners)
    total_weight = sum(after.values())
    for node_id, weight in after.items():
        assert abs(counts.get(node_id, 0) - 128 * weight / total_weight) < 1
    moved = sum(a != b for a, b in zip(old.owners, new.owners, strict=True))
    old_counts = owner_counts(old.owners)
    needed = sum(max(count - counts.get(node_id, 0), 0) for node_id, count in old_counts.items())
    assert moved == needed


def owner_counts(owners: tuple[str, ...]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for owner in owners:
        counts[owner] = counts.get(owner, 0) + 1
    return counts


@settings(max_examples=25, deadline=None)
@given(members_strategy(max_size=6), st.integers(0, 2**32))
def test_weights_share_out_partitions(members: dict[str, int], seed: int) -> None:
    """Exact counts for fixed (within one) and per-node; token share within 35% for the ring."""
    print(f"seed={seed}")
    total_weight = sum(members.values())
    rng = random.Random(seed)
    per_node = parse_partitioning("per-node:8").initial_layout(members, rng)
    assert isinstance(per_node, PerNodeLayout)
    counts = owner_counts(tuple(r.owner for r in per_node.ranges))
    assert counts == {node_id: 8 * weight for node_id, weight in members.items()}
    ring = parse_partitioning("ring:vnodes=128").initial_layout(members, rng)
    assert isinstance(ring, RingLayout)
    share: dict[str, int] = {}
    for start, end, partition_id in ring.segments():
        share[ring.owner(partition_id)] = share.get(ring.owner(partition_id), 0) + end - start
    for node_id, weight in members.items():
        expected = TOKEN_SPACE * weight / total_weight
        assert share[node_id] == pytest.approx(expected, rel=0.35)


def test_ring_leave_undoes_join() -> None:
    strategy = parse_partitioning("ring:vnodes=32")
    layout = strategy.initial_layout(nodes(4), random.Random(1))
    joined = strategy.rebalance(layout, nodes(5), random.Random(1))
    left = strategy.rebalance(joined, nodes(4), random.Random(1))
    keys = sample_keys(SEED, 3000)
    assert all(placement(layout, key) == placement(left, key) for key in keys)


def test_weight_change_moves_partitions_toward_the_heavier_node() -> None:
    for spec in ("fixed:64", "per-node:8", "ring:vnodes=64"):
        strategy = parse_partitioning(spec)
        layout = strategy.initial_layout(nodes(4), random.Random(1))
        heavier = strategy.rebalance(layout, {**nodes(4), "node00": 3}, random.Random(2))
        keys = sample_keys(SEED, 6000)
        share = sum(placement(heavier, key)[1] == "node00" for key in keys) / len(keys)
        assert share > 0.35, spec  # from 1/4 towards 3/6


@pytest.mark.parametrize("spec", ["mod-n", "fixed:256", "per-node:8", "ring:vnodes=64"])
def test_plan_estimate_matches_the_measured_move(spec: str) -> None:
    print(f"seed={SEED} spec={spec}")
    strategy = parse_partitioning(spec)
    keys = sample_keys(SEED, 20_000)
    old = strategy.initial_layout(nodes(6), random.Random(SEED))
    new = strategy.rebalance(old, nodes(7), random.Random(SEED + 1))
    sizes: dict[int, int] = {}
    for key in keys:
        sizes[old.locate(key)] = sizes.get(old.locate(key), 0) + 1
    plan = plan_rebalance(old, new, sizes)
    unsized = plan_rebalance(old, new, {})
    measured = moved_fraction(old, new, keys)
    assert plan.moved_fraction == pytest.approx(measured, abs=0.02)
    assert unsized.moved_fraction == pytest.approx(measured, abs=0.03)
    assert plan.estimated_bytes == pytest.approx(measured * len(keys), rel=0.1)
