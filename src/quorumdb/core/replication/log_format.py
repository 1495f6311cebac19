"""The replication log of one partition replica: positions, entries, and their layout
in storage.

A replica's log lives beside its data, in keyspace `_log.<keyspace>`, same partition:

| key                        | value                                                  |
|----------------------------|--------------------------------------------------------|
| `e` + sequence (u64, BE)   | epoch (u64) + changes, each with its before-image      |
| `s`                        | promised epoch, base epoch, base sequence (u64 each),  |
|                            | then the epoch starts at or below the base: a count    |
|                            | (u32) and an (epoch, sequence) pair (u64 each) per one |

An entry and the data writes it makes go in one atomic batch, so after a crash the
data always equals the log applied in order. The before-images (what each key held
before the entry) stay local: they are how a replica undoes a divergent tail. The
base is the position just before the first entry kept; everything up to it is on
every replica and was dropped from the log. The epoch starts outlive the dropped
entries: which epoch wrote each sequence is what tells a follower that installs a
snapshot which of its own entries the leader's log holds (`epoch_history.py`). A state
written before they were kept has none (24 bytes): the replica knows only its base.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from quorumdb.storage.interface import StorageReader, Write

LOG_KEYSPACE_PREFIX = "_log."
ENTRY_PREFIX = b"e"
STATE_KEY = b"s"
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_STATE = struct.Struct(">QQQ")
_EPOCH_START = struct.Struct(">QQ")
EPOCH_STARTS_MAX = 1_024  # epochs whose first sequence a replica remembers (the newest)
_SCAN_PAGE_SIZE = 1024
_ABSENT = 0
_PRESENT = 1


class LogFormatError(ValueError):
    """Stored replication state that this version cannot read back."""


class Position(NamedTuple):
    """Where an entry sits: epochs order leaders, sequences order entries of all epochs."""

    epoch: int
    sequence: int


ORIGIN = Position(0, 0)


class Change(NamedTuple):
    key: bytes
    record: bytes | None  # the stored record after the write (see core/records.py); None deletes


class Entry(NamedTuple):
    epoch: int
    sequence: int
    changes: tuple[Change, ...]
    # Statement-based keyspaces: the operation (core/replication/statement.py) that every
    # replica runs; the leader ships it without the changes it made.
    statement: bytes | None = None

    @property
    def position(self) -> Position:
        return Position(self.epoch, self.sequence)


class LocalEntry(NamedTuple):
    entry: Entry
    before: tuple[bytes | None, ...]  # each change's previous record on this replica


class ReplicaState(NamedTuple):
    promised_epoch: int  # never accept an entry or a write of an older epoch
    base: Position
    # The first entry of each epoch at or below the base, oldest first (or, for the
    # oldest, the first this replica knows of): the dropped entries' epochs.
    epoch_starts: tuple[Position, ...] = ()


class PersistedLog(NamedTuple):
    state: ReplicaState
    entries: tuple[LocalEntry, ...]


def log_keyspace(keyspace: str) -> str:
    return LOG_KEYSPACE_PREFIX + keyspace


def entry_key(sequence: int) -> bytes:
    return ENTRY_PREFIX + _U64.pack(sequence)


def entry_write(keyspace: str, partition: int, local: LocalEntry) -> Write:
    parts = [_U64.pack(local.entry.epoch), _U32.pack(len(local.entry.changes))]
    for change, before in zip(local.entry.changes, local.before, strict=True):
        parts += [_bytes(change.key), _optional(change.record), _optional(before)]
    parts.append(_optional(local.entry.statement))
    return Write(
        log_keyspace(keyspace), partition, entry_key(local.entry.sequence), b"".join(parts)
    )


def entry_delete(keyspace: str, partition: int, sequence: int) -> Write:
    return Write(log_keyspace(keyspace), partition, entry_key(sequence), None)


def state_write(keyspace: str, partition: int, state: ReplicaState) -> Write:
    assert len(state.epoch_starts) <= EPOCH_STARTS_MAX
    parts = [
        _STATE.pack(state.promised_epoch, state.base.epoch, state.base.sequence),
        _U32.pack(len(state.epoch_starts)),
    ]
    parts += [_EPOCH_START.pack(epoch, sequence) for epoch, sequence in state.epoch_starts]
    return Write(log_keyspace(keyspace), partition, STATE_KEY, b"".join(parts))


def load_log(storage: StorageReader, keyspace: str, partition: int) -> PersistedLog:
    """What a replica persisted before it stopped (an empty log for a new one)."""
    name = log_keyspace(keyspace)
    raw_state = storage.get(name, partition, STATE_KEY)
    state = ReplicaState(0, ORIGIN) if raw_state is None else _decode_state(raw_state)
    entries: list[LocalEntry] = []
    start = ENTRY_PREFIX
    while True:
        rows = storage.scan(name, partition, start, STATE_KEY, _SCAN_PAGE_SIZE)
        entries += [decode_entry(key, value) for key, value in rows]
        if len(rows) < _SCAN_PAGE_SIZE:
            break
        start = rows[-1][0] + b"\x00"
    return PersistedLog(state, tuple(entries))


def decode_entry(key: bytes, value: bytes) -> LocalEntry:
    if not key.startswith(ENTRY_PREFIX) or len(key) != len(ENTRY_PREFIX) + _U64.size:
        raise LogFormatError(f"not a log entry key: {key!r}")
    (sequence,) = _U64.unpack_from(key, len(ENTRY_PREFIX))
    try:
        (epoch,) = _U64.unpack_from(value, 0)
        (count,) = _U32.unpack_from(value, _U64.size)
        offset = _U64.size + _U32.size
        changes: list[Change] = []
        befores: list[bytes | None] = []
        for _ in range(count):
            change_key, offset = _read_bytes(value, offset)
            record, offset = _read_optional(value, offset)
            before, offset = _read_optional(value, offset)
            changes.append(Change(change_key, record))
            befores.append(before)
        statement, offset = _read_optional(value, offset)
    except struct.error as error:
        raise LogFormatError(f"log entry {sequence}: {error}") from None
    if offset != len(value):
        raise LogFormatError(f"log entry {sequence}: {len(value) - offset} trailing bytes")
    return LocalEntry(Entry(epoch, sequence, tuple(changes), statement), tuple(befores))


def _decode_state(value: bytes) -> ReplicaState:
    try:
        promised, base_epoch, base_sequence = _STATE.unpack_from(value, 0)
        starts = _decode_epoch_starts(value, _STATE.size)
    except struct.error as error:
        raise LogFormatError(f"replica state: {error}") from None
    return ReplicaState(promised, Position(base_epoch, base_sequence), starts)


def _decode_epoch_starts(value: bytes, offset: int) -> tuple[Position, ...]:
    if offset == len(value):  # written before epoch starts were kept
        return ()
    (count,) = _U32.unpack_from(value, offset)
    offset += _U32.size
    if count > EPOCH_STARTS_MAX or offset + count * _EPOCH_START.size != len(value):
        raise struct.error(f"{count} epoch starts do not fill {len(value) - offset} bytes")
    return tuple(
        Position(*_EPOCH_START.unpack_from(value, offset + index * _EPOCH_START.size))
        for index in range(count)
    )


def _bytes(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


def _optional(data: bytes | None) -> bytes:
    if data is None:
        return bytes([_ABSENT])
    return bytes([_PRESENT]) + _bytes(data)


def _read_bytes(value: bytes, offset: int) -> tuple[bytes, int]:
    (length,) = _U32.unpack_from(value, offset)
    start = offset + _U32.size
    if start + length > len(value):
        raise struct.error("a field runs past the end")
    return value[start : start + length], start + length


def _read_optional(value: bytes, offset: int) -> tuple[bytes | None, int]:
    if offset >= len(value):
        raise struct.error("a field runs past the end")
    flag = value[offset]
    if flag == _ABSENT:
        return None, offset + 1
    if flag != _PRESENT:
        raise struct.error(f"bad presence flag {flag}")
    return _read_bytes(value, offset + 1)
