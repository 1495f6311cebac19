"""Partitioning strategies: which partition a key belongs to."""

from quorumdb.core.partitioning.fixed import FixedPartitions, partition_of

__all__ = ["FixedPartitions", "partition_of"]
