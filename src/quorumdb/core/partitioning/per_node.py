"""Partitions proportional to nodes (Cassandra style): `k x weight` token ranges per node.

The hash space starts cut into equal ranges dealt round-robin. A joiner picks
`k x weight` existing partitions at random, splits each at its midpoint and takes
the upper half (a fresh id; the lower half keeps its id and owner), so the
number of partitions per node stays k while partitions get smaller as the
cluster grows. A leaver's ranges are merged into the range just below each (the
lower neighbour keeps its id). A weight change splits or merges the difference.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise

from quorumdb.core.partitioning.arcs import Segment, arc_overlaps
from quorumdb.core.partitioning.assignment import interleaved_owners
from quorumdb.core.partitioning.hashing import TOKEN_SPACE, key_hash
from quorumdb.core.partitioning.interface import (
    Layout,
    Members,
    Overlap,
    PartitioningError,
    RandomSource,
    ScanRoute,
    expect_layout_type,
    hash_scan_route,
    unknown_partition,
    validate_members,
)
from quorumdb.core.partitioning.serialization import int_list, integer, str_list

DEFAULT_PARTITIONS_PER_NODE = 8
PARTITIONS_PER_NODE_MAX = 1024


@dataclass(frozen=True, slots=True)
class TokenRange:
    start: int  # the range holds hashes in [start, next range's start)
    partition_id: int
    owner: str


@dataclass(frozen=True, slots=True)
class PerNodeLayout:
    ranges: tuple[TokenRange, ...]
    next_partition_id: int
    starts: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _ids: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _owner_by_id: dict[int, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.ranges or self.ranges[0].start != 0:
            raise PartitioningError("per-node layout: the first range must start at token 0")
        starts = tuple(token_range.start for token_range in self.ranges)
        if any(left >= right for left, right in pairwise(starts)) or starts[-1] >= TOKEN_SPACE:
            raise PartitioningError("per-node layout: range starts must increase within the space")
        ids = tuple(token_range.partition_id for token_range in self.ranges)
        if len(set(ids)) != len(ids) or min(ids) < 0 or max(ids) >= self.next_partition_id:
            raise PartitioningError(
                "per-node layout: ids must be unique, in [0, next_partition_id)"
            )
        object.__setattr__(self, "starts", starts)
        object.__setattr__(self, "_ids", ids)
        object.__setattr__(self, "_owner_by_id", {r.partition_id: r.owner for r in self.ranges})

    @property
    def strategy_name(self) -> str:
        return "per-node"

    @property
    def partition_ids(self) -> tuple[int, ...]:
        return self._ids

    def locate(self, key: bytes) -> int:
        return self._ids[bisect_right(self.starts, key_hash(key)) - 1]

    def owner(self, partition_id: int) -> str:
        try:
            return self._owner_by_id[partition_id]
        except KeyError:
            raise unknown_partition(partition_id) from None

    def partitions_for_range(self, start: bytes, end: bytes | None) -> ScanRoute:
        return hash_scan_route(self, start, end)

    def segments(self) -> list[Segment]:
        ends = self.starts[1:] + (TOKEN_SPACE,)
        return list(zip(self.starts, ends, self._ids, strict=True))

    def overlaps(self, new: Layout) -> Iterator[Overlap]:
        return arc_overlaps(self.segments(), expect_layout_type(new, PerNodeLayout).segments())

    def to_dict(self) -> dict[str, object]:
        return {
            "strategy": "per-node",
            "starts": list(self.starts),
            "partition_ids": list(self._ids),
            "owners": [token_range.owner for token_range in self.ranges],
            "next_partition_id": self.next_partition_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> PerNodeLayout:
        starts, ids, owners = (
            int_list(data, "starts"),
            int_list(data, "partition_ids"),
            str_list(data, "owners"),
        )
        if not len(starts) == len(ids) == len(owners):
            raise PartitioningError("per-node layout: starts, ids and owners differ in length")
        return cls(tuple(map(TokenRange, starts, ids, owners)), integer(data, "next_partition_id"))


@dataclass(frozen=True, slots=True)
class PerNodeStrategy:
    partitions_per_node: int = DEFAULT_PARTITIONS_PER_NODE

    def __post_init__(self) -> None:
        if not 1 <= self.partitions_per_node <= PARTITIONS_PER_NODE_MAX:
            raise PartitioningError(
                f"per-node: partitions per node must be between 1 and {PARTITIONS_PER_NODE_MAX},"
                f" got {self.partitions_per_node}"
            )

    @property
    def name(self) -> str:
        return "per-node"

    def to_text(self) -> str:
        return f"per-node:{self.partitions_per_node}"

    def initial_layout(self, members: Members, rng: RandomSource) -> PerNodeLayout:
        validate_members(members)
        return self._even_layout(members, first_id=0)

    def rebalance(self, layout: Layout, members: Members, rng: RandomSource) -> PerNodeLayout:
        """Merge away the ranges of leavers and of members over target, then split for joiners."""
        validate_members(members)
        current = expect_layout_type(layout, PerNodeLayout)
        targets = {
            node_id: self.partitions_per_node * weight for node_id, weight in members.items()
        }
        ranges = _merge_excess(list(current.ranges), targets, rng)
        if not ranges:  # every old member left: start over, with fresh ids
            return self._even_layout(members, first_id=current.next_partition_id)
        next_id = current.next_partition_id
        for node_id in sorted(members):
            count = sum(1 for token_range in ranges if token_range.owner == node_id)
            ranges, next_id = _split_for(ranges, node_id, targets[node_id] - count, next_id, rng)
        return PerNodeLayout(tuple(ranges), next_id)

    def _even_layout(self, members: Members, first_id: int) -> PerNodeLayout:
        count = self.partitions_per_node * sum(members.values())
        owners = interleaved_owners(count, members)
        ranges = tuple(
            TokenRange(index * TOKEN_SPACE // count, first_id + index, owners[index])
            for index in range(count)
        )
        return PerNodeLayout(ranges, first_id + count)


def _merge_excess(
    ranges: list[TokenRange], targets: dict[str, int], rng: RandomSource
) -> list[TokenRange]:
    """Drop ranges of leavers and random ranges of members over target; the range below absorbs."""
    doomed: set[int] = set()
    for node_id in sorted({token_range.owner for token_range in ranges}):
        mine = [index for index, token_range in enumerate(ranges) if token_range.owner == node_id]
        excess = len(mine) - targets.get(node_id, 0)
        if excess > 0:
            rng.shuffle(mine)
            doomed.update(mine[:excess])
    kept = [token_range for index, token_range in enumerate(ranges) if index not in doomed]
    if kept and kept[0].start != 0:  # the lowest survivor also absorbs the range below it
        kept[0] = TokenRange(0, kept[0].partition_id, kept[0].owner)
    return kept


def _split_for(
    ranges: list[TokenRange], node_id: str, count: int, next_id: int, rng: RandomSource
) -> tuple[list[TokenRange], int]:
    """Split `count` random ranges of other members in half; node_id takes the upper halves.

    Each round picks distinct ranges; more rounds run if there are fewer than `count`."""
    while count > 0:
        wide = [index for index in range(len(ranges)) if _width(ranges, index) >= 2]
        others = [index for index in wide if ranges[index].owner != node_id]
        candidates = others or wide  # a sole owner gaining weight splits its own ranges
        if not candidates:
            raise PartitioningError("per-node: no range left wide enough to split")
        rng.shuffle(candidates)
        chosen = set(candidates[:count])
        result: list[TokenRange] = []
        for index, token_range in enumerate(ranges):
            result.append(token_range)
            if index in chosen:
                middle = token_range.start + _width(ranges, index) // 2
                result.append(TokenRange(middle, next_id, node_id))
                next_id += 1
        count -= len(chosen)
        ranges = result
    return ranges, next_id


def _width(ranges: list[TokenRange], index: int) -> int:
    end = ranges[index + 1].start if index + 1 < len(ranges) else TOKEN_SPACE
    return end - ranges[index].start
