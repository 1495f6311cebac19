"""The replication log of one partition replica: positions, entries, and their layout
in storage.

A replica's log lives beside its data, in keyspace `_log.<keyspace>`, same partition:

| key                            | value                                                    |
|--------------------------------|----------------------------------------------------------|
| `e` + first sequence (u64, BE) | msgpack list of entries, each `[epoch, changes, statement]` |
|                                | with changes `[[key, record, before-image], ...]`        |
| `s`                            | promised epoch, base epoch, base sequence (u64 each),    |
|                                | then the epoch starts at or below the base: a count      |
|                                | (u32) and an (epoch, sequence) pair (u64 each) per one   |

A record holds consecutive entries from its first sequence on: the leader logs an
entry per record, a follower all the entries of one message in one record (one
storage write and, once trimmed, one delete for many entries). Records never
overlap; a trim drops the records wholly at or below the base, so the first one may
still hold entries the base has passed, which loading skips. Entries and the data
writes they make go in one atomic batch, so after a crash the data always equals the
log applied in order. The before-images (what each key held
before the entry) stay local: they are how a replica undoes a divergent tail. The
base is the position just before the first entry kept; everything up to it is on
every replica and was dropped from the log. The epoch starts outlive the dropped
entries: which epoch wrote each sequence is what tells a follower that installs a
snapshot which of its own entries the leader's log holds (`epoch_history.py`). A state
written before they were kept has none (24 bytes): the replica knows only its base.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgpack  # type: ignore[import-untyped]

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
# One packer for every entry: a Packer per call costs three times the packing. A node's
# core runs on one thread, so one shared packer is safe; a failed pack resets it.
_PACK = msgpack.Packer(use_bin_type=True).pack


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
    entries: tuple[LocalEntry, ...]  # those past the base, in order
    records: tuple[int, ...]  # the first sequence of each stored record, in order


def log_keyspace(keyspace: str) -> str:
    return LOG_KEYSPACE_PREFIX + keyspace


def record_key(first_sequence: int) -> bytes:
    return ENTRY_PREFIX + _U64.pack(first_sequence)


def record_write(keyspace: str, partition: int, entries: Sequence[LocalEntry]) -> Write:
    """One record for consecutive `entries`, keyed by the first one's sequence."""
    value = _PACK(
        [
            (
                local.entry.epoch,
                [
                    (key, record, before)
                    for (key, record), before in zip(local.entry.changes, local.before, strict=True)
                ],
                local.entry.statement,
            )
            for local in entries
        ]
    )
    key = ENTRY_PREFIX + _U64.pack(entries[0].entry.sequence)
    return Write(LOG_KEYSPACE_PREFIX + keyspace, partition, key, value)


def record_delete(keyspace: str, partition: int, first_sequence: int) -> Write:
    return Write(log_keyspace(keyspace), partition, record_key(first_sequence), None)


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
    records: list[int] = []
    start = ENTRY_PREFIX
    while True:
        rows = storage.scan(name, partition, start, STATE_KEY, _SCAN_PAGE_SIZE)
        for key, value in rows:
            decoded = decode_record(key, value)
            records.append(decoded[0].entry.sequence)
            entries += (e for e in decoded if e.entry.sequence > state.base.sequence)
        if len(rows) < _SCAN_PAGE_SIZE:
            break
        start = rows[-1][0] + b"\x00"
    expected = state.base.sequence + 1
    for local in entries:
        if local.entry.sequence != expected:
            raise LogFormatError(f"log entry {expected} is missing")
        expected += 1
    return PersistedLog(state, tuple(entries), tuple(records))


def decode_record(key: bytes, value: bytes) -> list[LocalEntry]:
    """The entries of one stored record, in order."""
    if not key.startswith(ENTRY_PREFIX) or len(key) != len(ENTRY_PREFIX) + _U64.size:
        raise LogFormatError(f"not a log record key: {key!r}")
    (first,) = _U64.unpack_from(key, len(ENTRY_PREFIX))
    decoded: list[LocalEntry] = []
    try:
        items: Any = msgpack.unpackb(value, use_list=False, raw=False)
        if type(items) is not tuple or not items:
            raise LogFormatError(f"log record {first}: not a list of entries")
        for offset, (epoch, rows, statement) in enumerate(items):
            sequence = first + offset
            if type(epoch) is not int or not _optional_bytes(statement):
                raise LogFormatError(f"log entry {sequence}: malformed epoch or statement")
            changes: list[Change] = []
            befores: list[bytes | None] = []
            for change_key, record, before in rows:
                if type(change_key) is not bytes or not _optional_bytes(record, before):
                    raise LogFormatError(f"log entry {sequence}: keys and records are bytes")
                changes.append(Change(change_key, record))
                befores.append(before)
            entry = Entry(epoch, sequence, tuple(changes), statement)
            decoded.append(LocalEntry(entry, tuple(befores)))
    except LogFormatError:
        raise
    except Exception as error:  # msgpack raises several types; a wrong shape, others
        raise LogFormatError(f"log record {first}: {error!r}") from None
    return decoded


def _optional_bytes(*values: object) -> bool:
    return all(value is None or type(value) is bytes for value in values)


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
