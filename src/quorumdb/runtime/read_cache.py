"""A bounded cache of stored records in front of the storage engine, for hot keys.

Reading a record from LMDB (a lookup, a copy, a checksum) costs more than the rest of a
GET; under skewed load the same few keys are read again and again. The cache holds the
record bytes as read (checksum already verified), is emptied of a key whenever a write
to it is applied to storage, and never holds records with an expiry (those must be
judged against the clock on every read anyway). Eviction is first-in-first-out by bytes.
"""

from __future__ import annotations

from collections.abc import Iterable

from quorumdb.storage.interface import Write

Location = tuple[str, int, bytes]


class ReadCache:
    def __init__(self, capacity_bytes: int, record_bytes_max: int = 4096) -> None:
        if capacity_bytes < 0 or record_bytes_max < 1:
            raise ValueError("cache capacity must be >= 0 and the record limit positive")
        self.capacity_bytes = capacity_bytes
        self.record_bytes_max = record_bytes_max
        self._records: dict[Location, bytes] = {}
        self.size_bytes = 0
        self.hit_count = 0
        self.miss_count = 0

    def get(self, location: Location) -> bytes | None:
        record = self._records.get(location)
        if record is None:
            self.miss_count += 1
        else:
            self.hit_count += 1
        return record

    def put(self, location: Location, record: bytes) -> None:
        """Remember a record just read from storage (plain records of modest size only)."""
        size = len(record) + len(location[2])
        if (
            size > self.record_bytes_max
            or size > self.capacity_bytes
            or record[:1] != b"\x00"  # only records without expiry (see core/records.py)
            or location in self._records
        ):
            return
        records = self._records
        while self.size_bytes + size > self.capacity_bytes:
            oldest = next(iter(records))
            self.size_bytes -= len(records.pop(oldest)) + len(oldest[2])
        records[location] = record
        self.size_bytes += size

    def forget(self, writes: Iterable[Write]) -> None:
        """Called as writes reach storage: their keys' cached records are stale."""
        records = self._records
        if not records:
            return
        for write in writes:
            record = records.pop(write[:3], None)
            if record is not None:
                self.size_bytes -= len(record) + len(write.key)

    def __len__(self) -> int:
        return len(self._records)
