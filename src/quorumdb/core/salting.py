"""Key salting for hot counters: one logical key spread over K stored sub-keys.

The notes' remedy for a key too hot for one node: append a small number to the key so
its writes land on K different keys (hence partitions, hence nodes), and make reads
gather all K and combine them. Combining needs a merge rule, and the one that is exact
is addition, so a salted key is a counter:

- INCR/INCRBY/DECR/DECRBY change one sub-key (the coordinator rotates through them) and
  answer the sum read right after: increments racing on other sub-keys may or may not be
  in that sum, but none is ever lost.
- GET sums the sub-keys (nil if none exists). SET of an integer writes it to sub-key 0
  and deletes the others; DEL deletes all. Neither is atomic across sub-keys, so a SET
  racing with increments may keep some of them.
- Anything else (APPEND, SET with conditions, expiry or GET) is refused with a clear error,
  rather than giving an answer that is not what the command means.

Sub-key 0 is the key itself, so a counter that existed before salting keeps its value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from quorumdb.core.errors import ErrorCode
from quorumdb.core.integers import INT64_MAX, INT64_MIN, parse_int64
from quorumdb.core.messages import (
    Append,
    Delete,
    Get,
    Increment,
    KeyOperation,
    Outcome,
    Put,
    PutCondition,
    failure,
)

SALT_MARKER = b"\x00salt:"

Merge = Callable[[Sequence[Outcome]], Outcome]


def sub_key(key: bytes, index: int) -> bytes:
    """The stored key of sub-key `index`; 0 is the key itself."""
    return key if index == 0 else key + SALT_MARKER + b"%d" % index


def is_sub_key(stored_key: bytes) -> bool:
    """True for sub-keys 1..K-1, which scans hide (sub-key 0 stands for the key)."""
    return SALT_MARKER in stored_key


def base_key(stored_key: bytes) -> bytes:
    """The salted key a sub-key belongs to."""
    return stored_key.split(SALT_MARKER, 1)[0]


def expand(
    operation: KeyOperation, ways: int, rotation: int
) -> tuple[list[KeyOperation], Merge] | Outcome:
    """The sub-operations for a salted key and how to merge their outcomes, or a refusal.

    `rotation` picks the sub-key an increment changes: coordinators pass a counter, so
    their increments spread evenly without coordination."""
    keyspace, key = operation.keyspace, operation.key
    keys = [sub_key(key, index) for index in range(ways)]
    if isinstance(operation, Get):
        return [Get(keyspace, each) for each in keys], _merge_sum_or_none
    if isinstance(operation, Increment):
        chosen = rotation % ways
        operations: list[KeyOperation] = [Increment(keyspace, keys[chosen], operation.delta)]
        operations += [Get(keyspace, each) for index, each in enumerate(keys) if index != chosen]
        return operations, _merge_sum
    if isinstance(operation, Delete):
        return [Delete(keyspace, each) for each in keys], _merge_any_true
    if isinstance(operation, Put):
        plain = (
            operation.condition is PutCondition.ALWAYS
            and operation.expire_at_ms is None
            and not operation.keep_expiry
            and not operation.return_previous
        )
        if not plain:
            return _refusal(key, ways, "SET with options")
        if parse_int64(operation.value) is None:
            return failure(
                ErrorCode.INVALID_ARGUMENT,
                f"key {_show(key)} is salted over {ways} sub-keys, so it holds a counter:"
                " SET takes an integer",
            )
        operations = [Put(keyspace, keys[0], operation.value)]
        operations += [Delete(keyspace, each) for each in keys[1:]]
        return operations, _merge_first
    if isinstance(operation, Append):
        return _refusal(key, ways, "APPEND")
    raise TypeError(f"unexpected operation {type(operation).__name__}")


def _refusal(key: bytes, ways: int, what: str) -> Outcome:
    return failure(
        ErrorCode.INVALID_ARGUMENT,
        f"key {_show(key)} is salted over {ways} sub-keys (a counter):"
        f" {what} does not apply; use GET, SET, DEL, INCR, INCRBY, DECR, DECRBY",
    )


def _show(key: bytes) -> str:
    return repr(key.decode("utf-8", "backslashreplace"))


def _first_error(outcomes: Sequence[Outcome]) -> Outcome | None:
    for outcome in outcomes:
        if outcome.error is not None:
            return outcome
    return None


def _sum(outcomes: Sequence[Outcome]) -> int | Outcome:
    total = 0
    for outcome in outcomes:
        value = outcome.value
        if value is None:
            continue
        if isinstance(value, bytes):
            parsed = parse_int64(value)
            if parsed is None:
                return failure(ErrorCode.NOT_INTEGER, "a sub-key of a salted key is not an integer")
            value = parsed
        if not isinstance(value, int) or isinstance(value, bool):
            return failure(ErrorCode.INTERNAL, f"unexpected sub-key value {value!r}")
        total += value
    if not INT64_MIN <= total <= INT64_MAX:
        return failure(ErrorCode.OVERFLOW, "the salted counter's sum overflows 64 bits")
    return total


def _merge_sum(outcomes: Sequence[Outcome]) -> Outcome:
    error = _first_error(outcomes)
    if error is not None:
        return error
    total = _sum(outcomes)
    return total if isinstance(total, Outcome) else Outcome(total)


def _merge_sum_or_none(outcomes: Sequence[Outcome]) -> Outcome:
    error = _first_error(outcomes)
    if error is not None:
        return error
    if all(outcome.value is None for outcome in outcomes):
        return Outcome(None)
    total = _sum(outcomes)
    return total if isinstance(total, Outcome) else Outcome(str(total).encode())


def _merge_any_true(outcomes: Sequence[Outcome]) -> Outcome:
    error = _first_error(outcomes)
    if error is not None:
        return error
    return Outcome(any(outcome.value is True for outcome in outcomes))


def _merge_first(outcomes: Sequence[Outcome]) -> Outcome:
    error = _first_error(outcomes)
    return error if error is not None else outcomes[0]
