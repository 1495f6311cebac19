"""What making a group durable costs: syncing LMDB's pages against appending a log record.

    PYTHONPATH=src python scripts/write_ahead_log_benchmark.py [--groups 2000]
        [--warmup-groups 6000] [--passes 2] [--writes-per-group 45] [--processes 3]
        [--replay-mb 32] [--json]

Sections (both use the real storage classes, in temporary directories on the data disk):
  sync     each of 1 and then `--processes` processes at once (as the nodes of a local
           cluster share one disk) applies `--groups` groups of `--writes-per-group` random
           100-byte writes over 33,000 keys and syncs each, after `--warmup-groups`
           untimed ones (past the first checkpoint): `LmdbStorage` (sync = flush
           LMDB's dirty pages), `LoggedStorage` (sync = fdatasync of the log record, into
           preallocated space) and the same log growing its file with each record,
           alternating. Reports the mean, p50 and p99 of the sync call and groups/s.
  replay   a log of `--replay-mb` MB written after a checkpoint, then opened from a copy
           of the data file at that checkpoint: the time start-up spends replaying it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_facts import machine  # noqa: E402

from quorumdb.storage import lmdb_checkpoint  # noqa: E402
from quorumdb.storage.interface import Write  # noqa: E402
from quorumdb.storage.lmdb_engine import LmdbStorage  # noqa: E402
from quorumdb.storage.logged_storage import LOG_DIRECTORY, LoggedStorage  # noqa: E402

KEY_COUNT = 33_000
VALUE_BYTES = 100
ENGINES = ("lmdb", "logged", "logged-append")
"""`logged` writes into preallocated spare segments (the default); `logged-append`
grows its segment with every record, as the log did before spares."""
DATA_DIRECTORY = os.environ.get("QUORUMDB_BENCH_DIR") or tempfile.gettempdir()
"""Where the temporary stores go: put it on the disk the nodes' data would use."""


def keys() -> list[bytes]:
    return [b"key:%08d" % index for index in range(KEY_COUNT)]


def open_engine(engine: str, path: str) -> LmdbStorage | LoggedStorage:
    if engine == "lmdb":
        return LmdbStorage(path)
    if engine == "logged-append":
        return LoggedStorage(path, log_segment_bytes=0)
    return LoggedStorage(path)


def sync_run(
    engine: str, groups: int, writes_per_group: int, seed: int, warmup_groups: int
) -> tuple[list[float], float]:
    """Seconds of each group's sync and of the timed groups in all, after filling the key
    space once and `warmup_groups` untimed groups (enough log for a checkpoint: the log's
    spares are then recycled segments, as on a node that has run a while, instead of
    zero-filled ones)."""
    generator = random.Random(seed)
    all_keys = keys()
    value = bytes(generator.getrandbits(8) for _ in range(VALUE_BYTES))
    directory = tempfile.mkdtemp(prefix="quorumdb-wal-bench-", dir=DATA_DIRECTORY)
    try:
        storage = open_engine(engine, directory)
        storage.apply([Write("bench", 0, key, value) for key in all_keys])
        storage.sync()
        timings = []
        timed_from = time.perf_counter()
        for index in range(warmup_groups + groups):
            if index == warmup_groups:
                timed_from = time.perf_counter()
            chosen = generator.sample(all_keys, writes_per_group)
            storage.apply([Write("bench", 0, key, value) for key in chosen])
            started = time.perf_counter()
            storage.sync()
            if index >= warmup_groups:
                timings.append(time.perf_counter() - started)
        timed_seconds = time.perf_counter() - timed_from
        storage.close()
        return timings, timed_seconds
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _worker(arguments: tuple[str, int, int, int, int]) -> tuple[list[float], float]:
    return sync_run(*arguments)


def sync_section(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for processes in sorted({1, args.processes}):
        # Whichever engine runs right after another pays for the disk work its stores
        # left (deleting LMDB's 1 GB file, discards): each pass runs them in the other
        # order, so every engine is measured once early and once late.
        orders = [ENGINES if index % 2 == 0 else ENGINES[::-1] for index in range(args.passes)]
        for number, engine in ((n, e) for n, order in enumerate(orders, 1) for e in order):
            work = [
                (engine, args.groups, args.writes_per_group, seed, args.warmup_groups)
                for seed in range(processes)
            ]
            with multiprocessing.Pool(processes) as pool:
                results = pool.map(_worker, work)
            os.sync()
            time.sleep(args.settle_seconds)
            timings = sorted(timing for result, _ in results for timing in result)
            groups_per_second = sum(len(result) / seconds for result, seconds in results)
            rows.append(
                {
                    "engine": engine,
                    "processes": processes,
                    "pass": number,
                    "sync_ms_mean": round(1000 * statistics.mean(timings), 3),
                    "sync_ms_p50": round(1000 * timings[len(timings) // 2], 3),
                    "sync_ms_p99": round(1000 * timings[int(len(timings) * 0.99)], 3),
                    "groups_per_second": round(groups_per_second),
                }
            )
            print(f"sync: {rows[-1]}", file=sys.stderr)
    return rows


def replay_section(args: argparse.Namespace) -> dict[str, Any]:
    generator = random.Random(7)
    all_keys = keys()
    value = bytes(generator.getrandbits(8) for _ in range(VALUE_BYTES))
    directory = Path(tempfile.mkdtemp(prefix="quorumdb-wal-replay-", dir=DATA_DIRECTORY))
    try:
        live = directory / "live"
        storage = LoggedStorage(str(live), checkpoint_bytes=1 << 40)
        storage.apply([Write("bench", 0, key, value) for key in all_keys])
        storage.sync()
        storage.checkpoint_now()  # the log after this point is what a crash replays
        checkpoint = directory / "checkpoint.mdb"
        shutil.copyfile(live / "data.mdb", checkpoint)
        shutil.copyfile(live / lmdb_checkpoint.FILE_NAME, directory / "checkpoint.meta")
        records = writes = 0
        while storage.log_bytes_since_checkpoint < args.replay_mb * 1024 * 1024:
            group = [
                Write("bench", 0, key, value)
                for key in generator.sample(all_keys, args.writes_per_group)
            ]
            storage.apply(group)
            storage.sync()
            records += 1
            writes += len(group)
        log_bytes = storage.log_bytes_since_checkpoint
        crashed = directory / "crashed"
        crashed.mkdir()
        shutil.copyfile(checkpoint, crashed / "data.mdb")
        shutil.copyfile(directory / "checkpoint.meta", crashed / lmdb_checkpoint.FILE_NAME)
        shutil.copytree(live / LOG_DIRECTORY, crashed / LOG_DIRECTORY)
        storage.close()
        started = time.perf_counter()
        recovered = LoggedStorage(str(crashed))
        seconds = time.perf_counter() - started
        replayed = recovered.replayed_record_count
        recovered.close()
        if replayed != records:
            raise RuntimeError(f"replayed {replayed} records, wrote {records}")
        return {
            "log_mb": round(log_bytes / 1024 / 1024, 1),
            "records": records,
            "writes": writes,
            "open_seconds": round(seconds, 2),
            "mb_per_second": round(log_bytes / 1024 / 1024 / seconds, 1),
        }
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=2000)
    parser.add_argument(
        "--passes", type=int, default=2, help="runs of every engine, alternating their order"
    )
    parser.add_argument(
        "--settle-seconds", type=float, default=2.0, help="pause after each run (disk settles)"
    )
    parser.add_argument(
        "--warmup-groups",
        type=int,
        default=6000,
        help="untimed groups first (6000 x 45 writes is past the first 32 MB checkpoint)",
    )
    parser.add_argument("--writes-per-group", type=int, default=45)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--replay-mb", type=float, default=32.0)
    parser.add_argument("--sections", default="sync,replay")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sections = set(args.sections.split(","))
    document: dict[str, Any] = {
        "machine": machine(Path(__file__).resolve().parent.parent),
        "arguments": vars(args),
    }
    if "sync" in sections:
        document["sync"] = sync_section(args)
    if "replay" in sections:
        document["replay"] = replay_section(args)
    if args.json:
        print(json.dumps(document, indent=2))
        return 0
    print(f"machine: {document['machine']}")
    if "sync" in document:
        print("\n| engine | processes at once | pass | sync ms mean | p50 | p99 | groups/s (all) |")
        print("|---|---|---|---|---|---|---|")
        for row in document["sync"]:
            print(
                f"| {row['engine']} | {row['processes']} | {row['pass']} | {row['sync_ms_mean']} "
                f"| {row['sync_ms_p50']} | {row['sync_ms_p99']} | {row['groups_per_second']:,} |"
            )
    if "replay" in document:
        replay = document["replay"]
        print(
            f"\nreplay: {replay['log_mb']} MB of log ({replay['records']:,} records, "
            f"{replay['writes']:,} writes) replayed in {replay['open_seconds']} s "
            f"({replay['mb_per_second']} MB/s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
