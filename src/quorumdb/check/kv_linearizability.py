"""Linearizability of a recorded history, per key, against a key-value model.

Rule: for each key, some order of its operations, each taking effect at one instant
between its invocation and completion, explains every result with the sequential
semantics of get, put, delete, increment and append (`KeyValueModel`).

The bridge from history operations to the search's `Operation`s:
- `ok`: happened, with its result;
- `fail`: did not happen, so it is left out;
- `info` (or no completion): may or may not have happened, at any time after its
  invocation; an `info` get changes nothing and is left out.
Event indices serve as times: the file's order is the order things happened, so
this is exact for the simulator and for any driver that writes an invocation before
sending it and a completion after the reply.

One pruning keeps append-only keys (the workload's `log-<i>`) cheap: when a key sees
only appends and gets, and some `ok` get began after every `ok` append had ended, an
`info` append whose string appears in no `ok` get can be left out. Such an append, if
it took effect, did so after that get and after every `ok` append, with no `ok` get
after it, so leaving it out changes no result.

Limits: each key is searched on its own (exact, linearizability composes over
keys), but the search stops after `step_limit` steps and reports the key as
"unknown": neither a violation nor a pass. Many concurrent `info` writes on one key
make the search costly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from quorumdb.check.history import HistoryEvent, HistoryOperation, pair_operations
from quorumdb.check.linearizability import (
    DEFAULT_STEP_LIMIT,
    CheckResult,
    Operation,
    Verdict,
    check_per_key,
)

KeyValueState = str | None


class KeyValueModel:
    """One key holding a string, or None when absent; counters are decimal strings.

    get: result the value read. put: argument the value. delete: result whether the
    key existed. increment: argument the delta, result the new total (a non-integer
    value refuses it). append: argument the string, result the new length in bytes.
    An indeterminate operation's result is unknown: only its effect is modelled.
    """

    def initial(self) -> KeyValueState:
        return None

    def step(self, state: KeyValueState, operation: Operation) -> tuple[bool, KeyValueState]:
        function = operation.function
        unknown = operation.indeterminate
        if function == "get":
            return operation.result == state, state
        if function == "put":
            assert isinstance(operation.argument, str)
            return True, operation.argument
        if function == "delete":
            return unknown or operation.result == (state is not None), None
        if function == "increment":
            return self._increment(state, operation)
        if function == "append":
            assert isinstance(operation.argument, str)
            value = (state or "") + operation.argument
            return unknown or operation.result == len(value.encode()), value
        raise ValueError(f"unknown key-value function {function!r}")

    @staticmethod
    def _increment(state: KeyValueState, operation: Operation) -> tuple[bool, KeyValueState]:
        delta = operation.argument
        assert isinstance(delta, int)
        try:
            current = 0 if state is None else int(state)
        except ValueError:
            # Refused: as an ok result impossible; as an unknown one, it changed nothing.
            return operation.indeterminate, state
        total = current + delta
        return operation.indeterminate or operation.result == total, str(total)


def _unobserved_appends(operations: Sequence[HistoryOperation]) -> set[int]:
    """Invoke indices of `info` appends that may be left out (see the module docstring)."""
    by_key: dict[str, list[HistoryOperation]] = {}
    for operation in operations:
        by_key.setdefault(operation.key, []).append(operation)
    prunable: set[int] = set()
    for key_operations in by_key.values():
        prunable.update(_unobserved_appends_of_key(key_operations))
    return prunable


def _unobserved_appends_of_key(operations: list[HistoryOperation]) -> list[int]:
    if any(operation.f not in ("get", "append") for operation in operations):
        return []
    ok = [operation for operation in operations if operation.completion is not None]
    ok = [operation for operation in ok if operation.outcome == "ok"]
    last_append_end = max((op.end_index for op in ok if op.f == "append"), default=-1)
    reads = [op for op in ok if op.f == "get"]
    if not any(read.invoke.index > last_append_end for read in reads):
        return []
    values = [read.completion.value for read in reads if read.completion is not None]
    seen = [value for value in values if isinstance(value, str)]
    unobserved: list[int] = []
    for operation in operations:
        if operation.f == "append" and operation.outcome == "info":
            piece = operation.invoke.value
            assert isinstance(piece, str)
            if not any(piece in value for value in seen):
                unobserved.append(operation.invoke.index)
    return unobserved


def to_operations(operations: Sequence[HistoryOperation]) -> list[Operation]:
    """The search's operations: `fail` and `info` gets dropped, `info` indeterminate."""
    converted: list[Operation] = []
    unobserved = _unobserved_appends(operations)
    for operation in operations:
        if operation.invoke.index in unobserved:
            continue
        outcome = operation.outcome
        if outcome == "fail" or (outcome == "info" and operation.f == "get"):
            continue
        result, completed_index = None, None
        if outcome == "ok":
            assert operation.completion is not None
            result, completed_index = operation.completion.value, operation.completion.index
        converted.append(
            Operation(
                process=operation.process,
                function=operation.f,
                key=operation.key,
                argument=operation.invoke.value,
                result=result,
                invoked_ms=operation.invoke.index,
                completed_ms=completed_index,
                time_unit="events",
            )
        )
    return converted


@dataclass(slots=True)
class LinearizabilityReport:
    results: dict[str, CheckResult] = field(default_factory=dict)

    def keys_with(self, verdict: Verdict) -> list[str]:
        return [key for key, result in self.results.items() if result.verdict is verdict]

    @property
    def violations(self) -> list[str]:
        return [
            f"key {key!r} not linearizable: {self.results[key].detail}"
            for key in self.keys_with(Verdict.VIOLATION)
        ]


def check_history_linearizable(
    events: Sequence[HistoryEvent], step_limit: int = DEFAULT_STEP_LIMIT
) -> LinearizabilityReport:
    """Each key's verdict: linearizable, violation, or unknown (step limit reached)."""
    operations = to_operations(pair_operations(events))
    return LinearizabilityReport(check_per_key(operations, lambda key: KeyValueModel(), step_limit))
