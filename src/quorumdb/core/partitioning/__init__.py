"""Partitioning strategies behind one interface: where each key lives, and what moves when.

`parse_partitioning("ring:vnodes=128")` gives a strategy; its `initial_layout`
and `rebalance` give immutable `Layout`s (`locate`, `owner`, `partition_ids`,
`partitions_for_range`, `to_dict`); `plan_rebalance(old, new, sizes)` lists the
transfers between two layouts. `FixedPartitions` and `partition_of` are the
legacy placement that `core/node.py` still uses.
"""

from quorumdb.core.partitioning.codec import layout_from_dict
from quorumdb.core.partitioning.fixed import (
    FixedLayout,
    FixedPartitions,
    FixedStrategy,
    partition_of,
)
from quorumdb.core.partitioning.hashing import hash_tag_part, key_hash
from quorumdb.core.partitioning.interface import (
    Layout,
    Members,
    PartitioningError,
    PartitioningStrategy,
    RandomSource,
    ScanRoute,
)
from quorumdb.core.partitioning.key_range import KeyRangeLayout, merge, split
from quorumdb.core.partitioning.key_range_policy import (
    KeyRangeStrategy,
    MergeDecision,
    PartitionLoad,
    SplitDecision,
    apply_decisions,
)
from quorumdb.core.partitioning.mod_n import ModNLayout, ModNStrategy
from quorumdb.core.partitioning.per_node import PerNodeLayout, PerNodeStrategy
from quorumdb.core.partitioning.plan import RebalancePlan, Transfer, plan_rebalance
from quorumdb.core.partitioning.ring import RingLayout, RingStrategy
from quorumdb.core.partitioning.spec import parse_partitioning

__all__ = [
    "FixedLayout",
    "FixedPartitions",
    "FixedStrategy",
    "KeyRangeLayout",
    "KeyRangeStrategy",
    "Layout",
    "Members",
    "MergeDecision",
    "ModNLayout",
    "ModNStrategy",
    "PartitionLoad",
    "PartitioningError",
    "PartitioningStrategy",
    "PerNodeLayout",
    "PerNodeStrategy",
    "RandomSource",
    "RebalancePlan",
    "RingLayout",
    "RingStrategy",
    "ScanRoute",
    "SplitDecision",
    "Transfer",
    "apply_decisions",
    "hash_tag_part",
    "key_hash",
    "layout_from_dict",
    "merge",
    "parse_partitioning",
    "partition_of",
    "plan_rebalance",
    "split",
]
