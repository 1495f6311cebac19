"""Specs as users type them parse into validated strategies; bad ones say what is wrong."""

from __future__ import annotations

import pytest

from quorumdb.core.partitioning import (
    FixedStrategy,
    KeyRangeStrategy,
    ModNStrategy,
    PartitioningError,
    PerNodeStrategy,
    RingStrategy,
    parse_partitioning,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mod-n", ModNStrategy()),
        ("fixed", FixedStrategy(64)),
        ("fixed:256", FixedStrategy(256)),
        ("fixed:partitions=16", FixedStrategy(16)),
        ("range", KeyRangeStrategy()),
        (
            "range:split_bytes=1MiB,split_ops_per_second=500",
            KeyRangeStrategy(1 << 20, 500, 1 << 18),
        ),
        ("range:merge_bytes=0", KeyRangeStrategy(merge_bytes=0)),
        ("per-node", PerNodeStrategy(8)),
        ("per-node:4", PerNodeStrategy(4)),
        ("ring", RingStrategy(128)),
        ("ring:vnodes=16", RingStrategy(16)),
        ("ring:32", RingStrategy(32)),
    ],
)
def test_valid_specs(text: str, expected: object) -> None:
    parsed = parse_partitioning(text)
    assert parsed == expected
    assert parse_partitioning(parsed.to_text()) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hash", "unknown partitioning 'hash': expected one of mod-n, fixed, range"),
        ("fixed:0", "between 1 and 4096"),
        ("fixed:lots", "partitions must be a whole number"),
        ("fixed:count=8", "unknown parameter 'count'; it accepts partitions"),
        ("fixed:8,partitions=9", "given twice"),
        ("mod-n:3", "it accepts no parameters"),
        ("range:1000", "needs a name"),
        ("range:split_bytes=10MB", "KiB, MiB or GiB"),
        ("range:split_bytes=1MiB,merge_bytes=1MiB", "half of split_bytes"),
        ("ring:vnodes=0", "between 1 and 4096"),
        ("ring:vnodes=8KiB", "whole number"),
        ("per-node:-1", "whole number"),
        ("fixed:" + "9" * 300, "longer than"),
    ],
)
def test_invalid_specs(text: str, message: str) -> None:
    with pytest.raises(PartitioningError, match=message.replace("(", r"\(")):
        parse_partitioning(text)
