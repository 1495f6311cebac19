"""How late the event loop runs a timer: the node's stalls, as an operator sees them.

Why: everything a node does runs on one event loop, so anything that blocks it (an
fsync waiting behind other disk traffic, a long garbage collection, a slow callback)
delays every request, heartbeat and reply at once. A timer that should fire every
`interval_ms` and fires later than that by `stall_ms` or more marks a stall; the count,
the stalled time and the longest one are metrics (`quorumdb_event_loop_stalls_total`,
...), which is how the stalls behind checkpoints were found (BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import time

DEFAULT_INTERVAL_MS = 20
DEFAULT_STALL_MS = 30


class LoopMonitor:
    def __init__(
        self, interval_ms: int = DEFAULT_INTERVAL_MS, stall_ms: int = DEFAULT_STALL_MS
    ) -> None:
        if interval_ms <= 0 or stall_ms <= 0:
            raise ValueError("interval_ms and stall_ms must be positive")
        self.interval_ms = interval_ms
        self.stall_ms = stall_ms
        self.stall_count = 0
        self.stall_seconds = 0.0  # lateness summed over the stalls
        self.longest_stall_seconds = 0.0

    def record_lateness(self, late_seconds: float) -> None:
        if late_seconds * 1000 < self.stall_ms:
            return
        self.stall_count += 1
        self.stall_seconds += late_seconds
        self.longest_stall_seconds = max(self.longest_stall_seconds, late_seconds)

    async def run(self) -> None:
        """Until cancelled."""
        interval_seconds = self.interval_ms / 1000
        while True:
            started = time.perf_counter()
            await asyncio.sleep(interval_seconds)
            self.record_lateness(time.perf_counter() - started - interval_seconds)
