"""Hash tags follow Redis Cluster's rule exactly; hashing is stable and salt-free."""

from __future__ import annotations

import random
import zlib

from hypothesis import given
from hypothesis import strategies as st

from quorumdb.core.partitioning import hash_tag_part, key_hash, parse_partitioning
from quorumdb.core.partitioning.hashing import TOKEN_SPACE, name_token, shared_hash_tag

KEY_BYTES = st.binary(max_size=12) | st.lists(
    st.sampled_from([b"{", b"}", b"a", b"b", b":"]), max_size=10
).map(b"".join)


def naive_hash_tag_part(key: bytes) -> bytes:
    """Redis Cluster's keyHashSlot, transcribed loop for loop."""
    for start in range(len(key)):
        if key[start : start + 1] == b"{":
            break
    else:
        return key
    for end in range(start + 1, len(key)):
        if key[end : end + 1] == b"}":
            break
    else:
        return key
    if end == start + 1:
        return key
    return key[start + 1 : end]


def test_redis_documented_examples() -> None:
    assert hash_tag_part(b"{user1000}.following") == b"user1000"
    assert hash_tag_part(b"foo{}{bar}") == b"foo{}{bar}"
    assert hash_tag_part(b"foo{{bar}}zap") == b"{bar"
    assert hash_tag_part(b"foo{bar}{zap}") == b"bar"
    assert hash_tag_part(b"no-tag") == b"no-tag"


@given(KEY_BYTES)
def test_hash_tag_part_matches_the_reference(key: bytes) -> None:
    assert hash_tag_part(key) == naive_hash_tag_part(key)


@given(KEY_BYTES)
def test_key_hash_is_crc32_of_the_tag_part(key: bytes) -> None:
    assert key_hash(key) == zlib.crc32(naive_hash_tag_part(key))
    assert 0 <= key_hash(key) < TOKEN_SPACE


def test_hashes_are_pinned_across_processes() -> None:
    """Golden values: any change here moves stored data."""
    assert key_hash(b"user:42") == zlib.crc32(b"user:42") == 0x646F0D86
    assert name_token("node0#0") == 0x0063613A


def test_compound_keys_of_one_tag_share_a_partition_in_every_hash_strategy() -> None:
    members = {f"node{index}": 1 for index in range(5)}
    for spec in ("mod-n", "fixed:256", "per-node:8", "ring:vnodes=64"):
        layout = parse_partitioning(spec).initial_layout(members, random.Random(3))
        posts = {layout.locate(b"{user:1}:post:%04d" % number) for number in range(200)}
        assert posts == {layout.locate(b"user:1")}, spec


@given(KEY_BYTES, KEY_BYTES, KEY_BYTES, KEY_BYTES)
def test_a_shared_tag_holds_for_every_key_between_the_bounds(
    prefix: bytes, start_rest: bytes, end_rest: bytes, middle_rest: bytes
) -> None:
    start, end, middle = prefix + start_rest, prefix + end_rest, prefix + middle_rest
    tag = shared_hash_tag(start, end)
    if tag is None or not start <= middle < end:
        return
    assert hash_tag_part(middle) == tag


def test_bounds_without_a_complete_tag_pin_nothing() -> None:
    assert shared_hash_tag(b"{user:1}:a", b"{user:1}:z") == b"user:1"
    assert shared_hash_tag(b"{user:1", b"{user:2") is None
    assert shared_hash_tag(b"{}:a", b"{}:b") is None
    assert shared_hash_tag(b"user:1", b"user:2") is None


def test_hash_layout_scans_fan_out_unless_a_tag_pins_one_partition() -> None:
    layout = parse_partitioning("ring:vnodes=16").initial_layout({"a": 1, "b": 1}, random.Random(1))
    pinned = layout.partitions_for_range(b"{user:1}:post:0000", b"{user:1}:post:9999")
    assert pinned.partition_ids == (layout.locate(b"user:1"),) and pinned.in_key_order
    spread = layout.partitions_for_range(b"user:1", b"user:2")
    assert spread.partition_ids == layout.partition_ids and not spread.in_key_order
    unbounded = layout.partitions_for_range(b"{user:1}:", None)
    assert unbounded.partition_ids == layout.partition_ids
