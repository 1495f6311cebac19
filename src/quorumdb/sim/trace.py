"""The run's trace: one compact line per observable step, hashed as it grows.

Two runs of one seed must produce the same lines; comparing one sha256 digest is how
tests and people notice non-determinism without diffing whole traces.
"""

from __future__ import annotations

import hashlib
import json

from quorumdb.core.controller.raft_messages import RAFT_MESSAGE_TYPES, describe_raft_message
from quorumdb.core.messages import (
    Append,
    ChangeMetadata,
    CountPartition,
    CreateKeyspace,
    Delete,
    ForwardReply,
    ForwardRequest,
    Get,
    Increment,
    Message,
    Operation,
    Outcome,
    Put,
    ScanPartition,
)

_TEXT_MAX = 40


class Trace:
    def __init__(self, keep_lines: bool = False) -> None:
        self.keep_lines = keep_lines
        self.lines: list[str] = []
        self.line_count = 0
        self._hash = hashlib.sha256()

    def record(self, now_ms: int, text: str) -> None:
        line = f"{now_ms} {text}"
        self._hash.update(line.encode())
        self._hash.update(b"\n")
        self.line_count += 1
        if self.keep_lines:
            self.lines.append(line)

    def digest(self) -> str:
        return self._hash.hexdigest()


def text(raw: bytes | None) -> str:
    """Bytes as short printable text: the trace must stay one line per step."""
    if raw is None:
        return "-"
    shown = raw.decode("ascii", errors="backslashreplace")
    return shown if len(shown) <= _TEXT_MAX else shown[:_TEXT_MAX] + "..."


def describe_operation(operation: Operation) -> str:
    if isinstance(operation, Get):
        return f"get {text(operation.key)}"
    if isinstance(operation, Put):
        return f"put {text(operation.key)}={text(operation.value)}"
    if isinstance(operation, Delete):
        return f"delete {text(operation.key)}"
    if isinstance(operation, Increment):
        return f"increment {text(operation.key)} {operation.delta:+d}"
    if isinstance(operation, Append):
        return f"append {text(operation.key)}+={text(operation.value)}"
    if isinstance(operation, ScanPartition | CountPartition):
        return f"{type(operation).__name__} p{operation.partition}"
    if isinstance(operation, CreateKeyspace):
        return f"create-keyspace {operation.config.name}"
    if isinstance(operation, ChangeMetadata):
        return f"change-metadata {_metadata_op(operation.command)}"
    raise TypeError(f"unexpected operation {type(operation).__name__}")


def _metadata_op(command: bytes) -> str:
    """A metadata command's op and its scalar arguments (a plan's layouts are not short)."""
    try:
        document = json.loads(command)
        op = str(document.pop("op"))
    except (ValueError, AttributeError, KeyError, TypeError):
        return text(command)
    shown = [
        f"{name}={value}"
        for name, value in sorted(document.items())
        if isinstance(value, str | int | float | bool)
    ]
    member = document.get("member")
    if isinstance(member, dict):
        shown.insert(0, f"member={member.get('node_id')}")
    return " ".join([op, *shown])


def describe_outcome(outcome: Outcome) -> str:
    if outcome.error is not None:
        return f"error:{outcome.error.value}"
    value = outcome.value
    if isinstance(value, bytes):
        return f"ok:{text(value)}"
    if value is None or isinstance(value, bool | int):
        return f"ok:{value}"
    return f"ok:{type(value).__name__}"


def describe_message(message: Message) -> str:
    if isinstance(message, ForwardRequest):
        operation = describe_operation(message.operation)
        return f"forward#{message.forward_id} v{message.map_version} {operation}"
    if isinstance(message, ForwardReply):
        return f"forward-reply#{message.forward_id} {describe_outcome(message.outcome)}"
    if isinstance(message, RAFT_MESSAGE_TYPES):
        return describe_raft_message(message)
    name = type(message).__name__
    if hasattr(message, "sequence"):
        return f"{name.lower()}#{message.sequence}"
    return name.lower()  # membership gossip and transfer messages: their kind is enough
