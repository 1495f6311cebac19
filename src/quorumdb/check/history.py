"""Histories of client operations, as JSON Lines: what workloads record and checkers judge.

One event per line, in the order events happened:

    {"index": 0, "time_ms": 12, "process": 3, "type": "invoke", "f": "put",
     "key": "w3-0", "value": "p3-1"}

- `index`: position in the history, 0, 1, 2, ...
- `time_ms`: virtual (simulator) or wall-clock milliseconds; never decreases.
- `process`: integer id of the client; each process has at most one open operation.
- `type`: `invoke` (the call started), then one completion: `ok` (it happened, with
  its result), `fail` (it definitely did not happen) or `info` (unknown: it may or may
  not have happened, now or later).
- `f`: `get`, `put`, `delete`, `increment` or `append`.
- `key`: the key as a UTF-8 string.
- `value`, by `f`:
    get:       invoke null; ok the value read (string, or null when absent); else null
    put:       the value written (string), in every event
    delete:    invoke null; ok whether the key existed (bool); else null
    increment: invoke the delta (int); ok the new total (int); else the delta
    append:    invoke the appended string; ok the new length (int); else the string
- `error`: only on `fail` and `info`: an `ErrorCode` value such as `timeout`, or a
  client-side code: `node-crashed` (the node died before answering), `client-timeout`.

Incomplete operations (an invoke with no completion) count as `info`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

EVENT_TYPES = ("invoke", "ok", "fail", "info")
FUNCTIONS = ("get", "put", "delete", "increment", "append")
COMPLETION_TYPES = ("ok", "fail", "info")

HistoryValue = str | int | bool | None


class HistoryFormatError(ValueError):
    """A line that is not a valid history event, or events that do not pair up."""


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    index: int
    time_ms: int
    process: int
    type: str
    f: str
    key: str
    value: HistoryValue = None
    error: str | None = None

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise HistoryFormatError(f"unknown event type {self.type!r}")
        if self.f not in FUNCTIONS:
            raise HistoryFormatError(f"unknown function {self.f!r}")
        if self.error is not None and self.type in ("invoke", "ok"):
            raise HistoryFormatError(f"an {self.type} event carries no error")

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "index": self.index,
            "time_ms": self.time_ms,
            "process": self.process,
            "type": self.type,
            "f": self.f,
            "key": self.key,
            "value": self.value,
        }
        if self.error is not None:
            data["error"] = self.error
        return data

    @classmethod
    def from_dict(cls, data: object) -> HistoryEvent:
        if not isinstance(data, dict):
            raise HistoryFormatError("an event must be a JSON object")
        try:
            value = data.get("value")
            error = data.get("error")
            if value is not None and not isinstance(value, str | int | bool):
                raise HistoryFormatError(f"unsupported value {value!r}")
            if error is not None and not isinstance(error, str):
                raise HistoryFormatError(f"error must be a string, got {error!r}")
            return cls(
                index=_integer(data["index"]),
                time_ms=_integer(data["time_ms"]),
                process=_integer(data["process"]),
                type=str(data["type"]),
                f=str(data["f"]),
                key=str(data["key"]),
                value=value,
                error=error,
            )
        except KeyError as missing:
            raise HistoryFormatError(f"missing field {missing}") from None


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HistoryFormatError(f"expected an integer, got {value!r}")
    return value


def dumps(events: Iterable[HistoryEvent]) -> str:
    return "".join(json.dumps(event.to_dict(), sort_keys=False) + "\n" for event in events)


def loads(text: str) -> list[HistoryEvent]:
    events: list[HistoryEvent] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            raise HistoryFormatError(f"line {number}: {error}") from None
        events.append(HistoryEvent.from_dict(data))
    return events


def save_history(path: str | Path, events: Iterable[HistoryEvent]) -> None:
    Path(path).write_text(dumps(events), encoding="utf-8")


def load_history(path: str | Path) -> list[HistoryEvent]:
    return loads(Path(path).read_text(encoding="utf-8"))


@dataclass(frozen=True, slots=True)
class HistoryOperation:
    """An invoke with its completion; `completion` None when the history ended first."""

    invoke: HistoryEvent
    completion: HistoryEvent | None

    @property
    def process(self) -> int:
        return self.invoke.process

    @property
    def f(self) -> str:
        return self.invoke.f

    @property
    def key(self) -> str:
        return self.invoke.key

    @property
    def outcome(self) -> str:
        """`ok`, `fail` or `info`; an operation that never completed is `info`."""
        return "info" if self.completion is None else self.completion.type

    @property
    def end_index(self) -> int:
        """Index of the completion, or of the invoke when there is none."""
        return (self.completion or self.invoke).index


def pair_operations(events: Sequence[HistoryEvent]) -> list[HistoryOperation]:
    """Match each completion to its process's open invoke, in invoke order."""
    open_invokes: dict[int, int] = {}
    invokes: list[HistoryEvent] = []
    completions: list[HistoryEvent | None] = []
    for event in events:
        if event.type == "invoke":
            if event.process in open_invokes:
                raise HistoryFormatError(
                    f"event {event.index}: process {event.process} invoked twice"
                )
            open_invokes[event.process] = len(invokes)
            invokes.append(event)
            completions.append(None)
            continue
        position = open_invokes.pop(event.process, None)
        if position is None:
            raise HistoryFormatError(
                f"event {event.index}: completion without invoke for process {event.process}"
            )
        invoke = invokes[position]
        if (invoke.f, invoke.key) != (event.f, event.key):
            raise HistoryFormatError(f"event {event.index}: does not match invoke {invoke.index}")
        completions[position] = event
    return [
        HistoryOperation(invoke, completion)
        for invoke, completion in zip(invokes, completions, strict=True)
    ]
