"""The storage contract shared by the real engine (LMDB) and the simulated disk.

Writes are applied atomically but are not durable until `sync()` returns: this split
is what lets the runtime merge every write of one event-loop turn into one
transaction and one fsync (group commit) and release replies only afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol


class StorageError(Exception):
    """Base class of storage failures."""


class CorruptRecordError(StorageError):
    """A record's checksum did not match its contents when read back."""


class Write(NamedTuple):
    """One key of one partition set to `value`, or deleted when `value` is None.

    A named tuple, not a frozen dataclass: one is built per written key, and a tuple is
    immutable at a third of the construction cost."""

    keyspace: str
    partition: int
    key: bytes
    value: bytes | None


class StorageReader(Protocol):
    """Read-only view: what the sans-IO core is given."""

    def get(self, keyspace: str, partition: int, key: bytes) -> bytes | None:
        """The value stored under `key`, or None."""
        ...

    def scan(
        self,
        keyspace: str,
        partition: int,
        start: bytes,
        end: bytes | None,
        limit: int,
    ) -> list[tuple[bytes, bytes]]:
        """Up to `limit` pairs with start <= key < end (end None: no upper bound), in key order."""
        ...

    def count(self, keyspace: str, partition: int) -> int:
        """Number of keys stored in one partition."""
        ...


class Storage(StorageReader, Protocol):
    """A storage engine: reads, atomic batches, and an explicit durability point."""

    def apply(self, writes: Sequence[Write]) -> None:
        """Apply all writes in one atomic transaction; durable only after `sync`."""
        ...

    def sync(self) -> None:
        """Make every applied write durable (fsync)."""
        ...

    def partitions(self) -> list[tuple[str, int]]:
        """Every (keyspace, partition) that holds at least one key, sorted."""
        ...

    def size_bytes(self) -> int:
        """Bytes used by stored data, for metrics."""
        ...

    def close(self) -> None:
        """Release files and handles; applied but unsynced writes may be lost."""
        ...
