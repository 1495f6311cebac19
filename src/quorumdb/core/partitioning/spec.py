"""Partitioning specs as users type them: `fixed:256`, `ring:vnodes=128`, `range:split_bytes=64MiB`.

Grammar: NAME[:PARAMETER,...] where a parameter is `name=value`, or a bare value
for the strategy's main parameter (`fixed:256`, `per-node:8`, `ring:128`).
Byte sizes take KiB, MiB or GiB. The result is the strategy object itself.
"""

from __future__ import annotations

import re

from quorumdb.core.partitioning.fixed import DEFAULT_PARTITION_COUNT, FixedStrategy
from quorumdb.core.partitioning.interface import PartitioningError, PartitioningStrategy
from quorumdb.core.partitioning.key_range_policy import (
    DEFAULT_SPLIT_BYTES,
    DEFAULT_SPLIT_OPS_PER_SECOND,
    KeyRangeStrategy,
)
from quorumdb.core.partitioning.mod_n import ModNStrategy
from quorumdb.core.partitioning.per_node import DEFAULT_PARTITIONS_PER_NODE, PerNodeStrategy
from quorumdb.core.partitioning.ring import DEFAULT_VNODES, RingStrategy

SPEC_LENGTH_MAX = 200
_SIZE_SUFFIXES = {"": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}
_NUMBER = re.compile(r"^([0-9][0-9_]*)([a-z]*)$")

# strategy name -> (parameter names, the one a bare value sets or None)
PARAMETERS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "mod-n": ((), None),
    "fixed": (("partitions",), "partitions"),
    "range": (("split_bytes", "split_ops_per_second", "merge_bytes"), None),
    "per-node": (("partitions",), "partitions"),
    "ring": (("vnodes",), "vnodes"),
}


def parse_partitioning(text: str) -> PartitioningStrategy:
    """The validated strategy a spec names; `PartitioningError` says what is wrong."""
    if len(text) > SPEC_LENGTH_MAX:
        raise PartitioningError(f"partitioning spec longer than {SPEC_LENGTH_MAX} characters")
    name, _, parameter_text = text.strip().partition(":")
    if name not in PARAMETERS:
        raise PartitioningError(
            f"unknown partitioning {name!r}: expected one of {', '.join(PARAMETERS)}"
        )
    values = _parameters(name, parameter_text)
    if name == "mod-n":
        return ModNStrategy()
    if name == "fixed":
        return FixedStrategy(values.get("partitions", DEFAULT_PARTITION_COUNT))
    if name == "per-node":
        return PerNodeStrategy(values.get("partitions", DEFAULT_PARTITIONS_PER_NODE))
    if name == "ring":
        return RingStrategy(values.get("vnodes", DEFAULT_VNODES))
    split_bytes = values.get("split_bytes", DEFAULT_SPLIT_BYTES)
    return KeyRangeStrategy(
        split_bytes,
        values.get("split_ops_per_second", DEFAULT_SPLIT_OPS_PER_SECOND),
        values.get("merge_bytes", split_bytes // 4),
    )


def _parameters(name: str, text: str) -> dict[str, int]:
    allowed, positional = PARAMETERS[name]
    values: dict[str, int] = {}
    if not text:
        return values
    for item in text.split(","):
        key, equals, raw = item.strip().partition("=")
        if not equals:
            key, raw = positional or "", key
            if positional is None:
                raise PartitioningError(_usage(name, f"{raw!r} needs a name, as in name=value"))
        if key not in allowed:
            raise PartitioningError(_usage(name, f"unknown parameter {key!r}"))
        if key in values:
            raise PartitioningError(_usage(name, f"parameter {key!r} given twice"))
        values[key] = _number(name, key, raw.strip())
    return values


def _number(name: str, key: str, raw: str) -> int:
    match = _NUMBER.match(raw.lower())
    suffix = match.group(2) if match else ""
    if match is None or suffix not in _SIZE_SUFFIXES or (suffix and not key.endswith("_bytes")):
        unit = " (a byte size may end in KiB, MiB or GiB)" if key.endswith("_bytes") else ""
        raise PartitioningError(_usage(name, f"{key} must be a whole number{unit}, got {raw!r}"))
    return int(match.group(1)) * _SIZE_SUFFIXES[suffix]


def _usage(name: str, problem: str) -> str:
    allowed, _ = PARAMETERS[name]
    accepted = ", ".join(allowed) if allowed else "no parameters"
    return f"partitioning {name!r}: {problem}; it accepts {accepted}"
