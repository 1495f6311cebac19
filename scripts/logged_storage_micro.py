"""Microseconds per group in LoggedStorage: apply, then sync, one-key groups.

    python scripts/logged_storage_micro.py [--groups 5000] [--rounds 3]

Runs the memtable as configured by default and with `memtable_writes_max=0` (every
group reaches LMDB, as before the memtable), alternating, in one run. With a checkpoint's
snapshot held, each LMDB commit takes fresh pages at the end of the file: the second
figure shows that cost per group; the sync column shows the log's fdatasync, which the
checkpoint's write-back of those pages slows down.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

from quorumdb.storage.interface import Write
from quorumdb.storage.logged_storage import DEFAULT_MEMTABLE_WRITES_MAX, LoggedStorage


def measure(groups: int, memtable_writes_max: int) -> tuple[float, float, float, int]:
    """(apply µs, sync µs, minor page faults per group, checkpoints)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as path:
        storage = LoggedStorage(path, memtable_writes_max=memtable_writes_max)
        try:
            storage.apply([Write("default", 5, b"first", b"\0x")])  # makes the partition
            apply_seconds = sync_seconds = 0.0
            faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for index in range(groups):
                writes = [Write("default", 5, b"key:__rand_int__", b"\0%d" % index)]
                started = time.perf_counter()
                storage.apply(writes)
                applied = time.perf_counter()
                storage.sync()
                apply_seconds += applied - started
                sync_seconds += time.perf_counter() - applied
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
            checkpoints = storage.checkpoint_count
        finally:
            storage.close()
    return apply_seconds / groups * 1e6, sync_seconds / groups * 1e6, faults / groups, checkpoints


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print("| memtable_writes_max | apply µs | sync µs | minor faults per group | checkpoints |")
    print("|---|---|---|---|---|")
    for _ in range(args.rounds):
        for writes_max in (DEFAULT_MEMTABLE_WRITES_MAX, 0):
            apply_us, sync_us, faults, checkpoints = measure(args.groups, writes_max)
            cells = (writes_max, f"{apply_us:.1f}", f"{sync_us:.1f}", f"{faults:.2f}", checkpoints)
            print("| " + " | ".join(str(cell) for cell in cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
