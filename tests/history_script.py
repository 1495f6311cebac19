"""Hand-written histories for the checker tests: one call per operation, in order."""

from __future__ import annotations

from quorumdb.check.history import HistoryEvent, HistoryValue, Position

_ERRORS = {"ok": None, "fail": "too-large", "info": "timeout"}


class Script:
    """Builds a history event by event, with increasing index and time."""

    def __init__(self) -> None:
        self.events: list[HistoryEvent] = []

    def add(
        self,
        process: int,
        kind: str,
        f: str,
        key: str,
        value: HistoryValue = None,
        error: str | None = None,
        position: Position | None = None,
    ) -> Script:
        index = len(self.events)
        event = HistoryEvent(index, index * 10, process, kind, f, key, value, error, position)
        self.events.append(event)
        return self

    def invoke(self, process: int, f: str, key: str, value: HistoryValue = None) -> Script:
        return self.add(process, "invoke", f, key, value)

    def complete(
        self,
        process: int,
        outcome: str,
        f: str,
        key: str,
        value: HistoryValue = None,
        position: Position | None = None,
    ) -> Script:
        return self.add(process, outcome, f, key, value, _ERRORS[outcome], position)

    def put(
        self, process: int, key: str, value: str, outcome: str = "ok", at: Position | None = None
    ) -> Script:
        self.invoke(process, "put", key, value)
        return self.complete(process, outcome, "put", key, value, at)

    def delete(self, process: int, key: str, existed: bool = True, outcome: str = "ok") -> Script:
        self.invoke(process, "delete", key)
        return self.complete(process, outcome, "delete", key, existed if outcome == "ok" else None)

    def get(self, process: int, key: str, got: HistoryValue, at: Position | None = None) -> Script:
        self.invoke(process, "get", key)
        return self.complete(process, "ok", "get", key, got, at)

    def increment(
        self, process: int, key: str, delta: int, total: int | None, at: Position | None = None
    ) -> Script:
        self.invoke(process, "increment", key, delta)
        if total is None:
            return self.complete(process, "info", "increment", key, delta)
        return self.complete(process, "ok", "increment", key, total, at)

    def append(
        self, process: int, key: str, piece: str, length: int | None, at: Position | None = None
    ) -> Script:
        self.invoke(process, "append", key, piece)
        if length is None:
            return self.complete(process, "info", "append", key, piece)
        return self.complete(process, "ok", "append", key, length, at)
