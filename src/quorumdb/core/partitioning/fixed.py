"""Fixed number of partitions: hash the key, take it modulo the partition count.

The count never changes after creation, so rebalancing moves whole partitions
between nodes and never rehashes keys (unlike hash mod N over nodes).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass


def partition_of(key: bytes, partition_count: int) -> int:
    """Stable across processes and machines (unlike Python's salted `hash`)."""
    return zlib.crc32(key) % partition_count


@dataclass(frozen=True, slots=True)
class FixedPartitions:
    partition_count: int

    def locate(self, key: bytes) -> int:
        return zlib.crc32(key) % self.partition_count

    def assign(self, members: tuple[str, ...]) -> tuple[str, ...]:
        """Owner of each partition: round-robin over the members in sorted order."""
        if not members:
            raise ValueError("cannot assign partitions to an empty cluster")
        ordered = sorted(members)
        return tuple(ordered[partition % len(ordered)] for partition in range(self.partition_count))
