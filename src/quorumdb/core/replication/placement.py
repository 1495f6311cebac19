"""Which nodes hold a partition's replicas: its layout owner first (the first leader),
then the next members in node-id order, wrapping around, so replica sets are spread
evenly and every node computes the same ones from the metadata alone."""

from __future__ import annotations

from collections.abc import Sequence


class PlacementError(ValueError):
    """More replicas asked for than there are members to hold them."""


def replica_nodes(owner: str, members: Sequence[str], count: int) -> list[str]:
    ordered = sorted(members)
    if count > len(ordered):
        raise PlacementError(
            f"{count} replicas need {count} active members; the cluster has {len(ordered)}"
        )
    start = ordered.index(owner)
    return [ordered[(start + offset) % len(ordered)] for offset in range(count)]
