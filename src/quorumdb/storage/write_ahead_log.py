"""The write-ahead log: each group of writes appended to a segment file, one fdatasync per group.

Why: making a group durable by syncing LMDB flushes every page the group dirtied,
scattered over the data file (1.6-2.2 ms per group under the replicated benchmark);
appending the group's writes to a log and syncing that is one sequential write (0.27
against 0.53 ms alone, 0.47 against 1.19 ms with three processes syncing at once:
`scripts/write_ahead_log_benchmark.py`, BENCHMARKS.md). LMDB's own pages are flushed
only at checkpoints (`storage/logged_storage.py`), after which the segments before the
checkpoint go.

On disk: segment files named by the sequence of their first record (`%020d.wal`). A
record is

    crc32 of the rest (4 bytes) | payload length (4) | sequence (8) | payload

all big-endian, the payload a msgpack array of [keyspace, partition, key, value or nil].
Sequences are consecutive across segments. Reading stops at the first record that is
incomplete, fails its checksum or breaks the sequence: the torn tail a crash during an
append leaves. A segment is only closed after a sync covering all of it, so such a tail
is only legitimate in the newest segment; anywhere else it means lost records, and
`read_records` raises instead of replaying around the hole.

Segments are written into spares (`storage/log_spares.py`): files already
`segment_bytes` (4 MiB) long, mostly segments a checkpoint made obsolete, so most syncs
grow nothing. When the records outgrow the segment, the next sync begins a new segment
from a spare, named after its first record (without a spare ready, the segment just
grows; a segment that is not in a spare moves into one as soon as one is ready). What
follows the last record in a segment is zeros or an old record, never one that
continues the sequence; so damage in a segment other than the newest shows as the next
segment not continuing its sequence.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from struct import Struct
from zlib import crc32

import msgpack

from quorumdb.storage.interface import StorageError, Write
from quorumdb.storage.log_spares import SparePool

_HEADER = Struct(">IIQ")  # crc32, payload length, sequence
_HEADER_BYTES = _HEADER.size
_SUFFIX = ".wal"
_packb = msgpack.Packer(use_bin_type=True).pack

DEFAULT_SEGMENT_BYTES = 4 << 20
DEFAULT_MAX_SPARES = 9


class WriteAheadLogError(StorageError):
    """The log on disk lost records it had promised (not just a torn tail)."""


def encode_record(sequence: int, writes: Sequence[Write]) -> bytes:
    payload = _packb(writes)  # Write is a tuple: packed as an array
    body = _HEADER.pack(0, len(payload), sequence)[4:] + payload
    return crc32(body).to_bytes(4, "big") + body


def segment_name(first_sequence: int) -> str:
    return f"{first_sequence:020d}{_SUFFIX}"


def segment_paths(directory: str) -> list[tuple[int, str]]:
    """(first sequence, path) of every segment, oldest first."""
    segments = []
    for name in os.listdir(directory):
        stem = name[: -len(_SUFFIX)]
        if name.endswith(_SUFFIX) and stem.isdigit():
            segments.append((int(stem), os.path.join(directory, name)))
    return sorted(segments)


def _records_in(data: bytes, expected_sequence: int | None) -> Iterator[tuple[int, int]]:
    """(sequence, end offset) of each intact record in `data`, stopping at the first bad one."""
    offset = 0
    while offset + _HEADER_BYTES <= len(data):
        checksum, length, sequence = _HEADER.unpack_from(data, offset)
        end = offset + _HEADER_BYTES + length
        if end > len(data) or crc32(memoryview(data)[offset + 4 : end]) != checksum:
            return
        if expected_sequence is not None and sequence != expected_sequence:
            return
        yield sequence, end
        expected_sequence = sequence + 1
        offset = end


def read_records(directory: str) -> Iterator[tuple[int, list[Write]]]:
    """Every intact record, oldest first; raises WriteAheadLogError on a hole between segments."""
    segments = segment_paths(directory)
    expected: int | None = None
    previous_end = ""  # where the previous segment's records stopped, for the error
    for first_sequence, path in segments:
        if expected is not None and first_sequence != expected:
            raise WriteAheadLogError(
                f"write-ahead log segment {path} starts at record {first_sequence}, but the "
                f"previous segment ends before record {expected}{previous_end}: records "
                "are missing (the previous segment is not the newest, so this is no torn tail)"
            )
        with open(path, "rb") as file:
            data = file.read()
        expected = first_sequence
        offset = 0
        for sequence, end in _records_in(data, first_sequence):
            payload = memoryview(data)[offset + _HEADER_BYTES : end]
            writes = [Write(*fields) for fields in msgpack.unpackb(payload, use_list=False)]
            yield sequence, writes
            expected = sequence + 1
            offset = end
        previous_end = f" (its records stop at byte {offset} of {len(data)}, {path})"


class WriteAheadLog:
    """Appends records to the newest segment; `sync` makes every appended record durable.

    `append` may run on one thread while `sync` runs on another (GroupCommit's
    `sync_in_thread`): the pending bytes are handed over under a lock, and
    syncs are serialized by their own lock. `segment_bytes=0` keeps no spares: each
    segment grows with every record, as before spares existed.
    """

    def __init__(
        self,
        directory: str,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        max_spares: int = DEFAULT_MAX_SPARES,
    ) -> None:
        if segment_bytes < 0:
            raise ValueError(f"segment_bytes must be at least 0, got {segment_bytes}")
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self.spares = SparePool(directory, segment_bytes, max_spares) if segment_bytes else None
        self._pending = bytearray()
        self._pending_first_sequence = 0
        self._pending_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._descriptor: int | None = None
        self.first_sequence = 0  # of the newest segment
        self.bytes_written = 0  # records in the newest segment: where the next one goes
        self._capacity = 0  # the newest segment's size when it began (a spare's, or 0)
        self.total_bytes_synced = 0

    def start_segment(self, first_sequence: int) -> None:
        """Close the current segment (after syncing what it holds) and begin a new one."""
        with self._sync_lock:
            self._sync_locked()
            self._open_segment_locked(first_sequence)

    def _open_segment_locked(self, first_sequence: int) -> None:
        self._close_descriptor()
        path = os.path.join(self.directory, segment_name(first_sequence))
        spare = self.spares.take() if self.spares is not None else None
        if spare is not None:
            # Replaces a file of that name, which can hold no record (else the caller
            # would be past `first_sequence`): at most the torn bytes of a crashed append.
            os.rename(spare, path)
            self._descriptor = os.open(path, os.O_WRONLY)
            self._capacity = os.fstat(self._descriptor).st_size
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
            self._descriptor = os.open(path, flags, 0o644)
            self._capacity = 0
        self._sync_directory()
        self.first_sequence = first_sequence
        self.bytes_written = 0

    def append(self, sequence: int, writes: Sequence[Write]) -> None:
        record = encode_record(sequence, writes)
        with self._pending_lock:
            if not self._pending:
                self._pending_first_sequence = sequence
            self._pending += record

    def sync(self) -> None:
        with self._sync_lock:
            self._sync_locked()

    def _sync_locked(self) -> None:
        with self._pending_lock:
            pending = self._pending
            if not pending:
                return
            first_sequence = self._pending_first_sequence
            self._pending = bytearray()
        try:
            end = self._place_locked(pending, first_sequence)
        except BaseException:
            # `pending` does not count as written (a partial write is overwritten by
            # the next try): keep it, or a later sync would leave a hole in the
            # sequence that no restart could get past.
            with self._pending_lock:
                self._pending[:0] = pending
                self._pending_first_sequence = first_sequence
            raise
        self.bytes_written = end
        assert self._descriptor is not None
        os.fdatasync(self._descriptor)
        self.total_bytes_synced += len(pending)

    def _place_locked(self, pending: bytearray, first_sequence: int) -> int:
        """Write `pending` into the newest segment, first moving to a spare if it is time;
        returns where the records now end."""
        end = self.bytes_written + len(pending)
        spares = self.spares
        if spares is not None:
            growing = self._capacity < spares.segment_bytes  # not in a spare: move soon
            if growing or end > spares.segment_bytes // 2:
                full = growing or end > self._capacity
                if full and self.bytes_written and spares.ready_count():
                    # Everything before `pending` is synced: the segment is complete.
                    self._open_segment_locked(first_sequence)
                    end = len(pending)
                spares.want_one()  # growing, or half full: have the next spare in time
        if self._descriptor is None:
            raise StorageError("write-ahead log has no open segment")
        _write_fully(self._descriptor, pending, self.bytes_written)
        return end

    def delete_segments_before(self, first_sequence: int) -> int:
        """Delete the segments older than the one starting at `first_sequence`; how many."""
        deleted = 0
        for start, path in segment_paths(self.directory):  # oldest first: no gap on a crash
            if start < first_sequence:
                if self.spares is None or not self.spares.recycle(path):
                    os.remove(path)
                deleted += 1
        if deleted:
            self._sync_directory()
        return deleted

    def size_bytes(self) -> int:
        total = 0
        for _, path in segment_paths(self.directory):
            try:
                total += os.path.getsize(path)
            except OSError:
                continue
        return total

    def close(self) -> None:
        """Sync and close; the segments stay for the next open to read."""
        with self._sync_lock:
            if self._descriptor is not None:
                self._sync_locked()
            self._close_descriptor()
        if self.spares is not None:
            self.spares.close()

    def _close_descriptor(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None

    def _sync_directory(self) -> None:
        """Make segment creations and deletions durable, not just their contents."""
        descriptor = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _write_fully(descriptor: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(descriptor, view, offset)
        view = view[written:]
        offset += written
