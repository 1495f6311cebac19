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
from quorumdb.check.write_order import INITIAL_RANK, WriteOrder, earliest_rank_from, inferred_orders


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
    highest_position: Position | None = None
    rank_floor: int | None = None  # the earliest rank the reads so far allow
    previous: HistoryOperation | None = None
    for read in reads:
        ranges = [] if order is None else order.ranks_of(read_value(read))
        position = read.position
        if previous is None:
            pass
        elif position is not None and highest_position is not None:
            report.judged += 1
            if position < highest_position:
                message = f"served at {list(position)}, after a read at {list(highest_position)}"
                _violation(report, read, message)
        elif rank_floor is not None and ranges:
            report.judged += 1
            if earliest_rank_from(ranges, rank_floor) is None:
                message = f"got {read_value(read)!r}, older than an earlier read"
                _violation(report, read, message)
        else:
            report.skipped += 1
        previous = read
        if position is not None:
            highest_position = max(position, highest_position or position)
        if ranges:
            earliest = earliest_rank_from(
                ranges, INITIAL_RANK if rank_floor is None else rank_floor
            )
            # After a violation, restart from this read's earliest rank.
            rank_floor = (
                earliest if earliest is not None else earliest_rank_from(ranges, INITIAL_RANK)
            )


def _violation(report: SessionReport, read: HistoryOperation, message: str) -> None:
    report.violations.append(SessionViolation(read.process, read.key, read.end_index, message))
