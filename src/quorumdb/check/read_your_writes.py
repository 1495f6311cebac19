"""Read-your-writes: a session reads its own acknowledged writes, or something later.

Rule: per process (one client session) and key, once a write by that process is
acknowledged (`ok`), every later `ok` get of that key by the same process returns
that write's value or a later one.

"Later" is decided per read:
- when the write's `ok` and the read's `ok` both carry a `position`, the read's
  position must not be below the write's;
- otherwise, when the key's write order can be inferred (one writer, puts of unique
  values and deletes; see `write_order`), the read's value must rank at or after the
  write, with `info` writes allowed to land late;
- otherwise the read is not judged and counted as skipped.

Limits: a write a failover discarded has a position from the old epoch, and a read
from the new epoch compares above it: such losses are the lost+found checker's to
account for. Reads of values no write could produce (a `fail` write's, or no one's)
are skipped here: the acknowledged-writes and linearizability checkers report them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from quorumdb.check.history import HistoryEvent, HistoryOperation, pair_operations
from quorumdb.check.write_order import (
    WriteOrder,
    earliest_rank_from,
    inferred_orders,
    is_write,
    written_value,
)


@dataclass(frozen=True, slots=True)
class SessionViolation:
    """A read that went back before what its session had already written or read."""

    process: int
    key: str
    read_index: int
    message: str

    def __str__(self) -> str:
        return (
            f"process {self.process} key {self.key!r} read at event {self.read_index}:"
            f" {self.message}"
        )


@dataclass(slots=True)
class SessionReport:
    judged: int = 0
    skipped: int = 0
    violations: list[SessionViolation] = field(default_factory=list)


def sessions(
    operations: Sequence[HistoryOperation],
) -> dict[tuple[int, str], list[HistoryOperation]]:
    """Each (process, key)'s operations, in the process's order."""
    by_session: dict[tuple[int, str], list[HistoryOperation]] = {}
    for operation in operations:
        by_session.setdefault((operation.process, operation.key), []).append(operation)
    return by_session


def is_ok_read(operation: HistoryOperation) -> bool:
    return operation.f == "get" and operation.outcome == "ok"


def read_value(read: HistoryOperation) -> str | None:
    assert read.completion is not None
    value = read.completion.value
    assert value is None or isinstance(value, str), f"get returned {value!r}"
    return value


def check_read_your_writes(events: Sequence[HistoryEvent]) -> SessionReport:
    operations = pair_operations(events)
    orders = inferred_orders(operations)
    report = SessionReport()
    for (_, key), session in sorted(sessions(operations).items()):
        last_write: HistoryOperation | None = None
        for operation in session:
            if is_write(operation) and operation.outcome == "ok":
                last_write = operation
            elif is_ok_read(operation) and last_write is not None:
                _judge(report, last_write, operation, orders.get(key))
    return report


def _judge(
    report: SessionReport, write: HistoryOperation, read: HistoryOperation, order: WriteOrder | None
) -> None:
    def violation(message: str) -> None:
        report.violations.append(SessionViolation(read.process, read.key, read.end_index, message))

    if write.position is not None and read.position is not None:
        report.judged += 1
        if read.position < write.position:
            violation(
                f"served at {list(read.position)}, before its own write at"
                f" {list(write.position)} (event {write.end_index})"
            )
        return
    if order is None:
        report.skipped += 1
        return
    ranges = order.ranks_of(read_value(read))
    if not ranges:
        report.skipped += 1
        return
    report.judged += 1
    if earliest_rank_from(ranges, order.rank(write)) is None:
        violation(
            f"got {read_value(read)!r}, older than its own acknowledged write"
            f" {written_value(write)!r} (event {write.end_index})"
        )
