"""No lost acknowledged write, for keys with a single writer that puts unique values.

The workload gives each such key one writer process that puts (or deletes) values one
at a time; after the cluster is healed, a final read of every key must see the last
acknowledged write, or a write whose outcome was unknown (`info`). Reads during the
run are held to the same rule (relative to the writes acknowledged before each read
began, plus writes overlapping it), so a write that was lost and later overwritten
is caught too; the first such read per key is reported.

Any `info` write is allowed, not only those invoked after the last acknowledged one:
an unknown outcome may take effect at any time after its invocation (a forward sent
just before its node crashed can still reach the owner after the next write), so
linearizability places it anywhere from its invocation onwards, including last. A
`fail` write never may be seen, nor a value no one wrote.

Keys written with `increment` or `append`, or by more than one process, do not fit the
pattern and are skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from quorumdb.check.history import HistoryEvent, HistoryOperation, pair_operations

_WRITES = ("put", "delete")
_OTHER_WRITES = ("increment", "append")


@dataclass(frozen=True, slots=True)
class Violation:
    key: str
    expected: str | None
    got: str | None
    message: str
    read_index: int | None = None

    def __str__(self) -> str:
        where = "" if self.read_index is None else f" (read at event {self.read_index})"
        return (
            f"{self.message}: key {self.key!r} expected {self.expected!r} got {self.got!r}{where}"
        )


def check_acknowledged_writes(events: Sequence[HistoryEvent]) -> list[Violation]:
    by_key: dict[str, list[HistoryOperation]] = {}
    for operation in pair_operations(events):
        by_key.setdefault(operation.key, []).append(operation)
    violations: list[Violation] = []
    for key in sorted(by_key):
        violations.extend(_check_key(key, by_key[key]))
    return violations


def judged_keys(events: Sequence[HistoryEvent]) -> list[str]:
    """The keys that fit the pattern this checker judges, in key order."""
    by_key: dict[str, list[HistoryOperation]] = {}
    for operation in pair_operations(events):
        by_key.setdefault(operation.key, []).append(operation)
    return [key for key in sorted(by_key) if _fits(by_key[key])]


def _fits(operations: list[HistoryOperation]) -> bool:
    """Written (put or delete) by exactly one process, and by nothing else."""
    writes = [operation for operation in operations if operation.f in _WRITES]
    if not writes or any(operation.f in _OTHER_WRITES for operation in operations):
        return False
    return len({operation.process for operation in writes}) == 1


def _written(operation: HistoryOperation) -> str | None:
    """The value a put stores, or None for a delete."""
    if operation.f == "delete":
        return None
    value = operation.invoke.value
    assert isinstance(value, str), f"put of a non-string value at {operation.invoke.index}"
    return value


def _check_key(key: str, operations: list[HistoryOperation]) -> list[Violation]:
    """The final read's verdict, plus the first earlier read that missed a write, if any.

    Earlier reads are judged by the same rule: a read invoked after a write was
    acknowledged must not see anything older, so a write lost and then overwritten
    before the end is still caught.
    """
    if not _fits(operations):
        return []
    writes = [operation for operation in operations if operation.f in _WRITES]
    reads = [op for op in operations if op.f == "get" and op.outcome == "ok"]
    last_write_end = max(write.end_index for write in writes)
    final_reads = [read for read in reads if read.invoke.index > last_write_end]
    final_read = final_reads[-1] if final_reads else None
    violations: list[Violation] = []
    for read in reads:
        if read is final_read:
            continue
        violation = _judge_read(key, read, writes)
        if violation is not None:
            violations.append(violation)
            break
    if final_read is None:
        acknowledged = [write for write in writes if write.outcome == "ok"]
        expected = _written(acknowledged[-1]) if acknowledged else None
        message = "no successful read after the last write"
        violations.append(Violation(key, expected, None, message))
        return violations
    violation = _judge_read(key, final_read, writes)
    if violation is not None:
        violations.append(violation)
    return violations


def _judge_read(
    key: str, read: HistoryOperation, writes: list[HistoryOperation]
) -> Violation | None:
    """Allowed: the last write acknowledged before the read began, a write overlapping
    the read, or a write with unknown outcome invoked before the read ended."""
    assert read.completion is not None
    begin_index, end_index = read.invoke.index, read.completion.index
    done = [w for w in writes if w.outcome == "ok" and w.end_index < begin_index]
    expected = _written(done[-1]) if done else None
    allowed = [expected]
    for write in writes:
        if write.invoke.index > end_index or write.outcome == "fail":
            continue
        if write.outcome == "info" or write.end_index > begin_index:
            allowed.append(_written(write))
    got = read.completion.value
    assert got is None or isinstance(got, str), f"get returned {got!r} at {end_index}"
    if got in allowed:
        return None

    def violation(message: str) -> Violation:
        return Violation(key, expected, got, message, end_index)

    earlier = [w for w in writes if w.outcome == "ok" and w.invoke.index < begin_index]
    if any(got == _written(write) for write in earlier):
        return violation("lost acknowledged write (older value seen)")
    if got is None:
        return violation("lost acknowledged write (key missing)")
    if any(got == _written(write) for write in writes if write.outcome == "fail"):
        return violation("a failed write is visible")
    if any(got == _written(write) for write in writes):
        return violation("a write is visible before it was invoked")
    return violation("a value no one wrote is visible")
