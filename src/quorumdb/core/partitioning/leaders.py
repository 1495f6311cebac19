"""Placement of a replicated keyspace: the layout decides partitions, the replica sets
decide who answers for each.

In a single-leader keyspace the layout's owner of a partition is where its replica set
started; after a failover the leader is another member of the set. This view answers
`owner` with the current leader, so nodes route, clients locate keys and redirects
point at the leader without knowing about replication.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from quorumdb.core.partitioning.interface import Layout, Overlap, PartitioningError, ScanRoute


@dataclass(frozen=True, slots=True)
class LeaderLayout:
    inner: Layout
    leaders: Mapping[int, str]  # partition -> its current leader

    @property
    def strategy_name(self) -> str:
        return self.inner.strategy_name

    @property
    def partition_ids(self) -> tuple[int, ...]:
        return self.inner.partition_ids

    def locate(self, key: bytes) -> int:
        return self.inner.locate(key)

    def owner(self, partition_id: int) -> str:
        leader = self.leaders.get(partition_id)
        return leader if leader is not None else self.inner.owner(partition_id)

    def partitions_for_range(self, start: bytes, end: bytes | None) -> ScanRoute:
        return self.inner.partitions_for_range(start, end)

    def overlaps(self, new: Layout) -> Iterator[Overlap]:
        raise PartitioningError("replicated keyspaces are not rebalanced by partition copies")

    def to_dict(self) -> dict[str, object]:
        return {
            "strategy": "leaders",
            "inner": self.inner.to_dict(),
            "leaders": {str(partition): leader for partition, leader in self.leaders.items()},
        }
