"""Layouts to and from JSON-ready dictionaries (the Raft metadata log and client maps)."""

from __future__ import annotations

from collections.abc import Callable

from quorumdb.core.partitioning.fixed import FixedLayout
from quorumdb.core.partitioning.interface import Layout, PartitioningError
from quorumdb.core.partitioning.key_range import KeyRangeLayout
from quorumdb.core.partitioning.mod_n import ModNLayout
from quorumdb.core.partitioning.per_node import PerNodeLayout
from quorumdb.core.partitioning.ring import RingLayout

_DECODERS: dict[str, Callable[[dict[str, object]], Layout]] = {
    "mod-n": ModNLayout.from_dict,
    "fixed": FixedLayout.from_dict,
    "range": KeyRangeLayout.from_dict,
    "per-node": PerNodeLayout.from_dict,
    "ring": RingLayout.from_dict,
}


def layout_from_dict(data: dict[str, object]) -> Layout:
    """Inverse of `layout.to_dict()`; raises `PartitioningError` on anything malformed."""
    decoder = _DECODERS.get(str(data.get("strategy")))
    if decoder is None:
        raise PartitioningError(f"unknown layout strategy {data.get('strategy')!r}")
    try:
        return decoder(data)
    except (KeyError, TypeError) as error:
        raise PartitioningError(f"malformed {data['strategy']} layout: {error}") from None
