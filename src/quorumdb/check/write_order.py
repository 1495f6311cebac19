"""The order of one key's writes, for the session checkers: inferred, or from positions.

Inferred order. A key fits when all its writes are puts or deletes by one process and
no two puts write the same value (the workload's `w<p>-<j>` keys). Its writes rank in
the writer's invocation order (a process has one operation open at a time). A value
read maps to the ranks that could have produced it:
- a put's value: that put's rank, exactly when it ended `ok`; an `info` put may take
  effect at any time after its invocation, even after later writes, so [rank, end);
- absent (None): the initial state (rank -1) or any `ok` or `info` delete, likewise;
- the value of a `fail` put, or one no one wrote: no rank at all. Such reads are not
  judged by the session checkers; the acknowledged-writes and linearizability
  checkers report them.

Positions. An `ok` event may carry the replication log `position` it was served or
written at; two positioned events of one key compare as (epoch, sequence) pairs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

from quorumdb.check.history import HistoryOperation, HistoryValue

UNBOUNDED = sys.maxsize
INITIAL_RANK = -1
_WRITES = ("put", "delete", "increment", "append")


@dataclass(frozen=True, slots=True)
class RankRange:
    """Ranks low..high (inclusive) at which a value read could have been written."""

    low: int
    high: int


@dataclass(frozen=True, slots=True)
class WriteOrder:
    """One fitting key's writes, in the writer's invocation order."""

    key: str
    writes: tuple[HistoryOperation, ...]

    def rank(self, write: HistoryOperation) -> int:
        return self.writes.index(write)

    def ranks_of(self, value: HistoryValue) -> list[RankRange]:
        """Where a value read could come from; empty when no write could produce it."""
        ranges = [RankRange(INITIAL_RANK, INITIAL_RANK)] if value is None else []
        for rank, write in enumerate(self.writes):
            if write.outcome == "fail" or written_value(write) != value:
                continue
            high = rank if write.outcome == "ok" else UNBOUNDED
            ranges.append(RankRange(rank, high))
        return ranges


def written_value(write: HistoryOperation) -> str | None:
    """The value a put stores, or None for a delete."""
    if write.f == "delete":
        return None
    value = write.invoke.value
    assert isinstance(value, str), f"put of a non-string value at {write.invoke.index}"
    return value


def earliest_rank_from(ranges: Sequence[RankRange], floor: int) -> int | None:
    """The smallest rank at or above `floor` among `ranges`, or None if there is none."""
    candidates = [max(item.low, floor) for item in ranges if item.high >= floor]
    return min(candidates, default=None)


def is_write(operation: HistoryOperation) -> bool:
    return operation.f in _WRITES


def inferred_orders(operations: Sequence[HistoryOperation]) -> dict[str, WriteOrder]:
    """The keys whose write order can be inferred (see the module docstring)."""
    by_key: dict[str, list[HistoryOperation]] = {}
    for operation in operations:
        by_key.setdefault(operation.key, []).append(operation)
    orders: dict[str, WriteOrder] = {}
    for key, key_operations in by_key.items():
        writes = [operation for operation in key_operations if is_write(operation)]
        if not writes or any(write.f not in ("put", "delete") for write in writes):
            continue
        if len({write.process for write in writes}) != 1:
            continue
        values = [write.invoke.value for write in writes if write.f == "put"]
        if len(set(values)) != len(values):
            continue
        orders[key] = WriteOrder(key, tuple(writes))
    return orders
