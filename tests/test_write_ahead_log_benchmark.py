"""The write-ahead log benchmark runs end to end on tiny settings and reports both sections."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_tiny_run_reports_sync_times_of_every_engine_and_a_full_replay(tmp_path: Path) -> None:
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "QUORUMDB_BENCH_DIR": str(tmp_path),
    }
    finished = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "write_ahead_log_benchmark.py"),
         "--groups", "20", "--warmup-groups", "20", "--settle-seconds", "0",
         "--processes", "2", "--replay-mb", "0.05",
         "--json"],
        capture_output=True, text=True, timeout=180, env=environment,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-3000:]
    document = json.loads(finished.stdout)
    rows = {(row["engine"], row["processes"], row["pass"]): row for row in document["sync"]}
    engines = ("lmdb", "logged", "logged-append")
    assert set(rows) == {
        (engine, processes, number)
        for engine in engines
        for processes in (1, 2)
        for number in (1, 2)
    }
    for row in rows.values():
        assert 0 < row["sync_ms_p50"] <= row["sync_ms_p99"] and row["groups_per_second"] > 0
    replay = document["replay"]
    assert replay["records"] > 0 and replay["writes"] == 45 * replay["records"]
    assert replay["log_mb"] >= 0.05 and replay["open_seconds"] > 0
    assert list(tmp_path.iterdir()) == []  # every temporary store removed
