"""The cyclic garbage collector, tuned for a long-running hot loop (a node, the bench).

Such a process makes short-lived tuples by the hundred thousand a second. With the
default first threshold (700) a node ran ~80 young collections a second, and each
full one walked every long-lived object (~90k after start-up) for ~0.1 s: a stall
that every client then saw as p99 latency. A 50,000-allocation young generation, and
the start-up objects frozen out of the collector's walks, keep both rare. Reference
counting still frees nearly everything at once; only reference cycles wait longer.
Measured in BENCHMARKS.md (replicated writes): GC time per node in a 10 s run went
from 1.1 s to 0.3 s.
"""

from __future__ import annotations

import gc

GC_THRESHOLDS = (50_000, 20, 100)


def tune_for_hot_loop() -> None:
    """Call once, after the imports and before the loop starts."""
    gc.collect()
    gc.freeze()  # what start-up built lives as long as the process: never walk it again
    gc.set_threshold(*GC_THRESHOLDS)
