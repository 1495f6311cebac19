"""No lost acknowledged write, for keys with a single writer that puts unique values.

The workload gives each such key one writer process that puts (or deletes) values one
at a time; after the cluster is healed, a final read of every key must see the last
acknowledged write, or a write whose outcome was unknown (`info`).

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

    def __str__(self) -> str:
        return f"{self.message}: key {self.key!r} expected {self.expected!r} got {self.got!r}"


def check_acknowledged_writes(events: Sequence[HistoryEvent]) -> list[Violation]:
    by_key: dict[str, list[HistoryOperation]] = {}
    for operation in pair_operations(events):
        by_key.setdefault(operation.key, []).append(operation)
    violations: list[Violation] = []
    for key in sorted(by_key):
        violation = _check_key(key, by_key[key])
        if violation is not None:
            violations.append(violation)
    return violations


def _written(operation: HistoryOperation) -> str | None:
    """The value a put stores, or None for a delete."""
    if operation.f == "delete":
        return None
    value = operation.invoke.value
    assert isinstance(value, str), f"put of a non-string value at {operation.invoke.index}"
    return value


def _check_key(key: str, operations: list[HistoryOperation]) -> Violation | None:
    writes = [operation for operation in operations if operation.f in _WRITES]
    if not writes:
        return None
    if any(operation.f in _OTHER_WRITES for operation in operations):
        return None
    if len({operation.process for operation in writes}) != 1:
        return None
    acknowledged = [write for write in writes if write.outcome == "ok"]
    expected = _written(acknowledged[-1]) if acknowledged else None
    unknown = [_written(write) for write in writes if write.outcome == "info"]
    failed = [_written(write) for write in writes if write.outcome == "fail"]
    last_write_end = max(write.end_index for write in writes)
    final_reads = [
        operation
        for operation in operations
        if operation.f == "get"
        and operation.outcome == "ok"
        and operation.invoke.index > last_write_end
    ]
    if not final_reads:
        return Violation(key, expected, None, "no successful read after the last write")
    completion = final_reads[-1].completion
    assert completion is not None
    got = completion.value
    assert got is None or isinstance(got, str)
    if got == expected or got in unknown:
        return None
    if any(got == _written(write) for write in acknowledged):
        return Violation(key, expected, got, "lost acknowledged write (older value seen)")
    if got is None:
        return Violation(key, expected, got, "lost acknowledged write (key missing)")
    if got in failed:
        return Violation(key, expected, got, "a failed write is visible")
    return Violation(key, expected, got, "a value no one wrote is visible")
