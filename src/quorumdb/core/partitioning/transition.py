"""Placement while a rebalancing plan runs: each transfer switches ownership on its own.

A key moves from (old partition, old owner) to (new partition, new owner) exactly when
the transfer that carries it, named by the pair (old partition, new partition), is done.
Partition ids are identities, never reused, so the pair names one transfer and the
placement of every key is a pure function of the metadata: every node computes the
same one. Keys whose placement does not change are never in a transfer.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from quorumdb.core.partitioning.interface import Layout, Overlap, PartitioningError, ScanRoute


@dataclass(frozen=True, slots=True)
class TransitionLayout:
    old: Layout
    new: Layout
    done: frozenset[tuple[int, int]]
    partition_ids: tuple[int, ...] = field(init=False)
    _switched_targets: frozenset[int] = field(init=False)

    def __post_init__(self) -> None:
        ids = sorted(set(self.old.partition_ids) | set(self.new.partition_ids))
        object.__setattr__(self, "partition_ids", tuple(ids))
        object.__setattr__(self, "_switched_targets", frozenset(new for _, new in self.done))

    @property
    def strategy_name(self) -> str:
        return self.old.strategy_name

    def locate(self, key: bytes) -> int:
        old_partition = self.old.locate(key)
        new_partition = self.new.locate(key)
        if (old_partition, new_partition) in self.done:
            return new_partition
        return old_partition

    def owner(self, partition_id: int) -> str:
        if partition_id in self._switched_targets:
            return self.new.owner(partition_id)
        if partition_id in self.old.partition_ids:
            return self.old.owner(partition_id)
        return self.new.owner(partition_id)

    def partitions_for_range(self, start: bytes, end: bytes | None) -> ScanRoute:
        """Every partition of either layout, merged: a plan is short-lived, scans rare."""
        return ScanRoute(self.partition_ids, in_key_order=False)

    def overlaps(self, new: Layout) -> Iterator[Overlap]:
        raise PartitioningError("a plan starts from an installed layout, not a transition")

    def to_dict(self) -> dict[str, object]:
        return {
            "strategy": "transition",
            "old": self.old.to_dict(),
            "new": self.new.to_dict(),
            "done": sorted([old, new] for old, new in self.done),
        }
