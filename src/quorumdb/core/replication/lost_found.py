"""Writes a replica had applied and then discarded: the tail an old leader or follower
undoes when it learns that a newer leader never had it (asynchronous replication's
known loss). They are kept, not dropped silently, in keyspace `_lostfound`, partition
0, one record per changed key, so an operator can list them and write them again.

key:   keyspace (UTF-8) + 0x00 + partition (u32) + epoch, sequence (u64) + index (u32)
value: the key's length (u32) + the key + the record it held (empty: it was deleted)

An operator's decision about an entry (replayed, or discarded after review) is kept in
partition 1 under the same key, so the entry itself stays for audit:

key:   the entry's key         value: b"replayed" or b"discarded"

An entry is named across the cluster by `<node>:<hex of its key>` (`lost_write_id`).
"""

from __future__ import annotations

import struct
from enum import Enum
from typing import NamedTuple

from quorumdb.core.records import decode_record
from quorumdb.storage.interface import StorageReader, Write

KEYSPACE = "_lostfound"
PARTITION = 0
RESOLUTIONS_PARTITION = 1
LIST_LIMIT_MAX = 1_000  # entries per listed page
ID_LENGTH_MAX = 512  # characters: a node id (64) and the hex of a key (under 200)
_HEADER = struct.Struct(">IQQI")
_U32 = struct.Struct(">I")


class Resolution(Enum):
    REPLAYED = "replayed"
    DISCARDED = "discarded"


class LostWriteIdError(ValueError):
    """Text that does not name a lost+found entry (the caller's fault)."""


class LostWrite(NamedTuple):
    keyspace: str
    partition: int
    epoch: int
    sequence: int
    change_index: int  # which change of the entry
    key: bytes
    record: bytes | None  # what the write stored; None: it deleted the key

    @property
    def storage_key(self) -> bytes:
        header = _HEADER.pack(self.partition, self.epoch, self.sequence, self.change_index)
        return self.keyspace.encode() + b"\x00" + header

    def write(self) -> Write:
        value = _U32.pack(len(self.key)) + self.key + (self.record or b"")
        return Write(KEYSPACE, PARTITION, self.storage_key, value)

    def writes(self) -> tuple[Write, Write]:
        """The entry, and no resolution yet (one left by an earlier entry of this name)."""
        return self.write(), Write(KEYSPACE, RESOLUTIONS_PARTITION, self.storage_key, None)

    @property
    def value(self) -> tuple[bytes, int | None] | None:
        """(value, expire_at_ms or None) of what the write stored; None for a delete."""
        return None if self.record is None else decode_record(self.record)


def decode_lost_write(storage_key: bytes, value: bytes) -> LostWrite:
    name, separator, header = storage_key.partition(b"\x00")
    if not separator or len(header) != _HEADER.size or len(value) < _U32.size:
        raise ValueError(f"not a lost+found record: {storage_key!r}")
    partition, epoch, sequence, index = _HEADER.unpack(header)
    (length,) = _U32.unpack_from(value)
    key = value[_U32.size : _U32.size + length]
    record = value[_U32.size + length :] or None
    return LostWrite(name.decode(), partition, epoch, sequence, index, key, record)


# --- naming, listing and resolving entries ----------------------------------------------


def lost_write_id(node_id: str, storage_key: bytes) -> str:
    """The node part says where the entry is; the key part is hex, so the id is URL-safe
    whenever the node id is (the usual letters, digits, '_', '.' and '-')."""
    return f"{node_id}:{storage_key.hex()}"


def parse_lost_write_id(text: str) -> tuple[str, bytes]:
    """(node id, storage key) of an id made by `lost_write_id`."""
    if len(text) > ID_LENGTH_MAX:
        raise LostWriteIdError(f"a lost+found id has at most {ID_LENGTH_MAX} characters")
    node_id, separator, key_hex = text.rpartition(":")
    if not separator or not node_id:
        raise LostWriteIdError(f"malformed lost+found id {text!r}: expected NODE:HEX")
    try:
        storage_key = bytes.fromhex(key_hex)
    except ValueError:
        raise LostWriteIdError(f"malformed lost+found id {text!r}: not hexadecimal") from None
    name, key_separator, header = storage_key.partition(b"\x00")
    if not name or not key_separator or len(header) != _HEADER.size:
        raise LostWriteIdError(f"malformed lost+found id {text!r}: not an entry's key")
    return node_id, storage_key


class LostFoundEntry(NamedTuple):
    storage_key: bytes
    lost: LostWrite
    resolution: Resolution | None  # None: waiting for an operator


class LostFoundPage(NamedTuple):
    entries: tuple[LostFoundEntry, ...]
    next_after: bytes | None  # pass as `after` for the next page; None: no more


def read_entry(storage: StorageReader, storage_key: bytes) -> LostFoundEntry | None:
    raw = storage.get(KEYSPACE, PARTITION, storage_key)
    if raw is None:
        return None
    return LostFoundEntry(
        storage_key, decode_lost_write(storage_key, raw), _resolution(storage, storage_key)
    )


def list_entries(storage: StorageReader, after: bytes | None, limit: int) -> LostFoundPage:
    """Up to `limit` entries whose keys come after `after` (None: from the first)."""
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise ValueError(f"limit must be between 1 and {LIST_LIMIT_MAX}")
    start = b"" if after is None else after + b"\x00"  # the smallest key above `after`
    rows = storage.scan(KEYSPACE, PARTITION, start, None, limit + 1)
    entries = tuple(
        LostFoundEntry(key, decode_lost_write(key, raw), _resolution(storage, key))
        for key, raw in rows[:limit]
    )
    next_after = entries[-1].storage_key if len(rows) > limit else None
    return LostFoundPage(entries, next_after)


def pending_count(storage: StorageReader) -> int:
    """Entries neither replayed nor discarded (every resolution belongs to an entry)."""
    resolved = storage.count(KEYSPACE, RESOLUTIONS_PARTITION)
    return max(storage.count(KEYSPACE, PARTITION) - resolved, 0)


def resolve(storage: StorageReader, storage_key: bytes, resolution: Resolution) -> Write:
    """The write recording `resolution`; the caller has checked the entry is pending."""
    assert storage.get(KEYSPACE, PARTITION, storage_key) is not None
    assert _resolution(storage, storage_key) is None
    return Write(KEYSPACE, RESOLUTIONS_PARTITION, storage_key, resolution.value.encode())


def _resolution(storage: StorageReader, storage_key: bytes) -> Resolution | None:
    raw = storage.get(KEYSPACE, RESOLUTIONS_PARTITION, storage_key)
    return None if raw is None else Resolution(raw.decode())
