"""Shared helpers of the partitioning tests: member sets, sampled keys, placement per key."""

from __future__ import annotations

import random

from hypothesis import strategies as st

from quorumdb.core.partitioning import Layout, parse_partitioning

HASH_SPECS = ("mod-n", "fixed:256", "per-node:8", "ring:vnodes=64")
ALL_SPECS = (*HASH_SPECS, "range:split_bytes=4KiB,split_ops_per_second=100,merge_bytes=1KiB")


def sample_keys(seed: int, count: int) -> list[bytes]:
    """Keys of mixed shapes: sequential ids, random bytes, and hash-tagged compound keys."""
    rng = random.Random(seed)
    keys: list[bytes] = []
    for index in range(count):
        shape = index % 3
        if shape == 0:
            keys.append(b"user:%08d" % rng.randrange(10**8))
        elif shape == 1:
            keys.append(rng.randbytes(rng.randrange(1, 12)))
        else:
            keys.append(b"{user:%d}:post:%04d" % (rng.randrange(1000), rng.randrange(10**4)))
    return keys


def placement(layout: Layout, key: bytes) -> tuple[int, str]:
    partition_id = layout.locate(key)
    return partition_id, layout.owner(partition_id)


def members_strategy(max_size: int = 8) -> st.SearchStrategy[dict[str, int]]:
    return st.dictionaries(
        st.sampled_from([f"node{index}" for index in range(12)]),
        st.integers(1, 3),
        min_size=1,
        max_size=max_size,
    )


def layout_for(spec: str, members: dict[str, int], seed: int) -> Layout:
    return parse_partitioning(spec).initial_layout(members, random.Random(seed))
