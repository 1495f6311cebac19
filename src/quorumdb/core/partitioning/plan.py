"""Rebalancing plans: which keys move from which (node, partition) to which, and how many bytes.

A plan covers exactly the keys whose placement changes: a key in
`source_partition` on `source_node` goes to `target_partition` on `target_node`
iff the new layout locates it there. A transfer whose nodes are equal is a
local re-file (for example the upper half after a split); the rest cross the
network. Byte counts are estimates from the old partitions' sizes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from quorumdb.core.partitioning.interface import Layout


@dataclass(frozen=True, slots=True)
class Transfer:
    source_node: str
    source_partition: int
    target_node: str
    target_partition: int
    estimated_bytes: int

    @property
    def is_local(self) -> bool:
        return self.source_node == self.target_node

    def to_dict(self) -> dict[str, object]:
        return {
            "source_node": self.source_node,
            "source_partition": self.source_partition,
            "target_node": self.target_node,
            "target_partition": self.target_partition,
            "estimated_bytes": self.estimated_bytes,
        }


@dataclass(frozen=True, slots=True)
class RebalancePlan:
    transfers: tuple[Transfer, ...]
    estimated_bytes: int  # over all transfers, local re-files included
    network_bytes: int  # transfers between different nodes only
    moved_fraction: float  # estimated share of all keys that change (partition, owner)

    def to_dict(self) -> dict[str, object]:
        return {
            "transfers": [transfer.to_dict() for transfer in self.transfers],
            "estimated_bytes": self.estimated_bytes,
            "network_bytes": self.network_bytes,
            "moved_fraction": self.moved_fraction,
        }


def plan_rebalance(
    old: Layout, new: Layout, partition_size_bytes: Mapping[int, int]
) -> RebalancePlan:
    """Transfers from old to new, sized by `partition_size_bytes` of the old partitions.

    The moved fraction weighs by those sizes when any are given, else by each
    partition's share of the keyspace."""
    transfers: list[Transfer] = []
    moved_by_share = moved_bytes = 0.0
    for overlap in old.overlaps(new):
        source_node = old.owner(overlap.old_partition)
        target_node = new.owner(overlap.new_partition)
        if (overlap.old_partition, source_node) == (overlap.new_partition, target_node):
            continue
        size = partition_size_bytes.get(overlap.old_partition, 0)
        estimated = size * overlap.fraction_of_old
        moved_bytes += estimated
        transfers.append(
            Transfer(
                source_node,
                overlap.old_partition,
                target_node,
                overlap.new_partition,
                round(estimated),
            )
        )
        moved_by_share += overlap.fraction_of_keyspace
    transfers.sort(key=lambda t: (t.source_node, t.source_partition, t.target_partition))
    estimated_bytes = sum(transfer.estimated_bytes for transfer in transfers)
    network_bytes = sum(t.estimated_bytes for t in transfers if not t.is_local)
    total_bytes = sum(partition_size_bytes.get(pid, 0) for pid in old.partition_ids)
    moved_fraction = moved_bytes / total_bytes if total_bytes > 0 else moved_by_share
    return RebalancePlan(tuple(transfers), estimated_bytes, network_bytes, min(moved_fraction, 1.0))
