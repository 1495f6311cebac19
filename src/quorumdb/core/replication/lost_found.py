"""Writes a replica had applied and then discarded: the tail an old leader or follower
undoes when it learns that a newer leader never had it (asynchronous replication's
known loss). They are kept, not dropped silently, in keyspace `_lostfound`, partition
0, one record per changed key, so an operator can list them and write them again.

key:   keyspace (UTF-8) + 0x00 + partition (u32) + epoch, sequence (u64) + index (u32)
value: the key's length (u32) + the key + the record it held (empty: it was deleted)
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from quorumdb.storage.interface import Write

KEYSPACE = "_lostfound"
PARTITION = 0
_HEADER = struct.Struct(">IQQI")
_U32 = struct.Struct(">I")


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


def decode_lost_write(storage_key: bytes, value: bytes) -> LostWrite:
    name, separator, header = storage_key.partition(b"\x00")
    if not separator or len(header) != _HEADER.size or len(value) < _U32.size:
        raise ValueError(f"not a lost+found record: {storage_key!r}")
    partition, epoch, sequence, index = _HEADER.unpack(header)
    (length,) = _U32.unpack_from(value)
    key = value[_U32.size : _U32.size + length]
    record = value[_U32.size + length :] or None
    return LostWrite(name.decode(), partition, epoch, sequence, index, key, record)
