"""Virtual time: a heap of callbacks keyed by (time in ms, sequence number), not asyncio.

A real event loop orders ready tasks by details that differ between runs; here two
events due at the same virtual instant always run in the order they were scheduled,
so a seed replays exactly. Every run is bounded by a step count.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

Callback = Callable[[], None]


class EventLimitExceeded(RuntimeError):
    """More events ran than allowed: a runaway schedule, never a normal outcome."""


class EventQueue:
    def __init__(self, max_steps: int) -> None:
        if max_steps < 1:
            raise ValueError("max_steps must be positive")
        self.now_ms = 0
        self.steps = 0
        self.max_steps = max_steps
        self._heap: list[tuple[int, int, Callback]] = []
        self._sequence = 0

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, at_ms: int, callback: Callback) -> None:
        """Run `callback` at virtual time `at_ms`, after everything already due then."""
        if at_ms < self.now_ms:
            raise ValueError(f"cannot schedule in the past: {at_ms} < {self.now_ms}")
        self._sequence += 1
        heapq.heappush(self._heap, (at_ms, self._sequence, callback))

    def schedule_in(self, delay_ms: int, callback: Callback) -> None:
        assert delay_ms >= 0
        self.schedule(self.now_ms + delay_ms, callback)

    def run_until(self, time_ms: int, stop: Callable[[], bool] | None = None) -> bool:
        """Run events due at or before `time_ms`; return True as soon as `stop()` holds.

        When it returns False the clock stands at `time_ms`; when True, at the event
        that made `stop()` hold.
        """
        while True:
            if stop is not None and stop():
                return True
            if not self._heap or self._heap[0][0] > time_ms:
                break
            at_ms, _, callback = heapq.heappop(self._heap)
            assert at_ms >= self.now_ms
            self.now_ms = at_ms
            self.steps += 1
            if self.steps > self.max_steps:
                raise EventLimitExceeded(f"more than {self.max_steps} events")
            callback()
        self.now_ms = max(self.now_ms, time_ms)
        return False
