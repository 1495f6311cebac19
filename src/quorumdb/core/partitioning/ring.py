"""Consistent hashing with virtual nodes: each member puts `vnodes x weight` tokens on a ring.

A key belongs to the first token above its hash (wrapping around), and each
token (virtual node) is one partition. Tokens come from the member's name, so
the ring of a member set does not depend on history; a joiner's tokens each take
the arc just below them from the next token's partition, and a leaver's arcs go
to the next token up. Both move about 1/(N+1) of the keys.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise

from quorumdb.core.partitioning.arcs import Segment, arc_overlaps
from quorumdb.core.partitioning.hashing import TOKEN_SPACE, key_hash, name_token
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

DEFAULT_VNODES = 128
VNODES_MAX = 4096


@dataclass(frozen=True, slots=True)
class VirtualNode:
    token: int
    partition_id: int
    owner: str
    index: int  # the owner's n-th virtual node: 0 <= index < vnodes x weight


@dataclass(frozen=True, slots=True)
class RingLayout:
    """Virtual nodes sorted by token; vnode i holds hashes in [token[i-1], token[i])."""

    vnodes: tuple[VirtualNode, ...]
    next_partition_id: int
    tokens: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _ids: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _owner_by_id: dict[int, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.vnodes:
            raise PartitioningError("a ring needs at least one virtual node")
        tokens = tuple(vnode.token for vnode in self.vnodes)
        if any(not 0 <= token < TOKEN_SPACE for token in tokens):
            raise PartitioningError("ring: tokens must lie in the token space")
        if any(left >= right for left, right in pairwise(tokens)):
            raise PartitioningError("ring: tokens must be strictly increasing")
        ids = tuple(vnode.partition_id for vnode in self.vnodes)
        if len(set(ids)) != len(ids) or min(ids) < 0 or max(ids) >= self.next_partition_id:
            raise PartitioningError("ring: partition ids must be unique, in [0, next_partition_id)")
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "_ids", ids)
        object.__setattr__(self, "_owner_by_id", {v.partition_id: v.owner for v in self.vnodes})

    @property
    def strategy_name(self) -> str:
        return "ring"

    @property
    def partition_ids(self) -> tuple[int, ...]:
        return self._ids

    def locate(self, key: bytes) -> int:
        index = bisect_right(self.tokens, key_hash(key))
        return self._ids[index if index < len(self._ids) else 0]

    def owner(self, partition_id: int) -> str:
        try:
            return self._owner_by_id[partition_id]
        except KeyError:
            raise unknown_partition(partition_id) from None

    def partitions_for_range(self, start: bytes, end: bytes | None) -> ScanRoute:
        return hash_scan_route(self, start, end)

    def segments(self) -> list[Segment]:
        tokens, ids = self.tokens, self._ids
        pieces = [(tokens[index - 1], tokens[index], ids[index]) for index in range(1, len(ids))]
        if tokens[0] > 0:
            pieces.insert(0, (0, tokens[0], ids[0]))
        pieces.append((tokens[-1], TOKEN_SPACE, ids[0]))
        return pieces

    def overlaps(self, new: Layout) -> Iterator[Overlap]:
        return arc_overlaps(self.segments(), expect_layout_type(new, RingLayout).segments())

    def to_dict(self) -> dict[str, object]:
        return {
            "strategy": "ring",
            "tokens": list(self.tokens),
            "partition_ids": list(self._ids),
            "owners": [vnode.owner for vnode in self.vnodes],
            "indexes": [vnode.index for vnode in self.vnodes],
            "next_partition_id": self.next_partition_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> RingLayout:
        tokens, ids = int_list(data, "tokens"), int_list(data, "partition_ids")
        owners, indexes = str_list(data, "owners"), int_list(data, "indexes")
        if not len(tokens) == len(ids) == len(owners) == len(indexes):
            raise PartitioningError("ring layout: tokens, ids, owners and indexes differ in length")
        next_id = integer(data, "next_partition_id")
        return cls(tuple(map(VirtualNode, tokens, ids, owners, indexes)), next_id)


@dataclass(frozen=True, slots=True)
class RingStrategy:
    vnodes: int = DEFAULT_VNODES

    def __post_init__(self) -> None:
        if not 1 <= self.vnodes <= VNODES_MAX:
            raise PartitioningError(
                f"ring: vnodes must be between 1 and {VNODES_MAX}, got {self.vnodes}"
            )

    @property
    def name(self) -> str:
        return "ring"

    def to_text(self) -> str:
        return f"ring:vnodes={self.vnodes}"

    def initial_layout(self, members: Members, rng: RandomSource) -> RingLayout:
        validate_members(members)
        return self._ring((), 0, members)

    def rebalance(self, layout: Layout, members: Members, rng: RandomSource) -> RingLayout:
        """Keep the virtual nodes members still want; add the missing ones with fresh ids."""
        validate_members(members)
        current = expect_layout_type(layout, RingLayout)
        kept = tuple(
            vnode
            for vnode in current.vnodes
            if vnode.index < self.vnodes * members.get(vnode.owner, 0)
        )
        return self._ring(kept, current.next_partition_id, members)

    def _ring(self, kept: tuple[VirtualNode, ...], next_id: int, members: Members) -> RingLayout:
        present = {(vnode.owner, vnode.index) for vnode in kept}
        taken = {vnode.token for vnode in kept}
        added: list[VirtualNode] = []
        for node_id in sorted(members):
            for index in range(self.vnodes * members[node_id]):
                if (node_id, index) in present:
                    continue
                token = _free_token(f"{node_id}#{index}", taken)
                taken.add(token)
                added.append(VirtualNode(token, next_id, node_id, index))
                next_id += 1
        vnodes = sorted(kept + tuple(added), key=lambda vnode: vnode.token)
        return RingLayout(tuple(vnodes), next_id)


def _free_token(name: str, taken: set[int]) -> int:
    """The name's token, or on a (rare, 32-bit) collision a re-hash with a counter."""
    token = name_token(name)
    attempt = 0
    while token in taken:
        attempt += 1
        token = name_token(f"{name}~{attempt}")
    return token
