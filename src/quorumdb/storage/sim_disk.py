"""The simulated disk: an in-memory `Storage` for the deterministic simulator.

It models exactly what the contract promises: writes applied since the last `sync()`
vanish on `crash()` (power loss) and on `close()` (the worst case the contract allows),
synced writes never do. Live state is kept applied and an undo log records what each
unsynced write replaced, so reads are plain lookups and a crash replays the log
backwards. Outputs never depend on hash order: keys and partitions are sorted.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Sequence

from quorumdb.storage.interface import Write
from quorumdb.storage.lmdb_engine import Location, check_key, check_location


class _SortedPartition:
    """One partition's keys: a dict for lookups plus a sorted key list for scans."""

    __slots__ = ("values", "sorted_keys")

    def __init__(self) -> None:
        self.values: dict[bytes, bytes] = {}
        self.sorted_keys: list[bytes] = []

    def put(self, key: bytes, value: bytes) -> bytes | None:
        """Store `value`; returns the value it replaced."""
        previous = self.values.get(key)
        if previous is None:
            insort(self.sorted_keys, key)
        self.values[key] = value
        return previous

    def delete(self, key: bytes) -> bytes | None:
        """Remove `key` if present; returns the value it had."""
        previous = self.values.pop(key, None)
        if previous is not None:
            del self.sorted_keys[bisect_left(self.sorted_keys, key)]
        return previous

    def scan(self, start: bytes, end: bytes | None, limit: int) -> list[tuple[bytes, bytes]]:
        first = bisect_left(self.sorted_keys, start)
        last = len(self.sorted_keys) if end is None else bisect_left(self.sorted_keys, end)
        keys = self.sorted_keys[first : min(last, first + limit)]
        return [(key, self.values[key]) for key in keys]


class SimDisk:
    """`Storage` held in memory, with `crash()` to drop whatever was not synced."""

    def __init__(self) -> None:
        self._partitions: dict[Location, _SortedPartition] = {}
        # (location, key, value before the write or None), oldest first, since last sync.
        self._undo_log: list[tuple[Location, bytes, bytes | None]] = []
        self._size_bytes = 0

    def get(self, keyspace: str, partition: int, key: bytes) -> bytes | None:
        """The value stored under `key`, or None."""
        stored = self._partitions.get((keyspace, partition))
        if stored is None:
            check_location(keyspace, partition)
            return None
        if not key:
            check_key(key)
        return stored.values.get(key)

    def scan(
        self,
        keyspace: str,
        partition: int,
        start: bytes,
        end: bytes | None,
        limit: int,
    ) -> list[tuple[bytes, bytes]]:
        """Up to `limit` pairs with start <= key < end (end None: no bound), in key order."""
        stored = self._partitions.get((keyspace, partition))
        if stored is None:
            check_location(keyspace, partition)
            return []
        if limit <= 0:
            return []
        return stored.scan(start, end, limit)

    def count(self, keyspace: str, partition: int) -> int:
        """Number of keys stored in one partition."""
        stored = self._partitions.get((keyspace, partition))
        if stored is None:
            check_location(keyspace, partition)
            return 0
        return len(stored.values)

    def apply(self, writes: Sequence[Write]) -> None:
        """Apply all writes or, if any is invalid, none (validated before any change)."""
        for write in writes:
            check_location(write.keyspace, write.partition)
            check_key(write.key)
        for write in writes:
            location = (write.keyspace, write.partition)
            previous = self._set(location, write.key, write.value)
            self._undo_log.append((location, write.key, previous))

    def sync(self) -> None:
        """Make every applied write durable: nothing before this point can be undone."""
        self._undo_log.clear()

    def crash(self) -> None:
        """Lose every write applied since the last sync, as a power loss would."""
        for location, key, previous in reversed(self._undo_log):
            self._set(location, key, previous)
        self._undo_log.clear()

    def partitions(self) -> list[tuple[str, int]]:
        """Every (keyspace, partition) that holds at least one key, sorted."""
        return sorted(self._partitions)

    def size_bytes(self) -> int:
        """Bytes of keys plus values currently stored."""
        return self._size_bytes

    def close(self) -> None:
        """Drop unsynced writes, the worst case the contract allows; idempotent.

        The disk stays usable: continuing to use it models reopening the same files.
        """
        self.crash()

    def _set(self, location: Location, key: bytes, value: bytes | None) -> bytes | None:
        """Store or (value None) delete one key; returns the value it replaced."""
        stored = self._partitions.get(location)
        if value is None:
            if stored is None:
                return None
            previous = stored.delete(key)
            if not stored.values:
                del self._partitions[location]
        else:
            if stored is None:
                stored = self._partitions[location] = _SortedPartition()
            previous = stored.put(key, value)
            self._size_bytes += len(key) + len(value)
        if previous is not None:
            self._size_bytes -= len(key) + len(previous)
        return previous
