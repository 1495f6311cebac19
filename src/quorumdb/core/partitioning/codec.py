"""Layouts to and from JSON-ready dictionaries (the Raft metadata log and client maps)."""

from __future__ import annotations

from collections.abc import Callable

from quorumdb.core.partitioning.fixed import FixedLayout
from quorumdb.core.partitioning.interface import Layout, PartitioningError
from quorumdb.core.partitioning.key_range import KeyRangeLayout
from quorumdb.core.partitioning.leaders import LeaderLayout
from quorumdb.core.partitioning.mod_n import ModNLayout
from quorumdb.core.partitioning.per_node import PerNodeLayout
from quorumdb.core.partitioning.ring import RingLayout
from quorumdb.core.partitioning.transition import TransitionLayout

_DECODERS: dict[str, Callable[[dict[str, object]], Layout]] = {
    "mod-n": ModNLayout.from_dict,
    "fixed": FixedLayout.from_dict,
    "range": KeyRangeLayout.from_dict,
    "per-node": PerNodeLayout.from_dict,
    "ring": RingLayout.from_dict,
}


def _transition_from_dict(data: dict[str, object]) -> Layout:
    old, new, done = data["old"], data["new"], data["done"]
    if not isinstance(old, dict) or not isinstance(new, dict) or not isinstance(done, list):
        raise TypeError("a transition holds two layouts and a list of done pairs")
    pairs = frozenset((int(pair[0]), int(pair[1])) for pair in done)
    return TransitionLayout(layout_from_dict(old), layout_from_dict(new), pairs)


def _leaders_from_dict(data: dict[str, object]) -> Layout:
    inner, leaders = data["inner"], data["leaders"]
    if not isinstance(inner, dict) or not isinstance(leaders, dict):
        raise TypeError("a leaders layout holds a layout and a map of partition leaders")
    chosen = {int(partition): str(leader) for partition, leader in leaders.items()}
    return LeaderLayout(layout_from_dict(inner), chosen)


_WRAPPERS: dict[str, Callable[[dict[str, object]], Layout]] = {
    "transition": _transition_from_dict,
    "leaders": _leaders_from_dict,
}


def layout_from_dict(data: dict[str, object]) -> Layout:
    """Inverse of `layout.to_dict()`; raises `PartitioningError` on anything malformed."""
    wrapper = _WRAPPERS.get(str(data.get("strategy")))
    if wrapper is not None:
        try:
            return wrapper(data)
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise PartitioningError(f"malformed {data['strategy']} layout: {error}") from None
    decoder = _DECODERS.get(str(data.get("strategy")))
    if decoder is None:
        raise PartitioningError(f"unknown layout strategy {data.get('strategy')!r}")
    try:
        return decoder(data)
    except (KeyError, TypeError) as error:
        raise PartitioningError(f"malformed {data['strategy']} layout: {error}") from None
