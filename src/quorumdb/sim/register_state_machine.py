"""A small key-value register state machine for the controller simulation.

Commands are text: `put <key> <value>` and `cas <key> <expected> <new>` (`-` stands
for an absent value). Results: `ok`, or for a compare-and-set that found another
value, `mismatch`. Reads do not go through the log: the driver reads `values` once
Raft confirmed a ReadIndex.
"""

from __future__ import annotations

import json

ABSENT = "-"


def put_command(key: str, value: str) -> bytes:
    return f"put {key} {value}".encode()


def cas_command(key: str, expected: str | None, new: str) -> bytes:
    return f"cas {key} {expected or ABSENT} {new}".encode()


class RegisterStateMachine:
    """Deterministic: the same commands in the same order give the same values."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.applied_index = 0

    def apply(self, index: int, command: bytes) -> bytes:
        assert index > self.applied_index, "applied in log order, once"
        self.applied_index = index
        parts = command.decode().split(" ")
        if parts[0] == "put" and len(parts) == 3:
            self.values[parts[1]] = parts[2]
            return b"ok"
        if parts[0] == "cas" and len(parts) == 4:
            _, key, expected, new = parts
            if self.values.get(key, ABSENT) != expected:
                return b"mismatch"
            self.values[key] = new
            return b"ok"
        raise ValueError(f"unknown command {command!r}")

    def snapshot(self) -> bytes:
        return json.dumps([self.applied_index, self.values], sort_keys=True).encode()

    def restore(self, data: bytes) -> None:
        applied_index, values = json.loads(data)
        self.applied_index = applied_index
        self.values = dict(values)
