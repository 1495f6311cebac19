"""The replication benchmark script runs end to end in a tiny configuration: quorumdb
`majority` only, etcd and PySyncObj skipped by flag (CI installs nothing with apt), and
says so in its notes instead of skipping silently."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))


def test_tiny_run_measures_quorumdb_majority_and_names_what_it_skipped() -> None:
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [
        sys.executable, str(ROOT / "scripts" / "replication_benchmark.py"),
        "--skip-etcd", "--skip-pysyncobj", "--no-install", "--modes", "majority",
        "--rounds", "1", "--duration", "2", "--warmup", "0.5", "--clients", "8",
        "--keys", "1000", "--json",
    ]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, timeout=180, env=environment)
    assert finished.returncode == 0, finished.stderr[-3000:]
    document = json.loads(finished.stdout)
    assert "etcd: skipped (--skip-etcd)" in document["notes"]
    assert "pysyncobj: skipped (--skip-pysyncobj)" in document["notes"]
    (row,) = document["summary"]
    assert row["target"] == "quorumdb-majority"
    assert row["throughput_ops_per_second"] > 0 and row["errors"] == 0
    assert row["ratio_to_etcd"] is None
    ((stalls, stalled_ms),) = row["loop_stalls_by_round"]  # read from the nodes' /metrics
    assert stalls >= 0 and stalled_ms >= 0 and (stalled_ms == 0) == (stalls == 0)
    (measurement,) = document["measurements"]
    assert measurement["count"] > 0 and measurement["p50_ms"] <= measurement["p99_ms"]
    assert document["machine"]["cpus"] >= 1


def test_a_missing_apt_package_is_named_not_installed() -> None:
    import replication_benchmark

    notes: list[str] = []
    missing = replication_benchmark.ensure_apt(
        ("quorumdb-no-such-package",), install=False, notes=notes
    )
    assert missing == ["quorumdb-no-such-package"]
    assert notes == ["apt: not installed (--no-install): quorumdb-no-such-package"]


def test_collapsed_stacks_are_summarized_by_own_and_total_time() -> None:
    import replication_benchmark

    text = "main;loop;sync 6\nmain;loop;parse 3\nmain;other 1\n"
    summary = replication_benchmark.summarize_collapsed_stacks(text)
    assert summary["samples"] == 10
    assert summary["own_percent"][0] == ("sync", 60.0)
    assert ("loop", 90.0) in summary["total_percent"]
    assert all(frame != "main" for frame, _ in summary["total_percent"])
