"""Monotonic reads: a session's successive reads of a key never go back in time.

Rule: per process (one client session) and key, each `ok` get returns the value of
the previous `ok` get or a later one.

"Later" is decided per read, as for read-your-writes:
- when the read and an earlier read of the session carry a `position`, the read's
  position must not be below the highest earlier one;
- otherwise, when the key's write order can be inferred (see `write_order`), some
  rank of each value read must be at or after a rank of the previous one; a value
  that could come from several writes (absent: initial state or any delete; an
  `info` write that may land late) takes the earliest rank that fits, so only reads
  no assignment of ranks can order are reported;
- otherwise the read is not judged and counted as skipped.

The first read of each session and key has nothing to compare with and is not
counted. Limits: as for read-your-writes (positions across a failover's epochs;
values no write could produce are skipped and left to the other checkers).
"""

from __future__ import annotations

from collections.abc import Sequence

from quorumdb.check.history import HistoryEvent, HistoryOperation, Position, pair_operations
from quorumdb.check.read_your_writes import (
    SessionReport,
    SessionViolation,
    is_ok_read,
    read_value,
    sessions,
)
from quorumdb.check.write_order import (
    INITIAL_RANK,
    RankRange,
    WriteOrder,
    earliest_rank_from,
    inferred_orders,
)


def check_monotonic_reads(events: Sequence[HistoryEvent]) -> SessionReport:
    operations = pair_operations(events)
    orders = inferred_orders(operations)
    report = SessionReport()
    for (_, key), session in sorted(sessions(operations).items()):
        reads = [operation for operation in session if is_ok_read(operation)]
        _check_session(report, reads, orders.get(key))
    return report


def _check_session(
    report: SessionReport, reads: list[HistoryOperation], order: WriteOrder | None
) -> None:
    highest_position: Position | None = None  # of the earlier positioned reads
    rank_floor: int | None = None  # the earliest rank the earlier reads allow
    for number, read in enumerate(reads):
        ranges = [] if order is None else order.ranks_of(read_value(read))
        if number > 0:
            _judge(report, read, ranges, highest_position, rank_floor)
        position = read.position
        if position is not None:
            highest_position = (
                position if highest_position is None else max(position, highest_position)
            )
        if ranges:
            rank_floor = _next_floor(ranges, rank_floor)


def _judge(
    report: SessionReport,
    read: HistoryOperation,
    ranges: list[RankRange],
    highest_position: Position | None,
    rank_floor: int | None,
) -> None:
    position = read.position
    if position is not None and highest_position is not None:
        report.judged += 1
        if position < highest_position:
            message = f"served at {list(position)}, after a read at {list(highest_position)}"
            _violation(report, read, message)
        return
    if rank_floor is not None and ranges:
        report.judged += 1
        if earliest_rank_from(ranges, rank_floor) is None:
            _violation(report, read, f"got {read_value(read)!r}, older than an earlier read")
        return
    report.skipped += 1


def _next_floor(ranges: list[RankRange], floor: int | None) -> int:
    """This read's earliest rank at or after `floor`; after a violation, its earliest."""
    earliest = earliest_rank_from(ranges, INITIAL_RANK if floor is None else floor)
    if earliest is None:
        earliest = earliest_rank_from(ranges, INITIAL_RANK)
    assert earliest is not None, "a rank range always reaches past the initial rank"
    return earliest


def _violation(report: SessionReport, read: HistoryOperation, message: str) -> None:
    report.violations.append(SessionViolation(read.process, read.key, read.end_index, message))
