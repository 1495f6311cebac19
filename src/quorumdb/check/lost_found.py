"""Lost+found accounting: every acknowledged write a failover discarded is listed.

Rule: for each key whose write order can be inferred (one writer, puts of unique
values and deletes; see `write_order`), an `ok` write is gone at the end when the
key's final read (the last `ok` get begun after every write to it ended) shows
neither it nor a later write; a delete answered `false` wrote nothing and is never
gone. Every gone write must appear among the history's `lost+found` records with the
same key and value (null for a delete). Each one that does not is a violation; the
others are counted as accounted.

Entries are counted too: listed writes that were never acknowledged (`info`, `fail`
or unfinished: the client was never promised anything) are fine and counted
separately, as are entries for writes still present and entries matching no write.

Counters and appends (keys written only by increments, or only by appends, from any
number of writers) are judged too, from what each `ok` reply says: an increment's
reply is the total it wrote, an append's the length. With a final read `F`:
- an acknowledged increment (of a positive delta) whose total exceeds `F` is gone; it
  must be listed with that total. One whose total is at most `F` may be gone as well
  (a discarded branch can pass through totals the surviving one also reaches): those
  are not judged, so the rule never blames what it cannot see;
- an acknowledged append whose piece `F` does not contain is gone; it must be listed
  with a value of the reply's length ending with the piece (the log stores the whole
  value the append made).

Limits: keys with several writers of puts, keys mixing kinds of writes, and keys with
no final read are not judged (counted as skipped). A final value that an `info` write may
have produced could be the newest write, so nothing before it counts as gone; a
final value no write could produce is left to the acknowledged-writes checker. A
discarded delete is matched by key alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from quorumdb.check.history import HistoryEvent, HistoryOperation, LostFoundEntry, pair_operations
from quorumdb.check.read_your_writes import is_ok_read, read_value
from quorumdb.check.write_order import WriteOrder, inferred_orders, written_value


@dataclass(frozen=True, slots=True)
class UnaccountedWrite:
    key: str
    value: str | None
    write_index: int  # the event that acknowledged it
    final_value: str | None

    def __str__(self) -> str:
        return (
            f"key {self.key!r}: acknowledged write {self.value!r} (event {self.write_index})"
            f" is gone (final read {self.final_value!r}) and not in lost+found"
        )


@dataclass(slots=True)
class LostFoundReport:
    judged_keys: int = 0
    skipped_keys: int = 0
    lost: int = 0  # acknowledged writes gone at the end
    accounted: int = 0  # of those, listed in lost+found
    unacknowledged_listed: int = 0  # entries for writes never acknowledged
    present_listed: int = 0  # entries for acknowledged writes still present
    unmatched_listed: int = 0  # entries matching no write of a judged key
    violations: list[UnaccountedWrite] = field(default_factory=list)


def check_lost_found(
    events: Sequence[HistoryEvent], entries: Sequence[LostFoundEntry]
) -> LostFoundReport:
    operations = pair_operations(events)
    orders = inferred_orders(operations)
    by_key: dict[str, list[HistoryOperation]] = {}
    for operation in operations:
        by_key.setdefault(operation.key, []).append(operation)
    listed = {(entry.key, entry.value) for entry in entries}
    report = LostFoundReport()
    gone: set[tuple[str, str | None]] = set()
    for key in sorted(by_key):
        order = orders.get(key)
        if order is None and _judge_accumulated(report, key, by_key[key], entries, gone):
            continue
        final_read = _final_read(by_key[key]) if order is not None else None
        if order is None or final_read is None:
            report.skipped_keys += 1
            continue
        gone_writes = _gone_writes(order, read_value(final_read))
        if gone_writes is None:
            report.skipped_keys += 1
            continue
        report.judged_keys += 1
        for write in gone_writes:
            value = written_value(write)
            gone.add((key, value))
            report.lost += 1
            if (key, value) in listed:
                report.accounted += 1
            else:
                final = read_value(final_read)
                report.violations.append(UnaccountedWrite(key, value, write.end_index, final))
    for entry in entries:
        _count_entry(report, entry, orders.get(entry.key), gone)
    return report


def _judge_accumulated(
    report: LostFoundReport,
    key: str,
    operations: list[HistoryOperation],
    entries: Sequence[LostFoundEntry],
    gone: set[tuple[str, str | None]],
) -> bool:
    """A counter's or an append log's gone writes, each matched to a listed entry;
    False when `key` is neither (or has no final read), for the caller to skip."""
    kinds = {operation.f for operation in operations if operation.f != "get"}
    if kinds not in ({"increment"}, {"append"}):
        return False
    final_read = _final_read(operations)
    if final_read is None:
        return False
    final = read_value(final_read)
    listed = [entry.value for entry in entries if entry.key == key]
    writes = [operation for operation in operations if operation.f in kinds]
    if kinds == {"increment"}:
        if any(not isinstance(w.invoke.value, int) or w.invoke.value <= 0 for w in writes):
            return False  # a decrement makes totals non-monotonic: nothing to infer
        total = int(final) if isinstance(final, str) and final.lstrip("-").isdigit() else 0
        if final is not None and str(total) != final:
            return False  # not a number: left to the other checkers
        missing = [
            (write, str(write.completion.value))
            for write in writes
            if write.outcome == "ok" and write.completion is not None
            and isinstance(write.completion.value, int) and write.completion.value > total
        ]  # fmt: skip
        matches = [value if value in listed else None for _, value in missing]
    else:
        text = final if isinstance(final, str) else ""
        missing = [
            (write, str(write.invoke.value))
            for write in writes
            if write.outcome == "ok" and str(write.invoke.value) not in text
        ]
        matches = [
            next(
                (
                    value
                    for value in listed
                    if value is not None
                    and write.completion is not None
                    and len(value) == write.completion.value
                    and value.endswith(piece)
                ),
                None,
            )
            for write, piece in missing
        ]
    report.judged_keys += 1
    for (write, value), match in zip(missing, matches, strict=True):
        report.lost += 1
        if match is not None:
            report.accounted += 1
            gone.add((key, match))
        else:
            report.violations.append(UnaccountedWrite(key, value, write.end_index, final))
    return True


def _final_read(operations: list[HistoryOperation]) -> HistoryOperation | None:
    last_write_end = max(
        (operation.end_index for operation in operations if operation.f != "get"), default=-1
    )
    finals = [
        operation
        for operation in operations
        if is_ok_read(operation) and operation.invoke.index > last_write_end
    ]
    return finals[-1] if finals else None


def _gone_writes(order: WriteOrder, final_value: str | None) -> list[HistoryOperation] | None:
    """The acknowledged writes ranked after anything the final value could be; None when
    no write could have produced the final value."""
    ranges = order.ranks_of(final_value)
    if not ranges:
        return None
    newest = max(item.high for item in ranges)
    return [
        write
        for rank, write in enumerate(order.writes)
        if rank > newest and write.outcome == "ok" and not _found_nothing(write)
    ]


def _found_nothing(write: HistoryOperation) -> bool:
    """A delete answered `false`: the key was absent, so it wrote nothing that could be
    discarded (a leader need not even log it)."""
    return write.f == "delete" and write.completion is not None and write.completion.value is False


def _count_entry(
    report: LostFoundReport,
    entry: LostFoundEntry,
    order: WriteOrder | None,
    gone: set[tuple[str, str | None]],
) -> None:
    if (entry.key, entry.value) in gone:
        return  # counted as accounted above
    writes = [] if order is None else order.writes
    matching = [write for write in writes if written_value(write) == entry.value]
    if not matching:
        report.unmatched_listed += 1
    elif any(write.outcome == "ok" for write in matching):
        report.present_listed += 1
    else:
        report.unacknowledged_listed += 1
