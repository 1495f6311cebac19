"""How Raft state is laid out in storage, and how a restarted node reads it back.

Everything lives in keyspace `_raft`, partition 0:

| key                                | value                                        |
|------------------------------------|----------------------------------------------|
| `hard-state`                       | term (u64) + voted-for (UTF-8, empty: none)  |
| `log:` + index as big-endian u64   | term (u64) + kind (u8) + command or config   |
| `snapshot`                         | index, term (u64 each) + config + data       |

Big-endian indexes make keys sort in log order, so a restart reads the log with one
scan. Each batch of writes is atomic, and a crash loses only whole batches from the
end, so what survives is always a state the node once had.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from quorumdb.core.controller.raft_configuration import (
    decode_configuration,
    encode_configuration,
)
from quorumdb.core.controller.raft_log import EntryKind, LogEntry, Snapshot
from quorumdb.storage.interface import StorageReader, Write

KEYSPACE = "_raft"
PARTITION = 0
HARD_STATE_KEY = b"hard-state"
COMMIT_KEY = b"commit"
SNAPSHOT_KEY = b"snapshot"
LOG_KEY_PREFIX = b"log:"
_LOG_KEY_END = b"log;"  # the byte after ':' bounds the scan of log keys
_U64 = struct.Struct(">Q")
_ENTRY_HEADER = struct.Struct(">QB")
_SNAPSHOT_HEADER = struct.Struct(">QQ")
_SCAN_PAGE_SIZE = 1024


class PersistedFormatError(ValueError):
    """Stored Raft state that this version cannot read back."""


class HardState(NamedTuple):
    term: int
    voted_for: str | None


class PersistedState(NamedTuple):
    """What survives a crash: enough to rebuild a node's term, vote, snapshot and log."""

    hard_state: HardState
    snapshot: Snapshot | None
    entries: tuple[LogEntry, ...]
    # The highest index known committed when last persisted (as etcd's HardState.Commit):
    # not needed for safety, but it lets a restarted node apply its log at once instead
    # of waiting to hear from a leader.
    commit_index: int = 0

    @property
    def is_empty(self) -> bool:
        return self.hard_state.term == 0 and self.snapshot is None and not self.entries


EMPTY_STATE = PersistedState(HardState(0, None), None, ())


def log_key(index: int) -> bytes:
    return LOG_KEY_PREFIX + _U64.pack(index)


def commit_write(commit_index: int) -> Write:
    return Write(KEYSPACE, PARTITION, COMMIT_KEY, _U64.pack(commit_index))


def hard_state_write(hard_state: HardState) -> Write:
    vote = (hard_state.voted_for or "").encode()
    return Write(KEYSPACE, PARTITION, HARD_STATE_KEY, _U64.pack(hard_state.term) + vote)


def entry_write(entry: LogEntry) -> Write:
    if entry.kind is EntryKind.CONFIGURATION:
        assert entry.configuration is not None
        payload = encode_configuration(entry.configuration)
    else:
        payload = entry.command
    value = _ENTRY_HEADER.pack(entry.term, entry.kind.value) + payload
    return Write(KEYSPACE, PARTITION, log_key(entry.index), value)


def entry_delete(index: int) -> Write:
    return Write(KEYSPACE, PARTITION, log_key(index), None)


def snapshot_write(snapshot: Snapshot) -> Write:
    value = (
        _SNAPSHOT_HEADER.pack(snapshot.index, snapshot.term)
        + encode_configuration(snapshot.configuration)
        + snapshot.data
    )
    return Write(KEYSPACE, PARTITION, SNAPSHOT_KEY, value)


def decode_entry(key: bytes, value: bytes) -> LogEntry:
    if not key.startswith(LOG_KEY_PREFIX) or len(key) != len(LOG_KEY_PREFIX) + _U64.size:
        raise PersistedFormatError(f"not a log key: {key!r}")
    (index,) = _U64.unpack_from(key, len(LOG_KEY_PREFIX))
    try:
        term, kind_value = _ENTRY_HEADER.unpack_from(value)
        kind = EntryKind(kind_value)
    except (struct.error, ValueError) as error:
        raise PersistedFormatError(f"log entry {index}: {error}") from None
    payload = value[_ENTRY_HEADER.size :]
    if kind is EntryKind.CONFIGURATION:
        configuration, _ = decode_configuration(payload)
        return LogEntry(index, term, kind, b"", configuration)
    return LogEntry(index, term, kind, payload)


def decode_snapshot(value: bytes) -> Snapshot:
    try:
        index, term = _SNAPSHOT_HEADER.unpack_from(value)
        configuration, offset = decode_configuration(value, _SNAPSHOT_HEADER.size)
    except (struct.error, UnicodeDecodeError) as error:
        raise PersistedFormatError(f"snapshot: {error}") from None
    return Snapshot(index, term, configuration, value[offset:])


def decode_hard_state(value: bytes) -> HardState:
    if len(value) < _U64.size:
        raise PersistedFormatError("hard state too short")
    (term,) = _U64.unpack_from(value)
    vote = value[_U64.size :].decode()
    return HardState(term, vote or None)


def load_persisted_state(reader: StorageReader) -> PersistedState:
    """Rebuild what a node persisted before it stopped (or EMPTY_STATE for a new node)."""
    raw_hard_state = reader.get(KEYSPACE, PARTITION, HARD_STATE_KEY)
    hard_state = HardState(0, None) if raw_hard_state is None else decode_hard_state(raw_hard_state)
    raw_snapshot = reader.get(KEYSPACE, PARTITION, SNAPSHOT_KEY)
    snapshot = None if raw_snapshot is None else decode_snapshot(raw_snapshot)
    entries: list[LogEntry] = []
    start = LOG_KEY_PREFIX
    while True:
        page = reader.scan(KEYSPACE, PARTITION, start, _LOG_KEY_END, _SCAN_PAGE_SIZE)
        entries.extend(decode_entry(key, value) for key, value in page)
        if len(page) < _SCAN_PAGE_SIZE:
            break
        start = page[-1][0] + b"\x00"
    snapshot_index = 0 if snapshot is None else snapshot.index
    entries = [entry for entry in entries if entry.index > snapshot_index]
    for offset, entry in enumerate(entries):
        if entry.index != snapshot_index + 1 + offset:
            raise PersistedFormatError(f"log has a gap before entry {entry.index}")
    raw_commit = reader.get(KEYSPACE, PARTITION, COMMIT_KEY)
    commit_index = 0
    if raw_commit is not None:
        if len(raw_commit) != _U64.size:
            raise PersistedFormatError("commit index is not 8 bytes")
        (commit_index,) = _U64.unpack(raw_commit)
    return PersistedState(hard_state, snapshot, tuple(entries), commit_index)
