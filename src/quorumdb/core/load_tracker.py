"""Where the load lands: requests per partition and an estimate of the hottest keys.

The node reports one request in `sample_every` (a countdown on its fast paths costs a
few nanoseconds; a call per request would cost a tenth of the whole request), and
each report stands for `sample_every` requests. Keys go into a space-saving sketch
(Metwally et al.): at most
`hot_key_capacity` keys are monitored; a new key evicts the least counted one and
inherits its count as the error bound, so every key whose true sampled count exceeds
total/capacity is guaranteed to be present. Rates come from two fixed windows: the
last complete one plus the current part, so a key that went cold fades within two
windows instead of haunting the list forever.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_WINDOW_MS = 10_000
DEFAULT_HOT_KEY_CAPACITY = 64
DEFAULT_SAMPLE_EVERY = 8


@dataclass(frozen=True, slots=True)
class HotKey:
    keyspace: str
    key: bytes
    requests_per_second: float
    # The estimate may exceed the truth by at most this much (space-saving's bound).
    error_per_second: float


@dataclass(frozen=True, slots=True)
class PartitionLoad:
    keyspace: str
    partition: int
    requests_total: int
    requests_per_second: float


class _Sketch:
    """Space-saving counts for one window."""

    __slots__ = ("capacity", "counts", "errors")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.counts: dict[tuple[str, bytes], int] = {}
        self.errors: dict[tuple[str, bytes], int] = {}

    def add(self, item: tuple[str, bytes], weight: int = 1) -> None:
        """`weight` occurrences of `item` at once (weighted space-saving)."""
        counts = self.counts
        count = counts.get(item)
        if count is not None:
            counts[item] = count + weight
            return
        if len(counts) < self.capacity:
            counts[item] = weight
            self.errors[item] = 0
            return
        victim = min(counts, key=counts.__getitem__)
        floor = counts.pop(victim)
        del self.errors[victim]
        counts[item] = floor + weight
        self.errors[item] = floor


class LoadTracker:
    def __init__(
        self,
        window_ms: int = DEFAULT_WINDOW_MS,
        hot_key_capacity: int = DEFAULT_HOT_KEY_CAPACITY,
        sample_every: int = DEFAULT_SAMPLE_EVERY,
    ) -> None:
        if window_ms < 1 or hot_key_capacity < 1 or sample_every < 1:
            raise ValueError("window, capacity and sampling interval must be positive")
        self.window_ms = window_ms
        self.sample_every = sample_every
        self._capacity = hot_key_capacity
        # keyspace -> partition -> estimated count; totals never reset (Prometheus counters). Rates
        # are differences against the totals as they stood when the previous window began.
        self.partition_totals: dict[str, dict[int, int]] = {}
        self._window_start_ms: int | None = None
        self._totals_at_previous_start: dict[str, dict[int, int]] = {}
        self._totals_at_current_start: dict[str, dict[int, int]] = {}
        self._sketch = _Sketch(hot_key_capacity)
        self._previous_sketch = _Sketch(hot_key_capacity)
        self._previous_window_ms = 0

    def record_sample(self, keyspace: str, partition: int, key: bytes, samples: int = 1) -> None:
        """`samples` sampled requests to one key, each standing for `sample_every`."""
        totals = self.partition_totals.get(keyspace)
        if totals is None:
            totals = self.partition_totals[keyspace] = {}
        totals[partition] = totals.get(partition, 0) + self.sample_every * samples
        self._sketch.add((keyspace, key), samples)

    def on_tick(self, now_ms: int) -> None:
        """Roll the window when it is over (no request carries a clock, ticks do)."""
        if self._window_start_ms is None:
            self._window_start_ms = now_ms
            return
        elapsed_ms = now_ms - self._window_start_ms
        if elapsed_ms < self.window_ms:
            return
        self._previous_sketch, self._sketch = self._sketch, _Sketch(self._capacity)
        self._totals_at_previous_start = self._totals_at_current_start
        self._totals_at_current_start = {
            keyspace: dict(totals) for keyspace, totals in self.partition_totals.items()
        }
        self._previous_window_ms = elapsed_ms
        self._window_start_ms = now_ms

    def _span_seconds(self, now_ms: int) -> float:
        current_ms = 0 if self._window_start_ms is None else now_ms - self._window_start_ms
        return max(current_ms + self._previous_window_ms, 1) / 1000.0

    def hottest(self, now_ms: int, limit: int = 10) -> list[HotKey]:
        """The keys with the highest estimated request rates, highest first."""
        counts: dict[tuple[str, bytes], int] = dict(self._previous_sketch.counts)
        errors: dict[tuple[str, bytes], int] = dict(self._previous_sketch.errors)
        for item, count in self._sketch.counts.items():
            counts[item] = counts.get(item, 0) + count
            errors[item] = errors.get(item, 0) + self._sketch.errors[item]
        scale = self.sample_every / self._span_seconds(now_ms)
        ranked = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))[:limit]
        return [
            HotKey(keyspace, key, count * scale, errors[(keyspace, key)] * scale)
            for (keyspace, key), count in ranked
        ]

    def partitions(self, now_ms: int) -> list[PartitionLoad]:
        """Every partition that served a request since start, with its recent rate."""
        span_seconds = self._span_seconds(now_ms)
        loads: list[PartitionLoad] = []
        for keyspace, totals in sorted(self.partition_totals.items()):
            before = self._totals_at_previous_start.get(keyspace, {})
            for partition, total in sorted(totals.items()):
                recent = total - before.get(partition, 0)
                loads.append(PartitionLoad(keyspace, partition, total, recent / span_seconds))
        return loads
