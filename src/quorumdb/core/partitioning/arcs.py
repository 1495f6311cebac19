"""Token arcs: the hash space [0, TOKEN_SPACE) cut into half-open segments, each in a partition.

Ring and per-node layouts both place keys by token; this intersects two such
cuts to see which keys changed partition, and how many (by arc length, since
key hashes are spread evenly over the space).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from quorumdb.core.partitioning.hashing import TOKEN_SPACE
from quorumdb.core.partitioning.interface import Overlap

Segment = tuple[int, int, int]
"""(start token, end token exclusive, partition id); a partition may have several."""


def arc_overlaps(old: Sequence[Segment], new: Sequence[Segment]) -> Iterator[Overlap]:
    """Every (old partition, new partition) pair sharing tokens, sized by shared arc length.

    Both cuts must be sorted, gap-free and cover the whole space."""
    _check_cover(old)
    _check_cover(new)
    old_length: dict[int, int] = {}
    for start, end, partition_id in old:
        old_length[partition_id] = old_length.get(partition_id, 0) + end - start
    shared: dict[tuple[int, int], int] = {}
    old_index = new_index = position = 0
    while position < TOKEN_SPACE:
        _, old_end, old_id = old[old_index]
        _, new_end, new_id = new[new_index]
        end = min(old_end, new_end)
        pair = (old_id, new_id)
        shared[pair] = shared.get(pair, 0) + end - position
        position = end
        if old_end == end:
            old_index += 1
        if new_end == end:
            new_index += 1
    for (old_id, new_id), length in shared.items():
        yield Overlap(old_id, new_id, length / old_length[old_id], length / TOKEN_SPACE)


def _check_cover(segments: Sequence[Segment]) -> None:
    position = 0
    for start, end, _ in segments:
        assert start == position, "segments must be sorted and gap-free"
        assert end > start, "segments must not be empty"
        position = end
    assert position == TOKEN_SPACE, "segments must cover the whole token space"
