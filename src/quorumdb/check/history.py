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
- `position` (optional, only on `ok`): `[epoch, sequence]`, the replication log
  position the reply was served at (reads) or written at (writes). Positions of one
  key compare as pairs; session checkers use them instead of inferring write order.

Incomplete operations (an invoke with no completion) count as `info`.

Besides events, a file may hold records that are not operations (no `index`):

    {"type": "lost+found", "key": "w3-0", "value": "p3-7", "epoch": 2}
    {"type": "replica", "node": "node1", "keyspace": "default", "partition": 5,
     "digest": "9f2c...", "position": [2, 41]}

- `lost+found`: one write a failover discarded, as an operator can list it: `key`,
  `value` (string, or null for a discarded delete), `epoch` (the epoch it was written
  in), optional `position`.
- `replica`: one replica's contents after healing: `node`, `keyspace`, `partition`,
  `digest` (hex, see `quorumdb.check.convergence.replica_digest`), optional `position`.

`loads` and `load_history` return the events only, skipping these records, so callers
that pair operations are unaffected; `loads_file` and `load_history_file` return all.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

EVENT_TYPES = ("invoke", "ok", "fail", "info")
RECORD_TYPES = ("lost+found", "replica")
FUNCTIONS = ("get", "put", "delete", "increment", "append")
COMPLETION_TYPES = ("ok", "fail", "info")

HistoryValue = str | int | bool | None
Position = tuple[int, int]  # (epoch, sequence) of a replication log


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
    position: Position | None = None

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise HistoryFormatError(f"unknown event type {self.type!r}")
        if self.f not in FUNCTIONS:
            raise HistoryFormatError(f"unknown function {self.f!r}")
        if self.error is not None and self.type in ("invoke", "ok"):
            raise HistoryFormatError(f"an {self.type} event carries no error")
        if self.position is not None and self.type != "ok":
            raise HistoryFormatError(f"an {self.type} event carries no position")

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
        if self.position is not None:
            data["position"] = list(self.position)
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
                position=_optional_position(data.get("position")),
            )
        except KeyError as missing:
            raise HistoryFormatError(f"missing field {missing}") from None


@dataclass(frozen=True, slots=True)
class LostFoundEntry:
    """A write discarded by a failover, as the operator's lost+found lists it."""

    key: str
    value: str | None  # None: a discarded delete
    epoch: int
    position: Position | None = None

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "type": "lost+found",
            "key": self.key,
            "value": self.value,
            "epoch": self.epoch,
        }
        if self.position is not None:
            data["position"] = list(self.position)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> LostFoundEntry:
        value = data.get("value")
        if value is not None and not isinstance(value, str):
            raise HistoryFormatError(f"lost+found value must be a string or null, got {value!r}")
        return cls(
            key=_string(data["key"]),
            value=value,
            epoch=_integer(data["epoch"]),
            position=_optional_position(data.get("position")),
        )


@dataclass(frozen=True, slots=True)
class ReplicaRecord:
    """One replica's contents after healing, as a digest (see `convergence.replica_digest`)."""

    node: str
    keyspace: str
    partition: int
    digest: str
    position: Position | None = None

    def __post_init__(self) -> None:
        if not self.digest or any(char not in "0123456789abcdef" for char in self.digest):
            raise HistoryFormatError(f"digest must be lowercase hex, got {self.digest!r}")

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "type": "replica",
            "node": self.node,
            "keyspace": self.keyspace,
            "partition": self.partition,
            "digest": self.digest,
        }
        if self.position is not None:
            data["position"] = list(self.position)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ReplicaRecord:
        return cls(
            node=_string(data["node"]),
            keyspace=_string(data["keyspace"]),
            partition=_integer(data["partition"]),
            digest=_string(data["digest"]),
            position=_optional_position(data.get("position")),
        )


HistoryRecord = HistoryEvent | LostFoundEntry | ReplicaRecord


@dataclass(frozen=True, slots=True)
class HistoryFile:
    """Everything a history file holds: events in order, then the other records."""

    events: list[HistoryEvent]
    lost_found: list[LostFoundEntry]
    replicas: list[ReplicaRecord]


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HistoryFormatError(f"expected an integer, got {value!r}")
    return value


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise HistoryFormatError(f"expected a string, got {value!r}")
    return value


def _optional_position(value: object) -> Position | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2:
        raise HistoryFormatError(f"position must be [epoch, sequence], got {value!r}")
    epoch, sequence = _integer(value[0]), _integer(value[1])
    if epoch < 0 or sequence < 0:
        raise HistoryFormatError(f"position must not be negative, got {value!r}")
    return epoch, sequence


def record_from_dict(data: object) -> HistoryRecord:
    """An event, or a `lost+found` or `replica` record, by its `type`."""
    if not isinstance(data, dict):
        raise HistoryFormatError("a record must be a JSON object")
    kind = data.get("type")
    try:
        if kind == "lost+found":
            return LostFoundEntry.from_dict(data)
        if kind == "replica":
            return ReplicaRecord.from_dict(data)
    except KeyError as missing:
        raise HistoryFormatError(f"missing field {missing} in a {kind} record") from None
    return HistoryEvent.from_dict(data)


def dumps(records: Iterable[HistoryRecord]) -> str:
    return "".join(json.dumps(record.to_dict(), sort_keys=False) + "\n" for record in records)


def loads_file(text: str) -> HistoryFile:
    history = HistoryFile([], [], [])
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = record_from_dict(json.loads(line))
        except json.JSONDecodeError as error:
            raise HistoryFormatError(f"line {number}: {error}") from None
        except HistoryFormatError as error:
            raise HistoryFormatError(f"line {number}: {error}") from None
        if isinstance(record, LostFoundEntry):
            history.lost_found.append(record)
        elif isinstance(record, ReplicaRecord):
            history.replicas.append(record)
        else:
            history.events.append(record)
    return history


def loads(text: str) -> list[HistoryEvent]:
    """The events of a history, without its non-operation records."""
    return loads_file(text).events


def save_history(path: str | Path, records: Iterable[HistoryRecord]) -> None:
    Path(path).write_text(dumps(records), encoding="utf-8")


def load_history(path: str | Path) -> list[HistoryEvent]:
    return loads(Path(path).read_text(encoding="utf-8"))


def load_history_file(path: str | Path) -> HistoryFile:
    return loads_file(Path(path).read_text(encoding="utf-8"))


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
    def position(self) -> Position | None:
        """Where an `ok` completion says it was served or written, when it says so."""
        return None if self.completion is None else self.completion.position

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


# What `value` must be, by function and event type (see the module docstring).
_VALUE_TYPES: dict[tuple[str, str], tuple[type, ...]] = {
    ("get", "invoke"): (type(None),),
    ("get", "ok"): (str, type(None)),
    ("put", "invoke"): (str,),
    ("put", "ok"): (str,),
    ("delete", "invoke"): (type(None),),
    ("delete", "ok"): (bool,),
    ("increment", "invoke"): (int,),
    ("increment", "ok"): (int,),
    ("append", "invoke"): (str,),
    ("append", "ok"): (int,),
}


def check_values(events: Iterable[HistoryEvent]) -> None:
    """Raise `HistoryFormatError` for an invoke or ok whose `value` has the wrong type.

    Checkers rely on these types; `fail` and `info` values are not used and not checked.
    """
    for event in events:
        expected = _VALUE_TYPES.get((event.f, event.type))
        if expected is None:
            continue
        value = event.value
        wrong_bool = isinstance(value, bool) and bool not in expected
        if wrong_bool or not isinstance(value, expected):
            raise HistoryFormatError(
                f"event {event.index}: {event.type} {event.f} with value {value!r}"
            )
