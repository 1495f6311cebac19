"""Hash mod N over the nodes: the key's hash modulo the member count picks a slot.

Each member owns exactly one slot, and a slot's partition id is tied to the
member for as long as it stays (a returning member gets a fresh id). Slots keep
their order; a joiner is appended and a leaver's slot is removed. So going from
N to N' slots, a key stays iff `hash % N == hash % N'` (same slot index, same
id, same owner) and otherwise moves to another member: about N/(N+1) of all keys
on a join, the notes' reason not to do this. Weights are ignored: one slot per
member, whatever its weight.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

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
from quorumdb.core.partitioning.serialization import int_list, integer, str_list


@dataclass(frozen=True, slots=True)
class ModNLayout:
    """Slot i (partition `slot_ids[i]`, on `slot_owners[i]`) holds keys with hash % N == i."""

    slot_ids: tuple[int, ...]
    slot_owners: tuple[str, ...]
    next_partition_id: int
    _owner_by_id: dict[int, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.slot_ids or len(self.slot_ids) != len(self.slot_owners):
            raise PartitioningError("mod-n layout needs one id per slot owner, at least one")
        if len(set(self.slot_ids)) != len(self.slot_ids):
            raise PartitioningError("mod-n layout: duplicate slot ids")
        if len(set(self.slot_owners)) != len(self.slot_owners):
            raise PartitioningError("mod-n layout: a member owns more than one slot")
        if max(self.slot_ids) >= self.next_partition_id or min(self.slot_ids) < 0:
            raise PartitioningError("mod-n layout: slot ids must lie in [0, next_partition_id)")
        object.__setattr__(
            self, "_owner_by_id", dict(zip(self.slot_ids, self.slot_owners, strict=True))
        )

    @property
    def strategy_name(self) -> str:
        return "mod-n"

    @property
    def partition_ids(self) -> tuple[int, ...]:
        return self.slot_ids

    def locate(self, key: bytes) -> int:
        return self.slot_ids[key_hash(key) % len(self.slot_ids)]

    def owner(self, partition_id: int) -> str:
        try:
            return self._owner_by_id[partition_id]
        except KeyError:
            raise unknown_partition(partition_id) from None

    def partitions_for_range(self, start: bytes, end: bytes | None) -> ScanRoute:
        return hash_scan_route(self, start, end)

    def overlaps(self, new: Layout) -> Iterator[Overlap]:
        """Old slot i meets new slot j iff i == j mod gcd(N, N'), each time for gcd/N' of i's keys.

        (Residues mod lcm(N, N') pair the two slot indices one to one.)"""
        other = expect_layout_type(new, ModNLayout)
        old_count, new_count = len(self.slot_ids), len(other.slot_ids)
        divisor = math.gcd(old_count, new_count)
        fraction_of_old = divisor / new_count
        fraction_of_keyspace = divisor / (old_count * new_count)
        for old_index, old_id in enumerate(self.slot_ids):
            for new_index in range(old_index % divisor, new_count, divisor):
                yield Overlap(
                    old_id, other.slot_ids[new_index], fraction_of_old, fraction_of_keyspace
                )

    def to_dict(self) -> dict[str, object]:
        return {
            "strategy": "mod-n",
            "slot_ids": list(self.slot_ids),
            "slot_owners": list(self.slot_owners),
            "next_partition_id": self.next_partition_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ModNLayout:
        slot_ids, slot_owners = int_list(data, "slot_ids"), str_list(data, "slot_owners")
        next_id = integer(data, "next_partition_id")
        return cls(tuple(slot_ids), tuple(slot_owners), next_id)


@dataclass(frozen=True, slots=True)
class ModNStrategy:
    @property
    def name(self) -> str:
        return "mod-n"

    def to_text(self) -> str:
        return "mod-n"

    def initial_layout(self, members: Members, rng: RandomSource) -> ModNLayout:
        validate_members(members)
        owners = tuple(sorted(members))
        return ModNLayout(tuple(range(len(owners))), owners, len(owners))

    def rebalance(self, layout: Layout, members: Members, rng: RandomSource) -> ModNLayout:
        """Drop the slots of leavers, append one fresh slot per joiner (in name order)."""
        validate_members(members)
        current = expect_layout_type(layout, ModNLayout)
        kept = [
            (slot_id, owner)
            for slot_id, owner in zip(current.slot_ids, current.slot_owners, strict=True)
            if owner in members
        ]
        present = {owner for _, owner in kept}
        next_id = current.next_partition_id
        for node_id in sorted(members):
            if node_id not in present:
                kept.append((next_id, node_id))
                next_id += 1
        return ModNLayout(
            tuple(slot_id for slot_id, _ in kept), tuple(owner for _, owner in kept), next_id
        )
