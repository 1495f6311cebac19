"""Key-range partitioning: contiguous, sorted ranges of whole keys, split and merged as data grows.

A keyspace starts as one range (the notes' caveat: one node takes all writes
until the first split). A split at a key keeps the lower half's id and gives
the upper half a fresh id on the same node (a local re-file); a merge keeps the
lower id. Ranges move between nodes whole, as in `fixed`, to even out counts by
weight. Keys are ordered by the whole key (hash tags play no part), so a scan
visits the covering ranges in order.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from itertools import pairwise

from quorumdb.core.partitioning.assignment import reassigned_owners
from quorumdb.core.partitioning.interface import (
    Layout,
    Members,
    Overlap,
    PartitioningError,
    RandomSource,
    ScanRoute,
    expect_layout_type,
    unknown_partition,
    validate_members,
)
from quorumdb.core.partitioning.serialization import int_list, integer, str_list


@dataclass(frozen=True, slots=True)
class KeyRange:
    start: bytes  # the range holds keys in [start, next range's start)
    partition_id: int
    owner: str


@dataclass(frozen=True, slots=True)
class KeyRangeLayout:
    ranges: tuple[KeyRange, ...]
    next_partition_id: int
    starts: tuple[bytes, ...] = field(init=False, repr=False, compare=False)
    _ids: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _index_by_id: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.ranges or self.ranges[0].start != b"":
            raise PartitioningError("range layout: the first range must start at the empty key")
        starts = tuple(key_range.start for key_range in self.ranges)
        if any(left >= right for left, right in pairwise(starts)):
            raise PartitioningError("range layout: range starts must be strictly increasing")
        ids = tuple(key_range.partition_id for key_range in self.ranges)
        if len(set(ids)) != len(ids) or min(ids) < 0 or max(ids) >= self.next_partition_id:
            raise PartitioningError("range layout: ids must be unique, in [0, next_partition_id)")
        object.__setattr__(self, "starts", starts)
        object.__setattr__(self, "_ids", ids)
        object.__setattr__(self, "_index_by_id", {pid: index for index, pid in enumerate(ids)})

    @property
    def strategy_name(self) -> str:
        return "range"

    @property
    def partition_ids(self) -> tuple[int, ...]:
        return self._ids

    def locate(self, key: bytes) -> int:
        return self._ids[bisect_right(self.starts, key) - 1]

    def owner(self, partition_id: int) -> str:
        return self.ranges[self.index_of(partition_id)].owner

    def index_of(self, partition_id: int) -> int:
        try:
            return self._index_by_id[partition_id]
        except KeyError:
            raise unknown_partition(partition_id) from None

    def bounds(self, partition_id: int) -> tuple[bytes, bytes | None]:
        """[start, end) of a partition; end None means unbounded."""
        index = self.index_of(partition_id)
        end = self.starts[index + 1] if index + 1 < len(self.starts) else None
        return self.starts[index], end

    def partitions_for_range(self, start: bytes, end: bytes | None) -> ScanRoute:
        """The ranges meeting [start, end), in key order."""
        first = bisect_right(self.starts, start) - 1
        last = len(self.starts) if end is None else max(bisect_left(self.starts, end), first + 1)
        return ScanRoute(self._ids[first:last], in_key_order=True)

    def overlaps(self, new: Layout) -> Iterator[Overlap]:
        """Pairs of old and new ranges sharing keys.

        A layout cannot know how keys spread inside a range, so an old range cut
        into m new pieces is assumed to split evenly (splits are made at sampled
        medians, so one split is about half and half)."""
        other = expect_layout_type(new, KeyRangeLayout)
        pieces: dict[int, list[int]] = {}
        for index, key_range in enumerate(self.ranges):
            start = key_range.start
            end = self.starts[index + 1] if index + 1 < len(self.starts) else None
            pieces[key_range.partition_id] = list(
                other.partitions_for_range(start, end).partition_ids
            )
        old_count = len(self.ranges)
        for old_id, new_ids in pieces.items():
            for new_id in new_ids:
                fraction = 1.0 / len(new_ids)
                yield Overlap(old_id, new_id, fraction, fraction / old_count)

    def to_dict(self) -> dict[str, object]:
        return {
            "strategy": "range",
            "starts": [key_range.start.hex() for key_range in self.ranges],
            "partition_ids": list(self._ids),
            "owners": [key_range.owner for key_range in self.ranges],
            "next_partition_id": self.next_partition_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> KeyRangeLayout:
        hex_starts, ids, owners = (
            str_list(data, "starts"),
            int_list(data, "partition_ids"),
            str_list(data, "owners"),
        )
        if not len(hex_starts) == len(ids) == len(owners):
            raise PartitioningError("range layout: starts, ids and owners differ in length")
        try:
            starts = [bytes.fromhex(text) for text in hex_starts]
        except ValueError:
            raise PartitioningError("range layout: 'starts' must be hex strings") from None
        return cls(tuple(map(KeyRange, starts, ids, owners)), integer(data, "next_partition_id"))


def split(layout: KeyRangeLayout, partition_id: int, split_key: bytes) -> KeyRangeLayout:
    """Cut a range: [start, split_key) keeps the id, [split_key, end) gets a fresh one."""
    index = layout.index_of(partition_id)
    start, end = layout.bounds(partition_id)
    if not start < split_key or (end is not None and not split_key < end):
        raise PartitioningError(
            f"split key {split_key!r} is not strictly inside partition {partition_id}"
            f" [{start!r}, {end!r})"
        )
    upper = KeyRange(split_key, layout.next_partition_id, layout.ranges[index].owner)
    ranges = layout.ranges[: index + 1] + (upper,) + layout.ranges[index + 1 :]
    return KeyRangeLayout(ranges, layout.next_partition_id + 1)


def merge(layout: KeyRangeLayout, left_id: int, right_id: int) -> KeyRangeLayout:
    """Join two neighbouring ranges under the left id and the left owner."""
    index = layout.index_of(left_id)
    if index + 1 >= len(layout.ranges) or layout.ranges[index + 1].partition_id != right_id:
        raise PartitioningError(
            f"partition {right_id} is not the right-hand neighbour of partition {left_id}"
        )
    return replace(layout, ranges=layout.ranges[: index + 1] + layout.ranges[index + 2 :])


def reassign(layout: KeyRangeLayout, members: Members, rng: RandomSource) -> KeyRangeLayout:
    """Move whole ranges to even out counts by weight, as few as possible."""
    validate_members(members)
    owners = reassigned_owners([key_range.owner for key_range in layout.ranges], members, rng)
    ranges = tuple(
        replace(key_range, owner=owner)
        for key_range, owner in zip(layout.ranges, owners, strict=True)
    )
    return KeyRangeLayout(ranges, layout.next_partition_id)


def single_range(members: Members) -> KeyRangeLayout:
    """The layout of a new keyspace: everything in one range, on the heaviest member."""
    validate_members(members)
    owner = min(members, key=lambda node_id: (-members[node_id], node_id))
    return KeyRangeLayout((KeyRange(b"", 0, owner),), 1)
