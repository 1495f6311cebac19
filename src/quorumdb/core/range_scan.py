"""Ordered range scans across partitions: the deciding part, without I/O (sans-IO).

A range scan returns the live keys in [start, end) in key order, one page of at most
`limit` keys at a time, with a resume position for the next page. Which partitions hold
those keys comes from the layout's `ScanRoute`:

- **in key order** (key-range layouts, or the single partition of a hash tag): the
  partitions are visited one after another, each paged from the scan position, so a
  page asks one partition at a time;
- **hash layouts**: any partition may hold any key of the range, so every partition is
  asked for its next keys and the sorted pages are merged. A buffered key is emitted
  only once it is certainly the next one: it must be smaller than the resume position
  of every partition that has more keys but nothing buffered (the next page of such a
  partition starts at that position, so it cannot hold a smaller key). A partition whose
  buffer runs dry while it has more is asked again, alone.

`RangeScan` never fetches anything: `requests()` says which pages it needs now (they may
be fetched concurrently), `receive()` gives one back, and once `done` `result()` is the
page. The resume position is the smallest key not yet delivered, not the last key sent:
a page whose keys all expired still moves the scan forward. Its token (`encode_token`)
is opaque to clients.
"""

from __future__ import annotations

import base64
import binascii
import heapq
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from quorumdb.core.partitioning import ScanRoute

ROUNDS_MAX = 32
"""Rounds of page requests in one range page before it returns what it has (at least
one key of progress is always made first, so a client paging on never loops)."""
BOUND_BYTES_MAX = 1024
"""Longest start or end bound accepted; keys are at most 511 bytes, a resume position
one byte longer."""

Item = tuple[bytes, bytes]


class RangeScanError(ValueError):
    """A range scan request that cannot be served as asked (bad bounds, limit or token)."""


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Fetch up to `limit` keys of `partition` from `start` (the scan's end still applies)."""

    partition: int
    start: bytes
    limit: int


@dataclass(frozen=True, slots=True)
class RangePage:
    """One page of a range scan: `items` in key order, and where the next page starts
    (None: the range is exhausted). `partition_requests` counts the pages fetched to
    build it, which is what the page cost."""

    items: tuple[Item, ...]
    resume: bytes | None
    partition_requests: int


def check_range(start: bytes, end: bytes | None, limit: int, limit_max: int) -> None:
    """Raise `RangeScanError` naming what is wrong with the request, if anything."""
    if not 1 <= limit <= limit_max:
        raise RangeScanError(f"limit must be between 1 and {limit_max}, got {limit}")
    for name, bound in (("start", start), ("end", end)):
        if bound is not None and len(bound) > BOUND_BYTES_MAX:
            raise RangeScanError(f"{name} is {len(bound)} bytes, limit {BOUND_BYTES_MAX}")
    if end is not None and end <= start:
        raise RangeScanError("end must be greater than start")


def page_start(
    start: bytes, end: bytes | None, limit: int, limit_max: int, token: str | None
) -> bytes | None:
    """Where a requested page starts: `start`, or the position in a continuation token
    from an earlier page of the same range; None when the range is already finished.
    Every surface validates a request here, so they refuse the same things alike."""
    check_range(start, end, limit, limit_max)
    if token is None:
        return start
    position = max(start, decode_token(token))
    if end is not None and position >= end:
        return None
    return position


def encode_token(resume: bytes) -> str:
    """The continuation token a client sends back: URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(resume).decode().rstrip("=")


def decode_token(token: str) -> bytes:
    """Inverse of `encode_token`; anything else raises `RangeScanError`."""
    padded = token + "=" * (-len(token) % 4)
    try:
        resume = base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise RangeScanError("malformed continuation token") from None
    if not resume or len(resume) > BOUND_BYTES_MAX:
        raise RangeScanError("malformed continuation token")
    return resume


def fan_out_page_limit(remaining: int, partition_count: int, page_limit_max: int) -> int:
    """Keys to ask each of `partition_count` hashed partitions for, `remaining` wanted.

    Hashing spreads keys evenly, so a partition holds about remaining / count of the
    next `remaining` keys; twice that plus one makes a second round rare (a partition
    must hold more than double its share of them) while reading about twice the keys
    a page returns, instead of count times as many."""
    assert remaining >= 1 and partition_count >= 1 and page_limit_max >= 1
    share = -(-2 * remaining // partition_count) + 1
    return max(1, min(remaining, share, page_limit_max))


class _Source:
    """One partition's stream: keys received but not yet emitted, and where its next
    page starts (None once the partition has nothing more in range)."""

    __slots__ = ("buffer", "partition", "pending", "resume")

    def __init__(self, partition: int, start: bytes) -> None:
        self.partition = partition
        self.buffer: deque[Item] = deque()
        self.resume: bytes | None = start
        self.pending = False

    @property
    def exhausted(self) -> bool:
        return not self.buffer and self.resume is None

    @property
    def starved(self) -> bool:
        """Nothing buffered but more to come: it bounds what may be emitted."""
        return not self.buffer and self.resume is not None

    def head(self) -> bytes | None:
        """The smallest key of this partition not yet emitted could be this low."""
        return self.buffer[0][0] if self.buffer else self.resume


class RangeScan:
    """One page of an ordered range scan over the partitions of `route`."""

    def __init__(
        self,
        route: ScanRoute,
        start: bytes,
        end: bytes | None,
        limit: int,
        page_limit_max: int,
        rounds_max: int = ROUNDS_MAX,
    ) -> None:
        check_range(start, end, limit, page_limit_max)
        assert rounds_max >= 1
        assert len(set(route.partition_ids)) == len(route.partition_ids)
        self.start = start
        self.end = end
        self.limit = limit
        self.in_key_order = route.in_key_order
        self.page_limit_max = page_limit_max
        self.rounds_max = rounds_max
        self.round_count = 0
        self.request_count = 0
        self._sources = [_Source(partition, start) for partition in route.partition_ids]
        self._by_partition = {source.partition: source for source in self._sources}
        self._current = 0  # in key order: the partition being walked
        self._pending_count = 0
        self._emitted: list[Item] = []

    # --- the driver's interface ----------------------------------------------------------

    def requests(self) -> list[PageRequest]:
        """The pages needed now; each is asked once until it is received."""
        if self.done:
            return []
        wanted = [source for source in self._starved_sources() if not source.pending]
        if not wanted:
            return []
        self.round_count += 1
        remaining = self.limit - len(self._emitted)
        if self.in_key_order:
            page_limit = min(remaining, self.page_limit_max)
        else:
            live = sum(1 for source in self._sources if not source.exhausted)
            page_limit = fan_out_page_limit(remaining, live, self.page_limit_max)
        requests: list[PageRequest] = []
        for source in wanted:
            assert source.resume is not None
            source.pending = True
            self._pending_count += 1
            requests.append(PageRequest(source.partition, source.resume, page_limit))
        self.request_count += len(requests)
        return requests

    def receive(self, partition: int, items: Sequence[Item], next_start: bytes | None) -> None:
        """One requested page: `items` in key order from the requested start, and where
        the partition goes on (None: nothing more)."""
        source = self._by_partition[partition]
        assert source.pending, f"partition {partition} was not asked"
        assert source.resume is not None
        source.pending = False
        self._pending_count -= 1
        previous = source.resume
        for key, value in items:
            assert key >= previous, "a partition page must be in key order from its start"
            if self.end is not None and key >= self.end:
                next_start = None  # a node that ignored `end`: nothing after counts
                break
            source.buffer.append((key, value))
            previous = key
        if next_start is not None and self.end is not None and next_start >= self.end:
            next_start = None
        assert next_start is None or next_start > source.resume, "a page must make progress"
        source.resume = next_start
        if not self._pending_count:  # once per round: a merge needs every page anyway
            self._emit()

    @property
    def done(self) -> bool:
        if len(self._emitted) >= self.limit:
            return True
        if self._pending_count:
            return False
        if all(source.exhausted for source in self._sources[self._current :]):
            return True
        # Out of rounds: stop, but only once the page moved past its start.
        resume = self._resume()
        return self.round_count >= self.rounds_max and resume is not None and resume > self.start

    def result(self) -> RangePage:
        assert self.done
        return RangePage(tuple(self._emitted), self._resume(), self.request_count)

    # --- emission ------------------------------------------------------------------------

    def _starved_sources(self) -> list[_Source]:
        if self.in_key_order:
            current = self._sources[self._current : self._current + 1]
            return [source for source in current if source.starved]
        return [source for source in self._sources if source.starved]

    def _emit(self) -> None:
        if self.in_key_order:
            self._emit_in_key_order()
        else:
            self._emit_merged()

    def _emit_in_key_order(self) -> None:
        """Partition i's keys all precede partition i+1's: drain each in turn."""
        while len(self._emitted) < self.limit and self._current < len(self._sources):
            source = self._sources[self._current]
            if source.buffer:
                self._append(source.buffer.popleft())
            elif source.resume is None:
                self._current += 1
            else:
                return  # starved: its next page is needed first

    def _emit_merged(self) -> None:
        """k-way merge of the buffers, up to the smallest resume of a starved source."""
        heads = [
            (source.buffer[0][0], index)
            for index, source in enumerate(self._sources)
            if source.buffer
        ]
        heapq.heapify(heads)
        bounds = [
            (source.resume, index)
            for index, source in enumerate(self._sources)
            if source.starved and source.resume is not None
        ]
        heapq.heapify(bounds)
        while heads and len(self._emitted) < self.limit:
            key, index = heads[0]
            if bounds and key >= bounds[0][0]:
                return  # a starved partition may still hold a smaller key
            source = self._sources[index]
            self._append(source.buffer.popleft())
            if source.buffer:
                heapq.heapreplace(heads, (source.buffer[0][0], index))
                continue
            heapq.heappop(heads)
            if source.resume is not None:
                heapq.heappush(bounds, (source.resume, index))

    def _append(self, item: Item) -> None:
        if self._emitted and item[0] <= self._emitted[-1][0]:
            assert item[0] == self._emitted[-1][0], "keys must be emitted in order"
            return  # the same key from two partitions (data being moved): once only
        self._emitted.append(item)

    def _resume(self) -> bytes | None:
        """The smallest key not yet delivered, or None when nothing is left in range."""
        if self.in_key_order:
            # Later ranges hold only larger keys: the first unfinished one decides.
            walked = self._sources[self._current :]
            heads = [source.head() for source in walked if not source.exhausted][:1]
        else:
            heads = [source.head() for source in self._sources if not source.exhausted]
        lowest = min((head for head in heads if head is not None), default=None)
        if lowest is None:
            return None
        # An unvisited range resumes at the scan start, below every key of its own;
        # the last key emitted is then the tighter bound.
        resume = lowest
        if self._emitted:
            resume = max(resume, self._emitted[-1][0] + b"\x00")
        if self.end is not None and resume >= self.end:
            return None
        return resume
