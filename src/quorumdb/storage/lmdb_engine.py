"""The real storage engine: one LMDB environment, one named database per partition.

Commits do not fsync (`sync=False`); durability comes from `sync()`, which the runtime
calls once per event-loop turn (group commit), typically from a worker thread.

Threading: every method except `sync()` must be called from one thread (the event
loop). `sync()` may run on another thread at the same time as transactions: LMDB's
`mdb_env_sync` with `writemap=False` is a plain fdatasync of the data file, allowed
while transactions run, and py-lmdb releases the GIL during it. It is not safe against
a map resize or `close()` (a sync racing `set_mapsize` fails with EINVAL), so those
three are serialized by `_sync_lock`; the lock is never taken on the read/write path.

Crash safety: with `sync=False`, a transaction committed but not yet synced can be lost
or, after an OS crash or power loss (not a process crash), leave the file inconsistent
if the kernel wrote LMDB's meta page before the data pages it points to. With
`pinned_checkpoints` (the write-ahead log's mode) the file is returned to its last
checkpoint at open, whose pages are all on disk (`storage/lmdb_checkpoint.py`). The
record checksums catch damaged values.
"""

from __future__ import annotations

import mmap
import os
import threading
import time
import zlib
from collections.abc import Sequence
from struct import Struct
from typing import NamedTuple, TypeAlias
from zlib import crc32

import lmdb

from quorumdb.storage import lmdb_checkpoint
from quorumdb.storage.interface import CorruptRecordError, StorageError, Write

MAX_KEYSPACE_NAME_BYTES = 200
"""Keeps database names well under LMDB's key size limit."""

FLUSH_STEP_BYTES = 2 * 1024 * 1024
FLUSH_PAUSE_SECONDS = 0.001
"""`sync_in_steps`: how much of the file each step writes back, and the pause after it."""

MAX_KEY_BYTES = 511
"""LMDB's compiled-in key size limit; keys must also be non-empty."""

_CHECKSUM = Struct(">I")
_CHECKSUM_BYTES = _CHECKSUM.size
_unpack_checksum = _CHECKSUM.unpack_from
_DATABASE_NAME_PREFIX = b"p:"
_META_DATABASE_NAME = b"quorumdb:meta"  # not a partition: no "p:" prefix
_LOG_SEQUENCE_KEY = b"log_sequence"
_LOG_SEQUENCE = Struct(">Q")

Location: TypeAlias = tuple[str, int]
"""A (keyspace, partition) pair: the unit that gets its own key space."""


def check_location(keyspace: str, partition: int) -> None:
    """Reject names that could not round-trip through `p:<keyspace>:<partition>`."""
    if not isinstance(keyspace, str) or not keyspace:
        raise ValueError(f"keyspace must be a non-empty str, got {keyspace!r}")
    if ":" in keyspace:
        raise ValueError(f"keyspace must not contain ':', got {keyspace!r}")
    if len(keyspace.encode()) > MAX_KEYSPACE_NAME_BYTES:
        raise ValueError(
            f"keyspace must be at most {MAX_KEYSPACE_NAME_BYTES} bytes in UTF-8, got {keyspace!r}"
        )
    if isinstance(partition, bool) or not isinstance(partition, int) or partition < 0:
        raise ValueError(f"partition must be a non-negative int, got {partition!r}")


def check_key(key: bytes) -> None:
    """Reject keys LMDB cannot store, with a clearer error than MDB_BAD_VALSIZE."""
    if not 0 < len(key) <= MAX_KEY_BYTES:
        raise ValueError(f"key must be 1 to {MAX_KEY_BYTES} bytes, got {len(key)} bytes")


def _database_name(keyspace: str, partition: int) -> bytes:
    check_location(keyspace, partition)
    return _DATABASE_NAME_PREFIX + keyspace.encode() + b":" + str(partition).encode()


def _parse_database_name(name: bytes) -> Location | None:
    """The location a named database belongs to, or None for foreign names."""
    name = name.rstrip(b"\0")  # LMDB 1.x stores names with a trailing NUL.
    if not name.startswith(_DATABASE_NAME_PREFIX):
        return None
    keyspace, separator, partition = name[len(_DATABASE_NAME_PREFIX) :].rpartition(b":")
    if not separator or not keyspace or not partition.isdigit():
        return None
    return keyspace.decode(), int(partition)


def _seal(value: bytes) -> bytes:
    """The stored record: CRC-32 of the value, big-endian, then the value."""
    return _CHECKSUM.pack(zlib.crc32(value)) + value


def _unseal(record: memoryview, keyspace: str, partition: int, key: bytes) -> bytes:
    """The value inside `record`, after checking it against its checksum."""
    value = record[_CHECKSUM_BYTES:]
    if len(record) < _CHECKSUM_BYTES or _CHECKSUM.unpack_from(record)[0] != zlib.crc32(value):
        raise _corrupt(keyspace, partition, key)
    return bytes(value)


def _corrupt(keyspace: str, partition: int, key: bytes) -> CorruptRecordError:
    return CorruptRecordError(
        f"checksum mismatch in keyspace {keyspace!r} partition {partition} key {key!r}"
    )


class PendingCheckpoint(NamedTuple):
    """A snapshot being checkpointed: its read transaction and its meta pages."""

    transaction: lmdb.Transaction
    pages: bytes


class LmdbStorage:
    """`Storage` on LMDB; see the module docstring for threading and durability."""

    def __init__(
        self,
        path: str,
        *,
        map_size_bytes: int = 1 << 30,
        max_partitions: int = 8192,
        pinned_checkpoints: bool = False,
    ) -> None:
        """Open (creating if needed) the environment in directory `path`.

        The map grows by doubling when full, so `map_size_bytes` is only the start.
        `max_partitions` bounds the number of named databases and is fixed at open.
        `pinned_checkpoints` (for the write-ahead log): the file is first returned to its
        last checkpoint (`storage/lmdb_checkpoint.py`), and checkpoints are then taken
        with `begin_checkpoint`/`complete_checkpoint`.
        """
        self._path = path
        self._max_partitions = max_partitions
        self._pinned_checkpoints = pinned_checkpoints
        if pinned_checkpoints and os.path.exists(
            os.path.join(path, lmdb_checkpoint.DATA_FILE_NAME)
        ):
            lmdb_checkpoint.restore(path)
        self._environment = lmdb.open(
            path,
            map_size=map_size_bytes,
            sync=False,
            metasync=False,
            # Commits write into the map instead of copying dirty pages with pwrite:
            # measured 3.3 -> 1.3-1.9 us per random write (BENCHMARKS.md). Durability is
            # unchanged: sync() still flushes everything committed before acknowledging.
            writemap=True,
            lock=True,
            max_readers=1024,
            max_dbs=max_partitions + 1,
            max_spare_txns=1,
        )
        self._meta = self._environment.open_db(_META_DATABASE_NAME)
        self._page_size_bytes = int(self._environment.stat()["psize"])
        # The last saved checkpoint's snapshot, held so that LMDB reuses none of its
        # pages; and the snapshot of a checkpoint being flushed.
        self._pinned: lmdb.Transaction | None = None
        self._pending: lmdb.Transaction | None = None
        self.checkpoints_saved = 0  # including those taken to grow the map
        # Serializes taking, saving and replacing checkpoints: a sync in a worker thread
        # may complete one while a commit on the loop grows the map. Taken before
        # `_sync_lock`, never after it.
        self._checkpoint_lock = threading.RLock()
        self._databases: dict[Location, lmdb._Database] = {}
        self._missing: set[Location] = set()  # partitions known not to exist yet
        # One read transaction reused by every `get` until the next write commits: opening
        # one per read cost as much as the read. Dropped by every commit, so reads always
        # see the latest committed state, and before resizing the map or closing.
        self._reader: lmdb.Transaction | None = None
        self._sync_lock = threading.Lock()
        self._closed = False

    def get(self, keyspace: str, partition: int, key: bytes) -> bytes | None:
        """The value stored under `key`, or None; raises CorruptRecordError on a bad checksum."""
        database = self._databases.get((keyspace, partition)) or self._database(keyspace, partition)
        if database is None:
            return None
        reader = self._reader
        if reader is None:
            # Records as bytes, not buffers: for the small values most reads return, one
            # copy of the record plus a bytes slice costs less than a memoryview, a view
            # slice and a copy of that (~190 ns per read), at the price of a second copy
            # of large values.
            reader = self._reader = self._environment.begin()
        try:
            record = reader.get(key, None, database)  # positional: keywords cost ~60 ns
        except lmdb.BadValsizeError as error:
            raise ValueError(f"key must be 1 to {MAX_KEY_BYTES} bytes, got {key!r}") from error
        if record is None:
            return None
        value = record[_CHECKSUM_BYTES:]
        if len(record) < _CHECKSUM_BYTES or _unpack_checksum(record)[0] != crc32(value):
            raise _corrupt(keyspace, partition, key)
        return value

    def scan(
        self,
        keyspace: str,
        partition: int,
        start: bytes,
        end: bytes | None,
        limit: int,
    ) -> list[tuple[bytes, bytes]]:
        """Up to `limit` pairs with start <= key < end (end None: no bound), in key order."""
        pairs: list[tuple[bytes, bytes]] = []
        if limit <= 0:
            return pairs
        database = self._database(keyspace, partition)
        if database is None:
            return pairs
        with self._environment.begin(db=database, buffers=True) as transaction:
            cursor = transaction.cursor()
            if not cursor.set_range(start):
                return pairs
            for key_view, record in cursor.iternext():
                key = bytes(key_view)
                if end is not None and key >= end:
                    break
                pairs.append((key, _unseal(record, keyspace, partition, key)))
                if len(pairs) >= limit:
                    break
        return pairs

    def count(self, keyspace: str, partition: int) -> int:
        """Number of keys in one partition, from LMDB's B-tree statistics (no scan)."""
        database = self._database(keyspace, partition)
        if database is None:
            return 0
        with self._environment.begin() as transaction:
            return transaction.stat(database)["entries"]

    def apply(self, writes: Sequence[Write], log_sequence: int | None = None) -> None:
        """Apply all writes in one write transaction, doubling the map while it is full.

        `log_sequence`, the write-ahead log record holding these writes, is stored in the
        same transaction: recovery replays only the records after it, so a record never
        undoes a newer write the data file already holds."""
        if not writes:
            return
        for write in writes:
            check_key(write.key)
        self._drop_reader()
        while True:
            try:
                self._apply_in_one_transaction(writes, log_sequence)
                return
            except lmdb.MapFullError:
                self._grow_map()
            except lmdb.DbsFullError as error:
                raise StorageError(
                    f"more than max_partitions={self._max_partitions} partitions"
                ) from error

    def begin_checkpoint(self) -> PendingCheckpoint:
        """Snapshot the present state for a checkpoint: `sync()`, then `complete_checkpoint`.

        Call on the thread that commits, between commits: the meta pages read here are
        then exactly the snapshot's."""
        if not self._pinned_checkpoints:
            raise StorageError("checkpoints need pinned_checkpoints=True")
        with self._checkpoint_lock:
            if self._pending is not None:
                raise StorageError("a checkpoint is already being taken")
            transaction = self._environment.begin()
            pages = lmdb_checkpoint.read_meta_pages(self._path, self._page_size_bytes)
            self._pending = transaction
            return PendingCheckpoint(transaction, pages)

    def complete_checkpoint(self, checkpoint: PendingCheckpoint) -> None:
        """After a `sync()` that began after `begin_checkpoint`: save the snapshot's meta
        pages, hold the snapshot, and let the previous one's pages be reused."""
        with self._checkpoint_lock:
            if checkpoint.transaction is not self._pending:
                return  # superseded by a checkpoint taken to grow the map
            lmdb_checkpoint.save(self._path, self._page_size_bytes, checkpoint.pages)
            self.checkpoints_saved += 1
            self._pending = None
            previous, self._pinned = self._pinned, checkpoint.transaction
            if previous is not None:
                previous.abort()

    def checkpoint_now(self) -> None:
        """Sync and complete a checkpoint of the present state, on this thread."""
        checkpoint = self.begin_checkpoint()
        self.sync()
        self.complete_checkpoint(checkpoint)

    def log_sequence(self) -> int:
        """The newest write-ahead log record applied here (0: none)."""
        with self._environment.begin(db=self._meta) as transaction:
            stored = transaction.get(_LOG_SEQUENCE_KEY)
        return 0 if stored is None else int(_LOG_SEQUENCE.unpack(stored)[0])

    def sync(self) -> None:
        """fsync every committed transaction; safe to call from a worker thread."""
        with self._sync_lock:
            if self._closed:
                raise StorageError("sync() on a closed LmdbStorage")
            self._environment.sync(True)

    def sync_in_steps(
        self,
        step_bytes: int = FLUSH_STEP_BYTES,
        pause_seconds: float = FLUSH_PAUSE_SECONDS,
    ) -> None:
        """`sync`, after writing the used part of the file back a step at a time.

        Why: a checkpoint's one msync of everything written since the last (tens of MB;
        0.1-0.65 s in an ad hoc trace) fills the disk's queue, and every fdatasync of a
        write-ahead log meanwhile (each node's: local nodes share the disk) waits behind
        all of it, stalling the nodes' event loops as long. In steps, a log sync waits
        behind one step at a time: loop stalls fell 5-10 x, the p99.9 of replicated
        writes about 4 x, while the p99 rose (BENCHMARKS.md). Safe from a worker thread."""
        with self._sync_lock:
            if self._closed:
                raise StorageError("sync_in_steps() on a closed LmdbStorage")
            used_bytes = (self._environment.info()["last_pgno"] + 1) * self._page_size_bytes
        path = os.path.join(self._path, lmdb_checkpoint.DATA_FILE_NAME)
        with open(path, "r+b") as file:
            size = min(used_bytes, os.fstat(file.fileno()).st_size)
            if size > 0:
                # A second shared mapping of the file: msync of a range of it writes back
                # that range of the file's pages, whichever mapping dirtied them.
                with mmap.mmap(file.fileno(), size, access=mmap.ACCESS_WRITE) as view:
                    for offset in range(0, size, step_bytes):
                        view.flush(offset, min(step_bytes, size - offset))
                        time.sleep(pause_seconds)
        self.sync()

    def partitions(self) -> list[tuple[str, int]]:
        """Every (keyspace, partition) holding at least one key, sorted."""
        with self._environment.begin() as transaction:
            # The main database holds exactly one entry per named database.
            names = list(transaction.cursor().iternext(keys=True, values=False))
        databases: dict[Location, lmdb._Database] = {}
        for name in names:
            location = _parse_database_name(name)
            if location is not None:
                database = self._databases.get(location) or self._open_existing(*location)
                if database is not None:
                    databases[location] = database
        with self._environment.begin() as transaction:
            return sorted(
                location
                for location, database in databases.items()
                if transaction.stat(database)["entries"] > 0
            )

    def size_bytes(self) -> int:
        """Bytes of the data file in use (pages up to the high-water mark, free ones too)."""
        return (self._environment.info()["last_pgno"] + 1) * self._page_size_bytes

    def close(self) -> None:
        """Close the environment; idempotent.

        Unsynced commits are already in the OS page cache: they survive this and a
        process exit, not an OS crash.
        """
        with self._sync_lock:
            if self._closed:
                return
            self._closed = True
            self._drop_reader()
            self._release_snapshots()
            self._databases.clear()
            self._environment.close()

    def _database(self, keyspace: str, partition: int) -> lmdb._Database | None:
        """The partition's database handle, or None if it does not exist (remembered, so
        reads of empty partitions do not each open a write transaction to find out)."""
        location = (keyspace, partition)
        database = self._databases.get(location)
        if database is None and location not in self._missing:
            database = self._open_existing(keyspace, partition)
            if database is None:
                self._missing.add(location)
        return database

    def holds_partition(self, keyspace: str, partition: int) -> bool:
        """Whether the partition's database exists (a write to it creates no database)."""
        return self._database(keyspace, partition) is not None

    def _drop_reader(self) -> None:
        if self._reader is not None:
            self._reader.abort()
            self._reader = None

    def _open_existing(self, keyspace: str, partition: int) -> lmdb._Database | None:
        """The handle of an existing partition's database, cached; None if it never existed.

        Opened in py-lmdb's own short write transaction: a handle opened inside a read
        transaction is not kept once that transaction ends.
        """
        name = _database_name(keyspace, partition)
        try:
            database = self._environment.open_db(name, create=False)
        except lmdb.NotFoundError:
            return None
        except lmdb.DbsFullError as error:
            # LMDB wants a free handle slot before it looks the name up: with every slot
            # taken, a partition never written is still just empty, not an error.
            with self._environment.begin() as transaction:
                if transaction.get(name) is None:  # named databases are main-db keys
                    return None
            raise StorageError(
                f"more than max_partitions={self._max_partitions} partitions"
            ) from error
        # A handle opened after a transaction began is not valid inside it (EINVAL).
        self._drop_reader()
        self._databases[(keyspace, partition)] = database
        return database

    def _apply_in_one_transaction(self, writes: Sequence[Write], log_sequence: int | None) -> None:
        databases = self._databases
        opened: dict[Location, lmdb._Database] = {}
        environment = self._environment
        with environment.begin(write=True) as transaction:
            for write in writes:
                location = (write.keyspace, write.partition)
                database = databases.get(location) or opened.get(location)
                if database is None:
                    name = _database_name(write.keyspace, write.partition)
                    database = environment.open_db(name, txn=transaction)
                    opened[location] = database
                if write.value is None:
                    transaction.delete(write.key, db=database)
                else:
                    transaction.put(write.key, _seal(write.value), db=database)
            if log_sequence is not None:
                transaction.put(_LOG_SEQUENCE_KEY, _LOG_SEQUENCE.pack(log_sequence), db=self._meta)
        # Cache only after commit: LMDB closes handles created by an aborted transaction.
        databases.update(opened)
        self._missing.difference_update(opened)

    def _grow_map(self) -> None:
        """Double the map size; the caller's failed transaction has already aborted.

        LMDB resizes only with no transaction open, so a pinned checkpoint must go: the
        present state is synced first and becomes the checkpoint, before any commit
        could reuse the old one's pages."""
        self._drop_reader()
        with self._checkpoint_lock:
            with self._sync_lock:  # waits for a checkpoint's sync running in a worker
                pinned = self._pinned is not None or self._pending is not None
                if pinned:
                    self._environment.sync(True)
                    self._release_snapshots()
                map_size_bytes = self._environment.info()["map_size"]
                self._environment.set_mapsize(map_size_bytes * 2)
            if pinned:  # nothing committed since the sync: the present state is durable
                self.complete_checkpoint(self.begin_checkpoint())

    def _release_snapshots(self) -> None:
        """End the pinned and the pending checkpoint's read transactions."""
        for transaction in (self._pending, self._pinned):
            if transaction is not None:
                transaction.abort()
        self._pending = self._pinned = None
