"""Group commit: one transaction and one fsync for every write ready in an event-loop turn.

Writes are first held in an overlay that reads consult, so a request later in the
same turn sees an earlier one's write. At the end of the turn the overlay becomes
one storage transaction and one fsync (optionally in a worker thread, while the loop
keeps serving and collecting the next group).

Before that fsync, a group may wait a few more turns, as long as each brings more
writes (`collect_turns`, like PostgreSQL's commit_delay but counted in turns, not
microseconds): requests that arrived while the loop was busy with this turn's callbacks
are read in the next turn, and joining this group spares them a group, an fsync and a
transaction of their own. With 50 unpipelined clients that made groups of 34 writes
into groups of 48 and the node about 14 % faster (BENCHMARKS.md). An idle node pays one
extra poll of the loop per group; a loaded one at most `collect_turns` turns of latency.

Every reply or message issued after a write waits until a sync covering that write has
finished (persist before send): nobody learns of a write that a crash could still take
back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from enum import Enum
from typing import Protocol

from quorumdb.runtime.read_cache import ReadCache
from quorumdb.runtime.reply_cache import ReplyCache
from quorumdb.storage.interface import Storage, Write

LOG = logging.getLogger(__name__)

DEFAULT_COLLECT_TURNS = 4


class DurabilityWatcher(Protocol):
    def on_durable(self) -> bool:
        """Called when more writes became durable; return False to stop watching."""
        ...

    def on_lost(self, first_lost_sequence: int) -> None:
        """Groups from `first_lost_sequence` on will never be durable: do not acknowledge
        anything waiting for them (their outcome is unknown to the client)."""
        ...


class FsyncPolicy(Enum):
    """Durability in Redis's terms."""

    ALWAYS = "always"  # fsync every group before acknowledging
    EVERYSEC = "everysec"  # acknowledge after the write; fsync once a second (may lose ~1 s)
    NO = "no"  # never fsync explicitly; the OS decides (may lose more on power loss)


class GroupCommit:
    """The runtime's storage front: an overlay for reads, batching, and release gating."""

    def __init__(
        self,
        storage: Storage,
        policy: FsyncPolicy,
        loop: asyncio.AbstractEventLoop,
        sync_in_thread: bool = False,
        cache_bytes: int = 64 * 1024 * 1024,
        reply_cache_bytes: int = 32 * 1024 * 1024,
        collect_turns: int = DEFAULT_COLLECT_TURNS,
    ) -> None:
        """`sync_in_thread` overlaps the fsync with serving the next group; on this project's
        machines (fsync ~0.2 ms) the hand-off costs more than it saves, so by default the
        fsync runs at the end of the turn, as Redis's `appendfsync always` does (see
        BENCHMARKS.md)."""
        self.storage = storage
        self.policy = policy
        self.loop = loop
        # (keyspace, partition, key) -> record, or None for a delete: the writes of the
        # group being collected (Write tuples are built once per group, at apply).
        self._overlay: dict[tuple[str, int, bytes], bytes | None] = {}
        self._flush_scheduled = False
        self._applied_sequence = 0  # groups handed to storage.apply
        self._durable_sequence = 0  # groups covered by a finished sync
        self._sync_running = False
        # (group sequence, release, lose): `release` once durable, `lose` if it never will be.
        self._waiting: deque[tuple[int, Callable[[], None], Callable[[], None] | None]] = deque()
        self._watchers: set[DurabilityWatcher] = set()
        self.group_count = 0
        self.sync_count = 0
        self.sync_seconds = 0.0  # time inside storage.sync, on the loop or in a thread
        self.write_count = 0
        self.lost_group_count = 0
        self.failed = False
        self.sync_in_thread = sync_in_thread
        self.cache = ReadCache(cache_bytes)
        # Encoded GET replies of hot keys (the RESP server fills it): every write added
        # here forgets its key first, so no reply older than a visible write is served.
        self.replies = ReplyCache(reply_cache_bytes)
        # True while some write is not yet durable, so releases must wait. A plain
        # attribute, refreshed by `_refresh_pending` wherever the overlay or the sequences
        # change: it is read once per fast reply, and a property cost ~65 ns each time.
        self.pending = False
        if collect_turns < 0:
            raise ValueError(f"collect_turns must be at least 0, got {collect_turns}")
        self.collect_turns = collect_turns
        self._collect_turns_left = collect_turns
        self._writes_seen = 0  # write_count when the group last looked for more

    # --- StorageReader, seen by the core ----------------------------------------------

    def get(self, keyspace: str, partition: int, key: bytes) -> bytes | None:
        location = (keyspace, partition, key)
        overlay = self._overlay
        if overlay and location in overlay:
            return overlay[location]
        cache = self.cache
        record = cache.get(location)
        if record is None:
            record = self.storage.get(keyspace, partition, key)
            if record is not None:
                cache.put(location, record)
        return record

    def scan(
        self, keyspace: str, partition: int, start: bytes, end: bytes | None, limit: int
    ) -> list[tuple[bytes, bytes]]:
        self._apply_overlay()
        return self.storage.scan(keyspace, partition, start, end, limit)

    def count(self, keyspace: str, partition: int) -> int:
        self._apply_overlay()
        return self.storage.count(keyspace, partition)

    # --- writes and gating -------------------------------------------------------------

    def add(self, writes: tuple[Write, ...]) -> None:
        self.replies.forget_writes(writes)
        overlay = self._overlay
        for write in writes:
            overlay[write[:3]] = write[3]  # (keyspace, partition, key): Write's first fields
        self.write_count += len(writes)
        self.pending = True
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._end_of_turn)

    def add_one(self, keyspace: str, partition: int, key: bytes, record: bytes) -> None:
        """`add` of a single put, for the SET fast path: no Write or tuple of them built."""
        replies = self.replies
        if replies.size_bytes:
            replies.forget(keyspace, key)
        self._overlay[(keyspace, partition, key)] = record
        self.write_count += 1
        self.pending = True
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._end_of_turn)

    def _refresh_pending(self) -> None:
        self.pending = bool(self._overlay) or self._durable_sequence < self._applied_sequence

    @property
    def durable_sequence(self) -> int:
        return self._durable_sequence

    def durable_target(self) -> int:
        """The group sequence that must be durable before anything added so far is."""
        return self._applied_sequence + (1 if self._overlay else 0)

    def watch(self, watcher: DurabilityWatcher) -> None:
        """Cheaper than a callback per reply: one call per watcher per durable group."""
        self._watchers.add(watcher)

    def release_after_pending(
        self, release: Callable[[], None], lose: Callable[[], None] | None = None
    ) -> None:
        """Run `release` once every write added so far is durable (now, if it already is),
        or `lose` if those writes failed to be stored."""
        if not self.pending:
            release()
            return
        target = self._applied_sequence + (1 if self._overlay else 0)
        self._waiting.append((target, release, lose))

    def _end_of_turn(self) -> None:
        if self.policy is FsyncPolicy.ALWAYS:
            if self._collect_turns_left and self.write_count != self._writes_seen:
                # This turn brought writes: give the next one a chance to join them.
                self._writes_seen = self.write_count
                self._collect_turns_left -= 1
                self.loop.call_soon(self._end_of_turn)
                return
            self._collect_turns_left = self.collect_turns
            self._writes_seen = self.write_count
        self._flush_scheduled = False
        self._apply_overlay()
        if self.policy is FsyncPolicy.ALWAYS:
            self._start_sync()
        else:
            self._durable_sequence = self._applied_sequence
            self._refresh_pending()
            self._release_durable()

    def _apply_overlay(self) -> None:
        if not self._overlay:
            return
        writes = [
            Write(location[0], location[1], location[2], record)
            for location, record in self._overlay.items()
        ]
        self._overlay = {}
        self.cache.forget(writes)  # first: whatever apply does, no stale record survives
        try:
            self.storage.apply(writes)
        except Exception:
            # Nothing of the group was stored (apply is atomic): whoever waits for it
            # must not hear "done". The group's number is reused by the next group.
            LOG.exception("a group of %d writes could not be stored", len(writes))
            self.replies.clear()  # it may hold replies read from the lost overlay
            self.lost_group_count += 1
            self._refresh_pending()
            self._lose_from(self._applied_sequence + 1)
            return
        self._applied_sequence += 1
        self.group_count += 1
        self._refresh_pending()

    def _start_sync(self) -> None:
        if self._sync_running or self._durable_sequence == self._applied_sequence:
            return
        self._sync_running = True
        covered = self._applied_sequence
        if not self.sync_in_thread:
            error: BaseException | None = None
            try:
                self._timed_sync()
            except Exception as raised:
                error = raised
            self._sync_finished(error, covered)
            return
        future = self.loop.run_in_executor(None, self._timed_sync)
        future.add_done_callback(lambda done: self._sync_finished(done.exception(), covered))

    def _timed_sync(self) -> None:
        started = time.perf_counter()
        try:
            self.storage.sync()
        finally:
            self.sync_seconds += time.perf_counter() - started

    def _sync_finished(self, error: BaseException | None, covered: int) -> None:
        self._sync_running = False
        if error is not None:
            # After a failed fsync the page cache state is unknown (the "fsyncgate"
            # lesson): refuse to acknowledge anything more rather than guess.
            LOG.critical("fsync failed, node stops acknowledging writes: %s", error)
            self.failed = True
            self._lose_from(self._durable_sequence + 1)
            return
        self.sync_count += 1
        self._durable_sequence = covered
        self._refresh_pending()
        self._release_durable()
        self._start_sync()

    def _lose_from(self, first_lost_sequence: int) -> None:
        kept: deque[tuple[int, Callable[[], None], Callable[[], None] | None]] = deque()
        for entry in self._waiting:
            if entry[0] < first_lost_sequence:
                kept.append(entry)
            elif entry[2] is not None:
                try:
                    entry[2]()
                except Exception:
                    LOG.exception("reporting a lost write failed")
        self._waiting = kept
        for watcher in list(self._watchers):
            try:
                watcher.on_lost(first_lost_sequence)
            except Exception:
                LOG.exception("reporting lost writes failed")

    def _release_durable(self) -> None:
        waiting = self._waiting
        while waiting and waiting[0][0] <= self._durable_sequence:
            _, release, _ = waiting.popleft()
            try:
                release()
            except Exception:  # one broken client must not stop the others' replies
                LOG.exception("releasing a reply failed")
        if self._watchers:
            for watcher in list(self._watchers):
                try:
                    still_waiting = watcher.on_durable()
                except Exception:
                    LOG.exception("releasing replies failed")
                    still_waiting = False
                if not still_waiting:
                    self._watchers.discard(watcher)

    def sync_now(self) -> None:
        """Blocking sync of everything added so far (at shutdown); releases its waiters."""
        self._apply_overlay()
        self.storage.sync()
        self.sync_count += 1
        self._durable_sequence = self._applied_sequence
        self._refresh_pending()
        self._release_durable()
