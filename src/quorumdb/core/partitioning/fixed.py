"""Fixed number of partitions: hash the key modulo the partition count; partitions move whole.

The count never changes after creation, so a join, leave or weight change only
moves whole partitions between nodes and never rehashes a key (unlike hash mod
N over nodes). Keys without a hash tag land where they always did:
`crc32(key) % count`, round-robin over sorted members.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from quorumdb.core.partitioning.assignment import interleaved_owners, reassigned_owners
from quorumdb.core.partitioning.hashing import key_hash
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
from quorumdb.core.partitioning.serialization import str_list

DEFAULT_PARTITION_COUNT = 64
PARTITION_COUNT_MAX = 4096


def partition_of(key: bytes, partition_count: int) -> int:
    """Legacy placement without hash tags, still what `core/node.py` hashes inline.

    Stable across processes and machines (unlike Python's salted `hash`)."""
    return zlib.crc32(key) % partition_count


@dataclass(frozen=True, slots=True)
class FixedPartitions:
    """Legacy strategy object of `core/cluster.py`; `FixedLayout` supersedes it."""

    partition_count: int

    def locate(self, key: bytes) -> int:
        return zlib.crc32(key) % self.partition_count

    def assign(self, members: tuple[str, ...]) -> tuple[str, ...]:
        """Owner of each partition: round-robin over the members in sorted order."""
        if not members:
            raise ValueError("cannot assign partitions to an empty cluster")
        ordered = sorted(members)
        return tuple(ordered[partition % len(ordered)] for partition in range(self.partition_count))


@dataclass(frozen=True, slots=True)
class FixedLayout:
    """Partition p holds the keys whose hash modulo `partition_count` is p; `owners[p]` has it."""

    owners: tuple[str, ...]
    partition_ids: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.owners:
            raise PartitioningError("a fixed layout needs at least one partition")
        object.__setattr__(self, "partition_ids", tuple(range(len(self.owners))))

    @property
    def strategy_name(self) -> str:
        return "fixed"

    @property
    def partition_count(self) -> int:
        return len(self.owners)

    def locate(self, key: bytes) -> int:
        return key_hash(key) % len(self.owners)

    def owner(self, partition_id: int) -> str:
        if not 0 <= partition_id < len(self.owners):
            raise unknown_partition(partition_id)
        return self.owners[partition_id]

    def partitions_for_range(self, start: bytes, end: bytes | None) -> ScanRoute:
        return hash_scan_route(self, start, end)

    def overlaps(self, new: Layout) -> Iterator[Overlap]:
        """Keys never change partition; only owners change."""
        other = expect_layout_type(new, FixedLayout)
        if other.partition_count != self.partition_count:
            raise PartitioningError(
                f"partition count changed from {self.partition_count} to {other.partition_count}:"
                " that rehashes every key; create a new keyspace instead"
            )
        share = 1.0 / self.partition_count
        for partition_id in self.partition_ids:
            yield Overlap(partition_id, partition_id, 1.0, share)

    def to_dict(self) -> dict[str, object]:
        return {"strategy": "fixed", "owners": list(self.owners)}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> FixedLayout:
        return cls(tuple(str_list(data, "owners")))


@dataclass(frozen=True, slots=True)
class FixedStrategy:
    partition_count: int = DEFAULT_PARTITION_COUNT

    def __post_init__(self) -> None:
        if not 1 <= self.partition_count <= PARTITION_COUNT_MAX:
            raise PartitioningError(
                f"fixed: partition count must be between 1 and {PARTITION_COUNT_MAX},"
                f" got {self.partition_count}"
            )

    @property
    def name(self) -> str:
        return "fixed"

    def to_text(self) -> str:
        return f"fixed:{self.partition_count}"

    def initial_layout(self, members: Members, rng: RandomSource) -> FixedLayout:
        validate_members(members)
        return FixedLayout(tuple(interleaved_owners(self.partition_count, members)))

    def rebalance(self, layout: Layout, members: Members, rng: RandomSource) -> FixedLayout:
        """Move whole partitions to even out counts by weight, as few as possible."""
        validate_members(members)
        current = expect_layout_type(layout, FixedLayout)
        if current.partition_count != self.partition_count:
            raise PartitioningError(
                f"layout has {current.partition_count} partitions, the spec says"
                f" {self.partition_count}: the count of a fixed keyspace never changes"
            )
        return FixedLayout(tuple(reassigned_owners(current.owners, members, rng)))
