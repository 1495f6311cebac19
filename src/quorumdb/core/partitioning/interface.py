"""What every partitioning strategy offers: an immutable layout and the moves between layouts.

A `Layout` answers where a key lives; a `PartitioningStrategy` makes the first
layout of a keyspace and the next one when members join, leave or change
weight. Partition ids are identities: a key stored under partition p on node X
stays correctly placed as long as the new layout still locates it to p and p is
still owned by X. Ids are never reused, so a stale id can never alias new data.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableSequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from quorumdb.core.partitioning.hashing import shared_hash_tag

Members = Mapping[str, int]
"""Node id -> weight (int >= 1): a node of weight 2 gets twice the partitions of weight 1."""

WEIGHT_MAX = 1000
LayoutType = TypeVar("LayoutType")


class RandomSource(Protocol):
    """The part of a seeded `random.Random` that strategies use (core never imports `random`)."""

    def random(self) -> float: ...

    def shuffle(self, x: MutableSequence[Any]) -> None: ...


class PartitioningError(ValueError):
    """A partitioning request that cannot be honoured (bad spec, members, split or merge)."""


@dataclass(frozen=True, slots=True)
class ScanRoute:
    """Which partitions a range scan visits.

    `in_key_order`: scanning them one after another yields keys in order (key-range
    layouts); otherwise the caller asks all of them and merges their sorted streams."""

    partition_ids: tuple[int, ...]
    in_key_order: bool


@dataclass(frozen=True, slots=True)
class Overlap:
    """Keys that were in `old_partition` and are now in `new_partition`.

    The fractions are estimates for sizing transfers: of the old partition's keys,
    and of the whole keyspace."""

    old_partition: int
    new_partition: int
    fraction_of_old: float
    fraction_of_keyspace: float


class Layout(Protocol):
    """Where each key of one keyspace lives. Immutable and JSON-serializable."""

    @property
    def strategy_name(self) -> str: ...

    @property
    def partition_ids(self) -> tuple[int, ...]: ...

    def locate(self, key: bytes) -> int: ...

    def owner(self, partition_id: int) -> str: ...

    def partitions_for_range(self, start: bytes, end: bytes | None) -> ScanRoute: ...

    def overlaps(self, new: Layout) -> Iterator[Overlap]:
        """Every non-empty intersection of an old partition (self) with a new one."""
        ...

    def to_dict(self) -> dict[str, object]: ...


class PartitioningStrategy(Protocol):
    """A parsed spec such as `ring:vnodes=128`: makes and changes layouts."""

    @property
    def name(self) -> str: ...

    def to_text(self) -> str: ...

    def initial_layout(self, members: Members, rng: RandomSource) -> Layout: ...

    def rebalance(self, layout: Layout, members: Members, rng: RandomSource) -> Layout: ...


def validate_members(members: Members) -> None:
    if not members:
        raise PartitioningError("cannot place partitions on an empty cluster")
    for node_id, weight in members.items():
        if not isinstance(node_id, str) or not node_id:
            raise PartitioningError(f"node id must be a non-empty string, got {node_id!r}")
        if isinstance(weight, bool) or not isinstance(weight, int):
            raise PartitioningError(f"weight of {node_id} must be an integer, got {weight!r}")
        if not 1 <= weight <= WEIGHT_MAX:
            raise PartitioningError(
                f"weight of {node_id} must be between 1 and {WEIGHT_MAX}, got {weight}"
            )


def expect_layout_type(layout: Layout, layout_type: type[LayoutType]) -> LayoutType:
    if not isinstance(layout, layout_type):
        raise PartitioningError(
            f"expected a {layout_type.__name__}, got a {type(layout).__name__}:"
            " changing a keyspace's strategy is a migration, not a rebalance"
        )
    return layout


def hash_scan_route(layout: Layout, start: bytes, end: bytes | None) -> ScanRoute:
    """Scan route of a hash layout: one partition if the bounds pin a hash tag, else all."""
    if end is not None and shared_hash_tag(start, end) is not None:
        return ScanRoute((layout.locate(start),), in_key_order=True)
    return ScanRoute(layout.partition_ids, in_key_order=False)


def unknown_partition(partition_id: int) -> PartitioningError:
    return PartitioningError(f"no partition {partition_id} in this layout")
