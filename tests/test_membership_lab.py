"""`quorumdb lab failure-detection --quick`: the table's shape and what it must show."""

from __future__ import annotations

import json
import subprocess
import sys

from quorumdb.lab.failure_detection import QUICK_PLAN, percentile


def lab(*arguments: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "quorumdb", "lab", "failure-detection", "--quick", *arguments],
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def test_the_quick_lab_reports_every_cell_as_json() -> None:
    document = json.loads(lab("--json", "--jobs", "1", "--seed", "3"))
    rows = document["detection"]
    cells = {(row["nodes"], row["loss"], row["required_sources"]) for row in rows}
    expected = {
        (size.node_count, loss, sources)
        for size in QUICK_PLAN.sizes
        for loss in QUICK_PLAN.loss_probabilities
        for sources in QUICK_PLAN.required_sources
    }
    assert cells == expected
    for row in rows:
        assert row["undetected_by_all"] == 0, row
        assert 0 < row["first_median_ms"] <= row["first_p99_ms"], row
        assert row["first_median_ms"] <= row["all_median_ms"] <= row["all_p99_ms"], row
        assert row["crash_free_member_hours"] > 0
        if row["loss"] == 0.0:
            assert row["false_downs"] == 0, row
    lossy = {row["required_sources"]: row for row in document["lossy_link"]}
    assert lossy[2]["healthy_declared_down"] == 0
    assert lossy[1]["healthy_declared_down"] > 0
    assert document["seed"] == 3 and document["quick"] is True


def test_the_quick_lab_prints_an_aligned_table_with_the_command_that_reproduces_it() -> None:
    text = lab("--jobs", "1")
    assert "reproduce: quorumdb lab failure-detection --seed 1 --quick" in text
    lines = text.splitlines()
    header = next(line for line in lines if line.lstrip().startswith("nodes  loss"))
    start = lines.index(header) + 2
    rows = lines[start : start + 12]
    assert all(len(row.split()) == len(rows[0].split()) for row in rows)
    assert {row.split()[0] for row in rows} == {"10", "30"}
    assert "wall time" in lines[-1]


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([5], 0.99) == 5
    assert percentile([4, 1, 3, 2], 0.5) == 2
    assert percentile(list(range(1, 101)), 0.99) == 99
    assert percentile(list(range(1, 11)), 0.99) == 10


def test_the_numbers_depend_on_the_seed_only_not_on_the_worker_count() -> None:
    def numbers(*arguments: str) -> dict[str, object]:
        document = json.loads(lab("--json", *arguments))
        del document["wall_seconds"]
        return document

    assert numbers("--jobs", "1") == numbers("--jobs", "2")
