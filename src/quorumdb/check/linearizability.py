"""Linearizability of a history against a sequential model (Wing-Gong search, Lowe's cache).

Each operation has an invocation and, unless indeterminate, a completion. The search
tries to order the operations so that each takes effect at one instant between its
invocation and completion and every result matches the model. It walks the history's
events in time order; at a call it tries to linearize that operation now, at a
completion of an operation not yet linearized it backtracks. Lowe's improvement: a
cache of (set of linearized operations, model state) already explored, so no
configuration is searched twice.

Indeterminate operations (`info`: the client never learned the outcome) may take
effect at any point after their invocation, or never: they have no completion, and
the search succeeds once every determinate operation is linearized.

The search is bounded: past `step_limit` it stops and says "unknown", never a false
verdict. The model is pluggable (`Model`); for key-value models `check_per_key`
checks each key separately, which is exact (linearizability is compositional) and
much cheaper.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Generic, Protocol, TypeVar

State = TypeVar("State", bound=Hashable)

DEFAULT_STEP_LIMIT = 200_000


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation. Times order the events; `completed_ms` None: indeterminate.

    `result` is what the client was told (meaningless when indeterminate).
    """

    process: int
    function: str
    key: str
    argument: Hashable
    result: Hashable
    invoked_ms: int
    completed_ms: int | None
    # What the two times count: milliseconds, or (for recorded histories, which order
    # operations by their events) event indices. Only the messages care.
    time_unit: str = "ms"

    @property
    def indeterminate(self) -> bool:
        return self.completed_ms is None

    def span(self) -> str:
        """When it ran, for a message: "(120..135 ms)" or "(events 7..12)"."""
        if self.time_unit == "ms":
            return f"({self.invoked_ms}..{self.completed_ms} ms)"
        return f"({self.time_unit} {self.invoked_ms}..{self.completed_ms})"


class Model(Protocol[State]):
    """A sequential specification: the state before any operation, and one step."""

    def initial(self) -> State: ...

    def step(self, state: State, operation: Operation) -> tuple[bool, State]:
        """(possible, next state): whether `operation` with its result can take effect
        in `state`, and the state after. For an indeterminate operation the result is
        unknown: only whether it can take effect matters."""
        ...


class Verdict(Enum):
    LINEARIZABLE = "linearizable"
    VIOLATION = "violation"
    UNKNOWN = "unknown"  # the search reached its step limit


@dataclass(frozen=True, slots=True)
class CheckResult:
    verdict: Verdict
    operation_count: int
    steps: int
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.LINEARIZABLE


@dataclass(slots=True)
class _Event:
    """A node of the doubly linked list of calls and completions, in time order."""

    operation_id: int
    is_call: bool
    match: _Event | None = None  # a call's completion (None: indeterminate)
    previous: _Event | None = None
    next: _Event | None = None


def _build_events(operations: Sequence[Operation]) -> _Event:
    """The list of events with a sentinel head, in time order.

    At one instant calls sort before completions: events with equal times count as
    concurrent, so a coarse clock can hide an ordering but never invent a violation.
    """
    keyed: list[tuple[int, int, int, _Event]] = []
    for operation_id, operation in enumerate(operations):
        call = _Event(operation_id, True)
        keyed.append((operation.invoked_ms, 0, operation_id, call))
        if operation.completed_ms is not None:
            assert operation.completed_ms >= operation.invoked_ms
            completion = _Event(operation_id, False)
            call.match = completion
            keyed.append((operation.completed_ms, 1, operation_id, completion))
    keyed.sort(key=lambda item: item[:3])
    head = _Event(-1, False)
    previous = head
    for *_, event in keyed:
        previous.next = event
        event.previous = previous
        previous = event
    return head


def _lift(call: _Event) -> None:
    """Take a call (and its completion) out of the list: it is linearized."""
    assert call.previous is not None
    call.previous.next = call.next
    if call.next is not None:
        call.next.previous = call.previous
    completion = call.match
    if completion is not None:
        assert completion.previous is not None
        completion.previous.next = completion.next
        if completion.next is not None:
            completion.next.previous = completion.previous


def _unlift(call: _Event) -> None:
    """Undo `_lift`, in reverse order."""
    completion = call.match
    if completion is not None:
        assert completion.previous is not None
        completion.previous.next = completion
        if completion.next is not None:
            completion.next.previous = completion
    assert call.previous is not None
    call.previous.next = call
    if call.next is not None:
        call.next.previous = call


class _Search(Generic[State]):
    def __init__(
        self, operations: Sequence[Operation], model: Model[State], step_limit: int
    ) -> None:
        self.operations = operations
        self.model = model
        self.step_limit = step_limit
        self.steps = 0

    def run(self) -> CheckResult:
        operations = self.operations
        head = _build_events(operations)
        remaining = sum(1 for operation in operations if not operation.indeterminate)
        state = self.model.initial()
        linearized = 0  # bit i set: operation i is linearized
        cache: set[tuple[int, State]] = set()
        stack: list[tuple[_Event, State]] = []
        # The operation that blocked the longest linearized prefix: the best witness.
        blocker_depth, blocker_id = -1, -1
        event = head.next
        while remaining > 0:
            self.steps += 1
            if self.steps > self.step_limit:
                detail = f"search stopped after {self.step_limit} steps"
                return self._result(Verdict.UNKNOWN, detail)
            if event is not None and event.is_call:
                operation = operations[event.operation_id]
                possible, after = self.model.step(state, operation)
                mask = linearized | (1 << event.operation_id)
                if possible and (mask, after) not in cache:
                    cache.add((mask, after))
                    stack.append((event, state))
                    state, linearized = after, mask
                    remaining -= 0 if operation.indeterminate else 1
                    _lift(event)
                    event = head.next
                else:
                    event = event.next
                continue
            # A completion of an operation not yet linearized, or the end: a dead end.
            if event is not None and len(stack) > blocker_depth:
                blocker_depth, blocker_id = len(stack), event.operation_id
            if not stack:
                return self._violation(operations[blocker_id], blocker_depth)
            call, state = stack.pop()
            linearized &= ~(1 << call.operation_id)
            remaining += 0 if operations[call.operation_id].indeterminate else 1
            _unlift(call)
            event = call.next
        return self._result(Verdict.LINEARIZABLE)

    def _violation(self, operation: Operation, linearized_count: int) -> CheckResult:
        detail = (
            f"no valid order: after {linearized_count} operations, process"
            f" {operation.process} {operation.function} {operation.key}"
            f" {operation.argument!r} -> {operation.result!r}"
            f" {operation.span()} cannot take effect"
        )
        return self._result(Verdict.VIOLATION, detail)

    def _result(self, verdict: Verdict, detail: str = "") -> CheckResult:
        return CheckResult(verdict, len(self.operations), self.steps, detail)


def check_linearizable(
    operations: Sequence[Operation],
    model: Model[State],
    step_limit: int = DEFAULT_STEP_LIMIT,
) -> CheckResult:
    """Whether some order of `operations` explains every determinate result."""
    return _Search(operations, model, step_limit).run()


def check_per_key(
    operations: Iterable[Operation],
    model_for_key: Callable[[str], Model[State]],
    step_limit: int = DEFAULT_STEP_LIMIT,
) -> dict[str, CheckResult]:
    """Check each key's operations on its own (for models where keys are independent)."""
    by_key: dict[str, list[Operation]] = {}
    for operation in operations:
        by_key.setdefault(operation.key, []).append(operation)
    return {
        key: check_linearizable(by_key[key], model_for_key(key), step_limit)
        for key in sorted(by_key)
    }


# --- a register: put, compare-and-set, read ---------------------------------------------


class RegisterModel:
    """One register holding a string, or None when absent.

    put: argument the value. cas: argument (expected, new), result True when it
    swapped. read: result the value read. Callers drop indeterminate reads (they
    change nothing); an indeterminate cas can take effect only where it would swap.
    """

    def initial(self) -> str | None:
        return None

    def step(self, state: str | None, operation: Operation) -> tuple[bool, str | None]:
        function = operation.function
        if function == "put":
            assert isinstance(operation.argument, str)
            return True, operation.argument
        if function == "cas":
            argument = operation.argument
            assert isinstance(argument, tuple)
            expected, new = argument
            if operation.indeterminate or operation.result:
                return state == expected, new
            return state != expected, state
        if function == "read":
            return operation.result == state, state
        raise ValueError(f"unknown register function {function!r}")
