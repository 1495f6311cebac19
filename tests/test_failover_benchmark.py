"""The failover benchmark script runs end to end (one run) and reports what it measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_one_failover_run_is_measured() -> None:
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    finished = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "failover_benchmark.py"), "--runs", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        env=environment,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    document = json.loads(finished.stdout)
    (run,) = document["runs"]
    assert run["new_epoch"] > run["old_epoch"] and run["failover_ms"] > 0
    assert document["summary"]["runs"] == 1
