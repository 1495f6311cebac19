"""When key ranges split or merge, and the `range` strategy that owns those thresholds.

Pure policy: the caller measures each partition (size, operations per second,
a sampled median key) and applies the decisions it approves. A range splits
when it is too big or too hot (the median key is where, so each half gets about
half the keys); two neighbours merge when together they are small and cool
enough that the merged range will not split again at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from quorumdb.core.partitioning.interface import (
    Layout,
    Members,
    PartitioningError,
    RandomSource,
    expect_layout_type,
)
from quorumdb.core.partitioning.key_range import (
    KeyRangeLayout,
    merge,
    reassign,
    single_range,
    split,
)

DEFAULT_SPLIT_BYTES = 64 * 1024 * 1024  # MongoDB's chunk size; HBase uses 10 GiB regions
DEFAULT_SPLIT_OPS_PER_SECOND = 2500  # CockroachDB's load-based split threshold
MERGE_OPS_FRACTION = 0.25  # neighbours merge only below a quarter of the split load


@dataclass(frozen=True, slots=True)
class PartitionLoad:
    size_bytes: int
    ops_per_second: float | None  # None: not measured yet (judged by size alone, never merged)
    median_key: bytes | None  # where to split, found by the caller; None when unknown


@dataclass(frozen=True, slots=True)
class SplitDecision:
    partition_id: int
    split_key: bytes
    reason: str  # "size" or "load"


@dataclass(frozen=True, slots=True)
class MergeDecision:
    left_id: int
    right_id: int


Decision = SplitDecision | MergeDecision


@dataclass(frozen=True, slots=True)
class KeyRangeStrategy:
    split_bytes: int = DEFAULT_SPLIT_BYTES
    split_ops_per_second: int = DEFAULT_SPLIT_OPS_PER_SECOND
    merge_bytes: int = DEFAULT_SPLIT_BYTES // 4

    def __post_init__(self) -> None:
        if self.split_bytes < 1 or self.split_ops_per_second < 1:
            raise PartitioningError("range: split_bytes and split_ops_per_second must be >= 1")
        if not 0 <= self.merge_bytes <= self.split_bytes // 2:
            raise PartitioningError(
                "range: merge_bytes must be between 0 and half of split_bytes,"
                " or a merged range would split again at once"
            )

    @property
    def name(self) -> str:
        return "range"

    def to_text(self) -> str:
        return (
            f"range:split_bytes={self.split_bytes},"
            f"split_ops_per_second={self.split_ops_per_second},merge_bytes={self.merge_bytes}"
        )

    def initial_layout(self, members: Members, rng: RandomSource) -> KeyRangeLayout:
        return single_range(members)

    def rebalance(self, layout: Layout, members: Members, rng: RandomSource) -> KeyRangeLayout:
        return reassign(expect_layout_type(layout, KeyRangeLayout), members, rng)

    def decide(
        self, layout: KeyRangeLayout, loads: Mapping[int, PartitionLoad]
    ) -> tuple[Decision, ...]:
        """Splits for ranges over a threshold, then merges of cool, small neighbour pairs."""
        decisions: list[Decision] = []
        splitting: set[int] = set()
        for partition_id in layout.partition_ids:
            load = loads.get(partition_id)
            reason = self._split_reason(load)
            if load is None or reason is None or load.median_key is None:
                continue
            start, end = layout.bounds(partition_id)
            if start < load.median_key and (end is None or load.median_key < end):
                decisions.append(SplitDecision(partition_id, load.median_key, reason))
                splitting.add(partition_id)
        ids = layout.partition_ids
        index = 0
        while index + 1 < len(ids):
            left, right = ids[index], ids[index + 1]
            if not {left, right} & splitting and self._mergeable(loads.get(left), loads.get(right)):
                decisions.append(MergeDecision(left, right))
                index += 2
            else:
                index += 1
        return tuple(decisions)

    def _split_reason(self, load: PartitionLoad | None) -> str | None:
        if load is None:
            return None
        if load.size_bytes > self.split_bytes:
            return "size"
        if load.ops_per_second is not None and load.ops_per_second > self.split_ops_per_second:
            return "load"
        return None

    def _mergeable(self, left: PartitionLoad | None, right: PartitionLoad | None) -> bool:
        if left is None or right is None:
            return False
        if left.ops_per_second is None or right.ops_per_second is None:
            return False
        ops_limit = self.split_ops_per_second * MERGE_OPS_FRACTION
        return (
            left.size_bytes + right.size_bytes < self.merge_bytes
            and left.ops_per_second + right.ops_per_second < ops_limit
        )


def apply_decisions(layout: KeyRangeLayout, decisions: tuple[Decision, ...]) -> KeyRangeLayout:
    """Carry out decisions from one `decide` call (they never touch the same range twice)."""
    for decision in decisions:
        if isinstance(decision, SplitDecision):
            layout = split(layout, decision.partition_id, decision.split_key)
        else:
            layout = merge(layout, decision.left_id, decision.right_id)
    return layout
