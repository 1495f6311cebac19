"""Statement-based replication: the log ships the operation, and every replica runs it.

The notes' classic trap is built in on purpose: an operation whose result depends on
where and when it runs (a value from the server's clock, a random id) gives each
replica a different result. With `deterministic` on (the default) the leader rewrites
such an operation into a plain put of the value it produced before logging it, as
MySQL's mixed mode does; with it off the statement is shipped as is, the replicas
diverge, and the divergence checker (check/convergence.py) finds them apart.

Statements are small JSON documents (keys and values in hex): the log is written by
the core, which has no wire codec. Increments and appends are deterministic given
the same prior state, so they replicate exactly; conditional puts are not logged as
statements (the leader logs their resulting rows).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from quorumdb.core.errors import ErrorCode
from quorumdb.core.integers import INT64_MAX, INT64_MIN, parse_int64
from quorumdb.core.messages import Append, Delete, Increment, Put, PutCondition
from quorumdb.core.records import decode_record, encode_record
from quorumdb.core.replication.log_format import Change
from quorumdb.storage.interface import Write

GENERATORS = ("server-time", "random-id")


class StatementError(ValueError):
    """A statement that cannot be run here (an increment of a value that is not an
    integer on this replica: a sign the replicas already diverged)."""


class Random(Protocol):
    def randrange(self, start: int, /) -> int: ...


def generated_value(generator: str, now_ms: int, rng: Random) -> bytes:
    """The value a put-with-server-time or put-with-random-id stores, made here."""
    if generator == "server-time":
        return str(now_ms).encode()
    return b"%016x" % rng.randrange(1 << 64)


def incremented(previous: tuple[bytes, int | None] | None, delta: int) -> tuple[int, int | None]:
    """The new total and the expiry it keeps; raises StatementError with the code."""
    if previous is None:
        current, expire_at_ms = 0, None
    else:
        parsed = parse_int64(previous[0])
        if parsed is None:
            raise StatementError(ErrorCode.NOT_INTEGER.value)
        current, expire_at_ms = parsed, previous[1]
    result = current + delta
    if not INT64_MIN <= result <= INT64_MAX:
        raise StatementError(ErrorCode.OVERFLOW.value)
    return result, expire_at_ms


def statement_for(operation: object, writes: Sequence[Write], deterministic: bool) -> bytes | None:
    """The statement a leader logs for an operation it ran (None: log its rows). A
    deterministic keyspace logs a generated value as the literal this leader made."""
    if isinstance(operation, Put):
        simple = operation.condition is PutCondition.ALWAYS and not (
            operation.keep_expiry or operation.return_previous
        )
        if not simple or len(writes) != 1 or writes[0].value is None:
            return None
        if operation.generate is not None and not deterministic:
            return encode_statement("put-generated", operation.key, generator=operation.generate)
        value, expire_at_ms = decode_record(writes[0].value)
        return encode_statement("put", operation.key, value=value, expire_at_ms=expire_at_ms)
    if isinstance(operation, Delete):
        return encode_statement("delete", operation.key)
    if isinstance(operation, Increment):
        return encode_statement("increment", operation.key, delta=operation.delta)
    if isinstance(operation, Append):
        return encode_statement("append", operation.key, value=operation.value)
    return None


def encode_statement(kind: str, key: bytes, **fields: Any) -> bytes:
    document = {"kind": kind, "key": key.hex()}
    for name, value in fields.items():
        document[name] = value.hex() if isinstance(value, bytes) else value
    return json.dumps(document, sort_keys=True).encode()


def run_statement(
    statement: bytes,
    raw_of: Callable[[bytes], bytes | None],
    now_ms: int,
    rng: Random,
) -> tuple[Change, ...]:
    """The changes a statement makes on this replica's state (`raw_of` reads a key's
    stored record, with the writes of this batch applied)."""
    document = json.loads(statement)
    kind = document["kind"]
    key = bytes.fromhex(document["key"])
    if kind == "put":
        value = bytes.fromhex(document["value"])
        return (Change(key, encode_record(value, document.get("expire_at_ms"))),)
    if kind == "put-generated":
        value = generated_value(document["generator"], now_ms, rng)
        return (Change(key, encode_record(value)),)
    if kind == "delete":
        return (Change(key, None),)
    previous = _live(raw_of(key), now_ms)
    if kind == "increment":
        result, expire_at_ms = incremented(previous, int(document["delta"]))
        return (Change(key, encode_record(str(result).encode(), expire_at_ms)),)
    if kind == "append":
        suffix = bytes.fromhex(document["value"])
        value = suffix if previous is None else previous[0] + suffix
        expire_at_ms = None if previous is None else previous[1]
        return (Change(key, encode_record(value, expire_at_ms)),)
    raise StatementError(f"unknown statement kind {kind!r}")


def _live(raw: bytes | None, now_ms: int) -> tuple[bytes, int | None] | None:
    if raw is None:
        return None
    value, expire_at_ms = decode_record(raw)
    if expire_at_ms is not None and expire_at_ms <= now_ms:
        return None
    return value, expire_at_ms
