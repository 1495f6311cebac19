"""Spare segment files for the write-ahead log, already as large as a segment.

Why: an fdatasync after writing into blocks a file has already written flushes those
pages and the disk's cache; one after growing the file, or after writing into blocks
only reserved for it, must also commit the new size or the blocks' new state through
the filesystem's journal. On this machine the sync's p50 was 0.20 ms against 0.25-0.31
for a log growing its file (`scripts/write_ahead_log_benchmark.py`, BENCHMARKS.md). So
the log writes into spares, files of `segment_bytes` made ahead of need.

Most spares are recycled: segments a checkpoint made obsolete, renamed instead of
deleted (as PostgreSQL recycles its WAL segments), whose blocks are all written. A
recycled spare still holds old records; that is harmless, because reading a segment
stops at the first record whose sequence does not follow, and every old record's
sequence is lower than anything the log will write again.

Until a checkpoint has freed segments, a background thread makes spares. The first one
after the log opens is zero-filled and synced, as the node starts and nothing competes
with writing the zeros; the log moves into it as soon as it is ready (durable single-key
SETs: 46.5-52.4k ops/s against 37.7-49.7k, alternating runs, BENCHMARKS.md). Later ones
only reserve their blocks (`posix_fallocate`): no faster to write into than a growing
file, but no slower either, while zero-filling them under load slowed LMDB's commits
(in an ad hoc trial, 0.68-1.0 s of commits for 2,000 groups against 0.35 s).
Spares are named `NNNNNN.spare`, never `*.wal`, so reading the log never sees them; a
`.spare-tmp` left by a crash while preparing one is deleted at open.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading

LOG = logging.getLogger(__name__)

_ZERO_CHUNK = bytes(1 << 20)

SPARE_SUFFIX = ".spare"
TEMPORARY_SUFFIX = ".spare-tmp"


class SparePool:
    """Ready spares of one log directory; prepares at most one at a time, in the background."""

    def __init__(self, directory: str, segment_bytes: int, max_spares: int) -> None:
        if segment_bytes <= 0 or max_spares <= 0:
            raise ValueError("segment_bytes and max_spares must be positive")
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.max_spares = max_spares
        self.prepared_count = 0
        self.recycled_count = 0
        self._lock = threading.Lock()
        self._ready: list[str] = []
        self._next_number = 0
        self._preparing = False
        self._zero_fill_next = True  # the first spare since open: see the module's notes
        self._closed = False
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            stem = name.split(".", 1)[0]
            if name.endswith(TEMPORARY_SUFFIX):
                os.remove(path)  # a zero-fill the last run did not finish
            elif name.endswith(SPARE_SUFFIX) and stem.isdigit():
                self._ready.append(path)
                self._next_number = max(self._next_number, int(stem) + 1)

    def ready_count(self) -> int:
        with self._lock:
            return len(self._ready)

    def size_bytes(self) -> int:
        """Disk the ready spares take (for metrics)."""
        with self._lock:
            paths = list(self._ready)
        total = 0
        for path in paths:
            try:
                total += os.path.getsize(path)
            except OSError:  # taken meanwhile
                continue
        return total

    def take(self) -> str | None:
        """A ready spare's path, now the caller's to rename; None if none is ready."""
        with self._lock:
            return self._ready.pop() if self._ready else None

    def want_one(self) -> None:
        """Start preparing a spare in the background unless one is ready or under way."""
        with self._lock:
            if self._closed or self._ready or self._preparing:
                return
            self._preparing = True
            path = self._new_path_locked()
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="quorumdb-log-spare"
                )
            self._executor.submit(self._prepare, path, self._zero_fill_next)
            self._zero_fill_next = False

    def recycle(self, segment_path: str) -> bool:
        """Keep an obsolete segment as a spare (renamed) if the pool has room; the caller
        syncs the directory. False: the caller deletes it."""
        with self._lock:
            if self._closed or len(self._ready) + int(self._preparing) >= self.max_spares:
                return False
            if os.path.getsize(segment_path) < self.segment_bytes:
                return False  # a segment that grew past its spare is fine; a short one is not
            path = self._new_path_locked()
            os.rename(segment_path, path)
            self._ready.append(path)
            self.recycled_count += 1
            return True

    def close(self) -> None:
        """Wait for a spare under way; spares stay on disk for the next open."""
        with self._lock:
            self._closed = True
            executor = self._executor
        if executor is not None:
            executor.shutdown(wait=True)

    def _new_path_locked(self) -> str:
        number = self._next_number
        self._next_number += 1
        return os.path.join(self.directory, f"{number:06d}{SPARE_SUFFIX}")

    def _prepare(self, path: str, zero_fill: bool) -> None:
        temporary = path[: -len(SPARE_SUFFIX)] + TEMPORARY_SUFFIX
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                if zero_fill:
                    zeros = memoryview(_ZERO_CHUNK)
                    remaining = self.segment_bytes
                    while remaining > 0:
                        remaining -= os.write(descriptor, zeros[: min(remaining, len(zeros))])
                elif hasattr(os, "posix_fallocate"):
                    os.posix_fallocate(descriptor, 0, self.segment_bytes)
                else:
                    os.ftruncate(descriptor, self.segment_bytes)
                os.fdatasync(descriptor)
            finally:
                os.close(descriptor)
            os.rename(temporary, path)
        except OSError as error:
            # Not fatal: the log goes on growing its segment, only its syncs are slower.
            LOG.warning("could not prepare a write-ahead log spare %s: %s", path, error)
            with self._lock:
                self._preparing = False
            return
        with self._lock:
            self._preparing = False
            self._ready.append(path)
            self.prepared_count += 1
