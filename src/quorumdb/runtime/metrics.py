"""Request counters and latency histograms kept as plain integers on the hot path.

Recording must cost next to nothing per request, so nothing here locks or allocates;
the HTTP API turns these numbers into Prometheus text on scrape.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

# Upper bounds in seconds, Prometheus-style cumulative buckets are built on export.
LATENCY_BUCKETS_SECONDS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_BUCKET_BOUNDS_NS = tuple(int(bound * 1e9) for bound in LATENCY_BUCKETS_SECONDS)
READ_OPERATIONS = frozenset({"get", "mget", "exists", "strlen", "scan", "range", "count"})


@dataclass(slots=True)
class LatencyHistogram:
    bucket_counts: list[int] = field(default_factory=lambda: [0] * (len(_BUCKET_BOUNDS_NS) + 1))
    sum_ns: int = 0
    count: int = 0

    def record_ns(self, latency_ns: int, count: int = 1) -> None:
        self.bucket_counts[bisect.bisect_left(_BUCKET_BOUNDS_NS, latency_ns)] += count
        self.sum_ns += latency_ns * count
        self.count += count


@dataclass(slots=True)
class NodeMetrics:
    requests_by_operation: dict[str, int] = field(default_factory=dict)
    errors_by_operation: dict[str, int] = field(default_factory=dict)
    latency_by_operation: dict[str, LatencyHistogram] = field(default_factory=dict)
    active_clients: int = 0
    total_connections: int = 0
    rejected_connections: int = 0
    protocol_errors: int = 0

    def record(self, operation: str, latency_ns: int, failed: bool = False) -> None:
        histogram = self.latency_by_operation.get(operation)
        if histogram is None:
            histogram = self.latency_by_operation[operation] = LatencyHistogram()
            self.requests_by_operation[operation] = 0
            self.errors_by_operation[operation] = 0
        histogram.record_ns(latency_ns)
        self.requests_by_operation[operation] += 1
        if failed:
            self.errors_by_operation[operation] += 1

    def record_many(self, operation: str, latency_ns: int, count: int) -> None:
        """`count` requests of one operation that all finished `latency_ns` after arriving."""
        histogram = self.latency_by_operation.get(operation)
        if histogram is None:
            histogram = self.latency_by_operation[operation] = LatencyHistogram()
            self.requests_by_operation[operation] = 0
            self.errors_by_operation[operation] = 0
        histogram.record_ns(latency_ns, count)
        self.requests_by_operation[operation] += count

    def total_requests(self) -> int:
        return sum(self.requests_by_operation.values())

    def read_write_counts(self) -> tuple[int, int]:
        reads = sum(
            count for name, count in self.requests_by_operation.items() if name in READ_OPERATIONS
        )
        return reads, self.total_requests() - reads
