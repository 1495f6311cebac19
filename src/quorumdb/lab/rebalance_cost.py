"""Lab: how many keys each partitioning strategy moves when a node joins or leaves.

The notes predict that hash mod N moves about N/(N+1) of the keys when a node
joins, while a fixed number of partitions and consistent hashing move about
1/(N+1), the joiner's fair share. This measures it on a seeded key sample, next
to how evenly keys (size skew) and requests of a zipfian workload (load skew)
spread over the nodes, and checks the rebalance plan's own estimate.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from quorumdb.core.partitioning import KeyRangeLayout, Layout, PartitioningStrategy

DESCRIPTION = (
    "keys moved by each partitioning strategy when a node joins or leaves (N = 4, 8, 16, 64),"
    " with size and zipfian load skew, next to the notes' predictions"
)
DEFAULT_KEY_COUNT = 100_000
DEFAULT_SEED = 1
NODE_COUNTS = (4, 8, 16, 64)
HASH_SPECS = ("mod-n", "fixed:1024", "per-node:8", "ring:vnodes=128")
VALUE_BYTES = 100  # each key carries a value of this size, for the range split threshold
RANGE_PARTITIONS_TARGET = 1024  # ranges split at total/1024 bytes: 1024-2048 ranges
ZIPF_EXPONENT = 1.0


@dataclass(frozen=True, slots=True)
class Row:
    strategy: str
    nodes: int
    partitions: int
    join_moved: float
    join_predicted: float
    join_plan_estimate: float
    leave_moved: float
    leave_predicted: float
    size_skew: float
    load_skew: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keys", type=int, default=DEFAULT_KEY_COUNT, help="sampled keys (default %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="(default %(default)s)")


def run(args: argparse.Namespace) -> int:
    if args.keys < 100:
        print("error: --keys must be at least 100", file=sys.stderr)
        return 2
    keys = sample_keys(args.keys, args.seed)
    request_weights = zipf_weights(len(keys), args.seed)
    range_spec = range_spec_for(keys)
    rows = [
        measure(spec, count, keys, request_weights, args.seed)
        for spec in (*HASH_SPECS, range_spec)
        for count in NODE_COUNTS
    ]
    if args.json:
        document = {"keys": args.keys, "seed": args.seed, "rows": [asdict(row) for row in rows]}
        print(json.dumps(document, indent=2))
    else:
        print_table(rows, args.keys, args.seed)
    return 0


def sample_keys(count: int, seed: int) -> list[bytes]:
    """Distinct user ids in random order (the order they are inserted in)."""
    rng = random.Random(seed)
    return [b"user:%010d" % number for number in rng.sample(range(10**10), count)]


def zipf_weights(count: int, seed: int) -> list[float]:
    """Share of requests per key: rank r gets 1/r^s, ranks dealt to keys at random."""
    ranks = list(range(1, count + 1))
    random.Random(seed + 1).shuffle(ranks)
    weights = [1.0 / rank**ZIPF_EXPONENT for rank in ranks]
    total = sum(weights)
    return [weight / total for weight in weights]


def range_spec_for(keys: list[bytes]) -> str:
    total_bytes = sum(len(key) + VALUE_BYTES for key in keys)
    return f"range:split_bytes={max(total_bytes // RANGE_PARTITIONS_TARGET, 2)}"


def members(count: int) -> dict[str, int]:
    return {f"node{index:02d}": 1 for index in range(count)}


def measure(
    spec: str, count: int, keys: list[bytes], request_weights: list[float], seed: int
) -> Row:
    from quorumdb.core.partitioning import parse_partitioning, plan_rebalance

    strategy = parse_partitioning(spec)
    layout = starting_layout(strategy, count, keys, seed)
    joined = strategy.rebalance(layout, members(count + 1), random.Random(seed + 1))
    left = strategy.rebalance(layout, members(count - 1), random.Random(seed + 2))
    before = placements(layout, keys)
    sizes: dict[int, int] = {}
    for partition_id, _ in before:
        sizes[partition_id] = sizes.get(partition_id, 0) + 1
    plan = plan_rebalance(layout, joined, sizes)
    owners = [owner for _, owner in before]
    hash_mod_n = strategy.name == "mod-n"
    return Row(
        strategy=spec,
        nodes=count,
        partitions=len(layout.partition_ids),
        join_moved=moved_share(owners, placements(joined, keys)),
        join_predicted=count / (count + 1) if hash_mod_n else 1 / (count + 1),
        join_plan_estimate=plan.moved_fraction,
        leave_moved=moved_share(owners, placements(left, keys)),
        leave_predicted=(count - 1) / count if hash_mod_n else 1 / count,
        size_skew=skew(owners, [1.0] * len(keys), count),
        load_skew=skew(owners, request_weights, count),
    )


def starting_layout(
    strategy: PartitioningStrategy, count: int, keys: list[bytes], seed: int
) -> Layout:
    """The strategy's layout for `count` nodes; ranges first grow by splits as keys arrive."""
    from quorumdb.core.partitioning import KeyRangeLayout, KeyRangeStrategy

    layout = strategy.initial_layout(members(count), random.Random(seed))
    if isinstance(strategy, KeyRangeStrategy) and isinstance(layout, KeyRangeLayout):
        layout = grow_by_splits(strategy, layout, keys)
        layout = strategy.rebalance(layout, members(count), random.Random(seed))
    return layout


def grow_by_splits(
    strategy: PartitioningStrategy, layout: KeyRangeLayout, keys: list[bytes]
) -> KeyRangeLayout:
    """Insert keys in order; a range over the strategy's split size splits at its median."""
    from quorumdb.core.partitioning import KeyRangeStrategy, PartitionLoad, apply_decisions

    assert isinstance(strategy, KeyRangeStrategy)
    contents: dict[int, list[bytes]] = {partition_id: [] for partition_id in layout.partition_ids}
    size_bytes: dict[int, int] = dict.fromkeys(layout.partition_ids, 0)
    for key in keys:
        partition_id = layout.locate(key)
        contents[partition_id].append(key)
        size_bytes[partition_id] += len(key) + VALUE_BYTES
        if size_bytes[partition_id] <= strategy.split_bytes:
            continue
        held = sorted(contents[partition_id])
        median = held[len(held) // 2]
        load = PartitionLoad(size_bytes[partition_id], 0.0, median)
        decisions = strategy.decide(layout, {partition_id: load})
        if not decisions:
            continue
        layout = apply_decisions(layout, decisions)
        half = len(held) // 2
        for piece_id, part in ((partition_id, held[:half]), (layout.locate(median), held[half:])):
            contents[piece_id] = part
            size_bytes[piece_id] = sum(len(key) + VALUE_BYTES for key in part)
    return layout


def placements(layout: Layout, keys: list[bytes]) -> list[tuple[int, str]]:
    locate, owner = layout.locate, layout.owner
    return [(partition_id, owner(partition_id)) for partition_id in map(locate, keys)]


def moved_share(owners: list[str], after: list[tuple[int, str]]) -> float:
    """Share of keys that change node (what crosses the network)."""
    moved = sum(
        1 for owner, (_, new_owner) in zip(owners, after, strict=True) if owner != new_owner
    )
    return moved / len(owners)


def skew(owners: list[str], weights: list[float], node_count: int) -> float:
    """Max over mean of the weight each node holds (1.0 is perfectly even)."""
    per_node: dict[str, float] = {}
    for owner, weight in zip(owners, weights, strict=True):
        per_node[owner] = per_node.get(owner, 0.0) + weight
    mean = sum(per_node.values()) / node_count
    return max(per_node.values()) / mean


def print_table(rows: list[Row], key_count: int, seed: int) -> None:
    print(f"rebalance cost: {key_count} keys, seed {seed}, zipf s={ZIPF_EXPONENT} for load")
    print("moved = share of keys that change node; predicted = the notes' estimate")
    header = (
        f"{'strategy':<32} {'N':>3} {'parts':>5}  {'join moved':>10} {'predicted':>9}"
        f" {'plan est':>8}  {'leave moved':>11} {'predicted':>9}  {'size skew':>9} {'load skew':>9}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.strategy:<32} {row.nodes:>3} {row.partitions:>5}  {row.join_moved:>10.3f}"
            f" {row.join_predicted:>9.3f} {row.join_plan_estimate:>8.3f}  {row.leave_moved:>11.3f}"
            f" {row.leave_predicted:>9.3f}  {row.size_skew:>9.2f} {row.load_skew:>9.2f}"
        )
