"""LMDB behind a write-ahead log: a group is durable once its log record is synced.

Each group appends one record to the write-ahead log and goes into the memtable, a
dict that reads consult before LMDB; `sync()` is the log's fdatasync, one sequential
write, instead of flushing every LMDB page the group dirtied. The memtable is written to
LMDB, all of it in one transaction and without a sync, once it holds
`memtable_writes_max` writes or `memtable_bytes_max` bytes, before a checkpoint, a scan
or a count. One LMDB commit per group cost ~40 us here even for one key: with a
checkpoint's snapshot held, every commit copies its pages to fresh ones at the end of
the file (page faults on new memory), and the checkpoint then writes all of them back;
a memtable of a few thousand writes makes that once per few thousand writes, with a hot
key's many versions only its last (BENCHMARKS.md). Every `checkpoint_groups` groups, or
`checkpoint_bytes` of log or of growth of LMDB's data file, a checkpoint flushes LMDB
in a worker thread, then deletes the log segments it covers.

A checkpoint takes a snapshot (a read transaction, and LMDB's two meta pages as they
are at that moment), flushes LMDB, saves the meta pages durably, and from then on holds
the snapshot, so LMDB reuses none of its pages until the next checkpoint is saved
(`storage/lmdb_checkpoint.py`). Between checkpoints the kernel may write LMDB's pages
in any order, so after an OS crash the file's own meta page may point at pages that
never reached the disk; the checkpoint's pages, though, are all there.

Recovery (at open): the saved meta pages are written back, which returns LMDB to the
last checkpoint, intact; then the log's records after the newest one that snapshot
holds (each LMDB transaction stores its record's sequence) are replayed, LMDB is
checkpointed and a fresh segment begins.
"""

from __future__ import annotations

import concurrent.futures
import enum
import os
import threading
import time
from collections.abc import Sequence

from quorumdb.storage.interface import StorageError, Write
from quorumdb.storage.lmdb_engine import LmdbStorage, PendingCheckpoint, check_key
from quorumdb.storage.write_ahead_log import (
    DEFAULT_SEGMENT_BYTES,
    WriteAheadLog,
    WriteAheadLogError,
    read_records,
)

DEFAULT_CHECKPOINT_BYTES = 32 * 1024 * 1024
"""Log written between checkpoints: bounds the log on disk (about twice this) and replay
at start-up (about a second per 30 MB here)."""

DEFAULT_CHECKPOINT_GROUPS = 1024
"""Groups between checkpoints, whatever their size. Each commit copies a few LMDB pages
(about four for one small write, measured: the leaf and branch it changed, the log
sequence's, the free list's), and while a checkpoint's snapshot is held none of the
freed ones is reused: counted in log bytes alone, a node writing one hot key grew its
data file ~20 KB per group and took no checkpoint until the map was full. Bounds the
pages in flight to about two intervals' worth."""

DEFAULT_MEMTABLE_WRITES_MAX = 4096
DEFAULT_MEMTABLE_BYTES_MAX = 16 * 1024 * 1024
"""Bounds of the memtable: reaching either writes it to LMDB before the next group."""

REPLAY_BATCH_WRITES = 20_000
"""Writes per LMDB transaction while replaying."""

LOG_DIRECTORY = "wal"


class _Absent(enum.Enum):
    """A dict lookup's default that no record (bytes or None) can be."""

    ABSENT = enum.auto()


_ABSENT = _Absent.ABSENT


class LoggedStorage:
    """`Storage`: LMDB for reads and state, the write-ahead log for durability."""

    def __init__(
        self,
        path: str,
        *,
        checkpoint_bytes: int = DEFAULT_CHECKPOINT_BYTES,
        checkpoint_groups: int = DEFAULT_CHECKPOINT_GROUPS,
        map_size_bytes: int = 1 << 30,
        max_partitions: int = 8192,
        log_segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        memtable_writes_max: int = DEFAULT_MEMTABLE_WRITES_MAX,
        memtable_bytes_max: int = DEFAULT_MEMTABLE_BYTES_MAX,
    ) -> None:
        if memtable_writes_max < 0 or memtable_bytes_max < 0:
            raise ValueError(
                "memtable_writes_max and memtable_bytes_max must be at least 0, got "
                f"{memtable_writes_max} and {memtable_bytes_max}"
            )
        if checkpoint_bytes <= 0:
            raise ValueError(f"checkpoint_bytes must be positive, got {checkpoint_bytes}")
        if checkpoint_groups <= 0:
            raise ValueError(f"checkpoint_groups must be positive, got {checkpoint_groups}")
        self.engine = LmdbStorage(
            path,
            map_size_bytes=map_size_bytes,
            max_partitions=max_partitions,
            pinned_checkpoints=True,
        )
        # Enough spares for the segments of a checkpoint's worth of log, so that in steady
        # state recycling provides them all and none has to be made.
        max_spares = checkpoint_bytes // log_segment_bytes + 1 if log_segment_bytes else 1
        self.log = WriteAheadLog(
            os.path.join(path, LOG_DIRECTORY), log_segment_bytes, max(1, min(max_spares, 64))
        )
        self.checkpoint_bytes = checkpoint_bytes
        self.checkpoint_groups = checkpoint_groups
        self.checkpoint_count = 0
        self.checkpoint_seconds = 0.0
        self.replayed_record_count = 0
        self._checkpointer = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="quorumdb-checkpoint"
        )
        # A running checkpoint, its snapshot, and the first sequence of the segment it
        # makes the oldest.
        self._checkpoint: concurrent.futures.Future[float] | None = None
        self._checkpoint_snapshot: PendingCheckpoint | None = None
        self._checkpoint_keeps_from = 0
        self._sync_lock = threading.Lock()
        # Held while a group is applied and logged, and while a segment begins: a segment
        # named N must start with record N, whichever thread syncs (GroupCommit can sync
        # in a worker thread: `sync_in_thread`).
        self._append_lock = threading.Lock()
        self._closed = False
        # Writes logged but not yet in LMDB, (keyspace, partition, key) -> record or None
        # (a delete): read before LMDB, written to it by `_flush_memtable_locked`. Only
        # the thread that applies (the event loop) touches it.
        self._memtable: dict[tuple[str, int, bytes], bytes | None] = {}
        self._memtable_bytes = 0
        self.memtable_writes_max = memtable_writes_max
        self.memtable_bytes_max = memtable_bytes_max
        self.memtable_flush_count = 0
        self._failure: BaseException | None = None  # a checkpoint's failed fsync
        self._engine_bytes = 0  # LMDB's data file in use, as of the last commit
        self._log_bytes_at_checkpoint = 0
        self._engine_bytes_at_checkpoint = 0
        try:
            self._next_sequence = self._recover()
        except BaseException:
            self.engine.close()
            self._checkpointer.shutdown()
            raise

    # --- StorageReader: LMDB holds every applied write ---------------------------------

    def get(self, keyspace: str, partition: int, key: bytes) -> bytes | None:
        memtable = self._memtable
        if memtable:
            record = memtable.get((keyspace, partition, key), _ABSENT)
            if record is not _ABSENT:
                return record
        return self.engine.get(keyspace, partition, key)

    def scan(
        self, keyspace: str, partition: int, start: bytes, end: bytes | None, limit: int
    ) -> list[tuple[bytes, bytes]]:
        self.flush_memtable()
        return self.engine.scan(keyspace, partition, start, end, limit)

    def count(self, keyspace: str, partition: int) -> int:
        self.flush_memtable()
        return self.engine.count(keyspace, partition)

    def partitions(self) -> list[tuple[str, int]]:
        self.flush_memtable()
        return self.engine.partitions()

    @property
    def memtable_write_count(self) -> int:
        return len(self._memtable)

    @property
    def memtable_bytes(self) -> int:
        return self._memtable_bytes

    def size_bytes(self) -> int:
        return self.engine.size_bytes()

    def log_size_bytes(self) -> int:
        return self.log.size_bytes()

    def log_spare_bytes(self) -> int:
        return self.log.spares.size_bytes() if self.log.spares is not None else 0

    @property
    def log_bytes_since_checkpoint(self) -> int:
        """Log written since the newest checkpoint began: what a crash would replay."""
        return self.log.total_bytes_synced - self._log_bytes_at_checkpoint

    # --- writes --------------------------------------------------------------------------

    def apply(self, writes: Sequence[Write]) -> None:
        """Queue the group's log record and add it to the memtable; raises, having logged
        nothing of the group, if it cannot be stored.

        Checkpoints begin and end here, on the applying thread, never in `sync()` (which
        may run on another): beginning one needs the memtable, which only this thread
        touches, written to LMDB first."""
        if not writes:
            return
        with self._append_lock:
            if self._failure is not None:
                raise StorageError(f"storage failed earlier: {self._failure}")
            if self._checkpoint is not None:
                self._finish_checkpoint(wait=False)
            memtable = self._memtable
            checkpoint_due = self._checkpoint is None and self._checkpoint_is_due()
            if memtable and (
                checkpoint_due
                or len(memtable) >= self.memtable_writes_max
                or self._memtable_bytes >= self.memtable_bytes_max
            ):
                self._flush_memtable_locked()  # raises: the group is not logged
            if checkpoint_due:
                self._start_checkpoint_locked()
            sequence = self._next_sequence
            holds_partition = self.engine.holds_partition
            for write in writes:
                check_key(write.key)
                if not holds_partition(write.keyspace, write.partition):
                    # A new partition is created in LMDB at once, so that a failure to
                    # create it (too many partitions) fails this group, not a later flush.
                    self._flush_memtable_locked()
                    self.engine.apply(writes, log_sequence=sequence)
                    self._engine_bytes = self.engine.size_bytes()
                    break
            else:
                added_bytes = 0
                for write in writes:
                    location = write[:3]  # (keyspace, partition, key)
                    value = write.value
                    replaced = memtable.pop(location, _ABSENT)
                    if replaced is not _ABSENT:  # a key rewritten holds one record, not two
                        added_bytes -= len(write.key)
                        if replaced is not None:
                            added_bytes -= len(replaced)
                    memtable[location] = value
                    added_bytes += len(write.key) + (len(value) if value is not None else 0)
                self._memtable_bytes += added_bytes
            self.log.append(sequence, writes)
            self._next_sequence = sequence + 1

    def _checkpoint_is_due(self) -> bool:
        return (
            self._next_sequence - self._checkpoint_keeps_from >= self.checkpoint_groups
            or self.log_bytes_since_checkpoint >= self.checkpoint_bytes
            or self._engine_bytes - self._engine_bytes_at_checkpoint >= self.checkpoint_bytes
        )

    def checkpoint_now(self) -> None:
        """Write the memtable to LMDB and take a checkpoint, waiting for it to be saved.

        Refused after a checkpoint's failed fsync: a new one would delete log segments
        that the next open needs to replay."""
        with self._append_lock:
            if self._failure is not None:
                raise StorageError(f"storage failed earlier: {self._failure}")
            self._finish_checkpoint(wait=True)
            self._flush_memtable_locked()
            self._start_checkpoint_locked()
            self._finish_checkpoint(wait=True)

    def flush_memtable(self) -> None:
        """Write the memtable to LMDB (unsynced: the log holds it durably already)."""
        if self._memtable:
            with self._append_lock:
                self._flush_memtable_locked()

    def _flush_memtable_locked(self) -> None:
        memtable = self._memtable
        if not memtable:
            return
        writes = [
            Write(location[0], location[1], location[2], record)
            for location, record in memtable.items()
        ]
        # Every record up to the newest appended is in LMDB once this commits; if it
        # raises, the memtable stays and reads stay right (the log has it all).
        self.engine.apply(writes, log_sequence=self._next_sequence - 1)
        memtable.clear()  # in place: `apply` holds it
        self._memtable_bytes = 0
        self.memtable_flush_count += 1
        self._engine_bytes = self.engine.size_bytes()

    def sync(self) -> None:
        """Make every applied group durable: write and fdatasync the log."""
        with self._sync_lock:
            if self._closed:
                raise StorageError("sync() on a closed LoggedStorage")
            if self._failure is not None:
                raise StorageError(f"storage failed earlier: {self._failure}")
            self.log.sync()

    def close(self) -> None:
        """Sync, checkpoint and close; idempotent. The next open has nothing to replay."""
        with self._sync_lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._finish_checkpoint(wait=True)
                if self._failure is not None:
                    # LMDB's pages on disk are unknown: keep every log segment, so that
                    # the next open returns to the last good checkpoint and replays them.
                    self.log.close()
                    return
                self.flush_memtable()
                self.log.sync()
                self.engine.checkpoint_now()
                self.log.close()
                self.log.delete_segments_before(self._next_sequence)
            finally:
                self._checkpointer.shutdown()
                self.engine.close()

    # --- checkpoints ---------------------------------------------------------------------

    def _start_checkpoint_locked(self) -> None:
        """Begin a new segment, then flush LMDB in the background: once that is done, the
        older segments hold nothing LMDB does not (the memtable, the only place a logged
        record can be missing from LMDB, is empty here)."""
        assert not self._memtable
        first_sequence = self._next_sequence
        self.log.start_segment(first_sequence)
        self._log_bytes_at_checkpoint = self.log.total_bytes_synced
        self._engine_bytes = self._engine_bytes_at_checkpoint = self.engine.size_bytes()
        self._checkpoint_snapshot = self.engine.begin_checkpoint()
        self._checkpoint_keeps_from = first_sequence
        self._checkpoint = self._checkpointer.submit(self._timed_engine_sync)

    def _timed_engine_sync(self) -> float:
        started = time.perf_counter()
        self.engine.sync_in_steps()
        return time.perf_counter() - started

    def _finish_checkpoint(self, wait: bool) -> None:
        checkpoint = self._checkpoint
        if checkpoint is None or not (wait or checkpoint.done()):
            return
        self._checkpoint = None
        try:
            self.checkpoint_seconds += checkpoint.result()  # raises what the fsync raised
        except BaseException as error:
            # After a failed fsync LMDB's pages on disk are unknown ("fsyncgate"): no later
            # checkpoint may be trusted to cover them, so nothing more is stored or synced.
            self._failure = error
            raise
        if self._checkpoint_snapshot is not None:
            self.engine.complete_checkpoint(self._checkpoint_snapshot)
            self._checkpoint_snapshot = None
        self.checkpoint_count += 1
        self.log.delete_segments_before(self._checkpoint_keeps_from)

    def _recover(self) -> int:
        """Replay the log after LMDB's newest record, checkpoint, start a fresh segment;
        returns the next record's sequence."""
        # Pin what is there first: the replay's commits must not reuse the pages of the
        # checkpoint a crash during the replay would return to.
        self.engine.checkpoint_now()
        applied = self.engine.log_sequence()
        newest = applied
        batch: list[Write] = []
        for sequence, writes in read_records(self.log.directory):
            if sequence <= applied:
                continue
            newest = sequence
            if not batch and sequence != applied + 1:
                raise WriteAheadLogError(
                    f"write-ahead log resumes at record {sequence} but the data file holds "
                    f"records only up to {applied}: records in between are lost"
                )
            batch.extend(writes)
            self.replayed_record_count += 1
            if len(batch) >= REPLAY_BATCH_WRITES:
                self.engine.apply(batch, log_sequence=sequence)
                batch = []
                applied = sequence
        if batch:
            self.engine.apply(batch, log_sequence=newest)
        self.engine.checkpoint_now()
        self._engine_bytes = self._engine_bytes_at_checkpoint = self.engine.size_bytes()
        next_sequence = newest + 1
        self._checkpoint_keeps_from = next_sequence
        self.log.start_segment(next_sequence)
        self.log.delete_segments_before(next_sequence)
        return next_sequence
