"""What a benchmark records about the machine it ran on, the same way in every script."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from pathlib import Path


def machine(code_dir: Path) -> dict[str, object]:
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "code": str(code_dir),
    }
