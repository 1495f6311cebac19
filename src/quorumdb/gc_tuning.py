"""The cyclic garbage collector, tuned for a long-running hot loop (a node, the bench),
and its pauses counted for /metrics.

Such a process makes short-lived tuples by the hundred thousand a second. With the
default first threshold (700) a node ran ~50 young collections a second, and each
full one walked every long-lived object (~90k after start-up) for ~0.1 s: a stall that
every client then saw as p99 latency. A 50,000-allocation young generation, and the
start-up objects frozen out of the collector's walks, keep both rare. Reference
counting still frees nearly everything at once; only reference cycles wait longer.
`quorumdb node --gc default` keeps CPython's settings, for comparison (BENCHMARKS.md,
"Replicated writes against etcd").
"""

from __future__ import annotations

import gc
import time
from typing import Any

GC_THRESHOLDS = (50_000, 20, 100)
GENERATIONS = (0, 1, 2)


def tune_for_hot_loop() -> None:
    """Call once, after the imports and before the loop starts."""
    gc.collect()
    gc.freeze()  # what start-up built lives as long as the process: never walk it again
    gc.set_threshold(*GC_THRESHOLDS)


class GcPauses:
    """Collections and the seconds they stopped the process, by generation."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]
        self._started = 0.0

    def install(self) -> None:
        if self._on_collection not in gc.callbacks:
            gc.callbacks.append(self._on_collection)

    def _on_collection(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info["generation"]
        self.seconds[generation] += time.perf_counter() - self._started
        self.collections[generation] += 1


PAUSES = GcPauses()  # the collector is the process's: so is its account
