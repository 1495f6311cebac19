"""Assigning whole partitions to weighted nodes, and re-assigning them with the fewest moves.

Used by the strategies whose partitions do not depend on the members (`fixed`,
`range`): joining, leaving or re-weighting only changes who owns what.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from quorumdb.core.partitioning.interface import Members, RandomSource


def interleaved_owners(partition_count: int, members: Members) -> list[str]:
    """Owners by smooth weighted round-robin over the members in sorted order.

    With equal weights this is plain round-robin (partition p on the p-th member
    mod N), the assignment `fixed` keyspaces always had; with weights every node
    gets its share within one partition, spread along the id order."""
    ordered = sorted(members)
    total_weight = sum(members.values())
    credit = dict.fromkeys(ordered, 0)
    owners: list[str] = []
    for _ in range(partition_count):
        for node_id in ordered:
            credit[node_id] += members[node_id]
        chosen = max(ordered, key=lambda node_id: credit[node_id])
        credit[chosen] -= total_weight
        owners.append(chosen)
    return owners


def weighted_quotas(
    partition_count: int, members: Members, current_counts: Mapping[str, int]
) -> dict[str, int]:
    """How many partitions each member should own: floor or ceiling of its weighted share.

    Who gets a ceiling is decided in favour of members that already own more, so
    fewer partitions move."""
    total_weight = sum(members.values())
    quotas = {
        node_id: partition_count * weight // total_weight for node_id, weight in members.items()
    }
    remaining = partition_count - sum(quotas.values())
    candidates = sorted(
        (node_id for node_id, weight in members.items() if partition_count * weight % total_weight),
        key=lambda node_id: (
            -current_counts.get(node_id, 0),
            -(partition_count * members[node_id] % total_weight),
            node_id,
        ),
    )
    assert remaining <= len(candidates)
    for node_id in candidates[:remaining]:
        quotas[node_id] += 1
    return quotas


def reassigned_owners(owners: Sequence[str], members: Members, rng: RandomSource) -> list[str]:
    """New owners that meet the weighted quotas while moving the fewest partitions.

    Partitions of departed members and the excess of members over their quota go
    to a pool (which of a member's partitions leave is random); the pool is dealt
    to members under their quota. The number moved is the minimum for the quotas."""
    current_counts: dict[str, int] = {}
    for owner in owners:
        current_counts[owner] = current_counts.get(owner, 0) + 1
    quotas = weighted_quotas(len(owners), members, current_counts)
    pool = [index for index, owner in enumerate(owners) if owner not in members]
    for node_id in sorted(members):
        mine = [index for index, owner in enumerate(owners) if owner == node_id]
        excess = len(mine) - quotas[node_id]
        if excess > 0:
            rng.shuffle(mine)
            pool.extend(mine[:excess])
    pool.sort()
    rng.shuffle(pool)
    result = list(owners)
    for node_id in sorted(members):
        deficit = quotas[node_id] - current_counts.get(node_id, 0)
        for _ in range(max(deficit, 0)):
            result[pool.pop()] = node_id
    assert not pool
    return result
