"""scripts/rebalance_benchmark.py in a tiny mode (2,000 keys, 2 s benches, one round,
real node processes), so the script cannot rot unnoticed: the JSON has the documented
shape, the rebalance ran to the end, and the table prints from it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import quorumdb

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "rebalance_benchmark.py"
PHASES = ("idle_before", "during", "idle_after")


def load_script() -> ModuleType:
    specification = importlib.util.spec_from_file_location("rebalance_benchmark", SCRIPT)
    assert specification is not None and specification.loader is not None
    module = importlib.util.module_from_spec(specification)
    sys.modules[specification.name] = module  # dataclasses look their module up there
    specification.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report() -> dict[str, object]:
    code_dir = str(Path(quorumdb.__file__).resolve().parent.parent)
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [code_dir, os.environ.get("PYTHONPATH")])
    )
    completed = subprocess.run(
        [
            sys.executable, str(SCRIPT), "--keys", "2000", "--value-size", "100",
            "--seconds", "2", "--rounds", "1", "--routing", "smart", "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env=environment,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-4000:]
    return dict(json.loads(completed.stdout))


def test_round_numbers(report: dict[str, object]) -> None:
    rounds = report["rounds"]
    assert isinstance(rounds, list) and len(rounds) == 1
    result = rounds[0]
    assert result["routing"] == "smart" and result["preload_seconds"] > 0
    for phase in PHASES:
        numbers = result[phase]
        assert numbers["ops_per_second"] > 0 and numbers["requests"] > 0
        assert 0 < numbers["p50_ms"] <= numbers["p99_ms"] <= numbers["max_ms"]
        assert numbers["read_misses"] == 0  # preloaded: every read finds its key
    assert result["throughput_ratio"] > 0 and result["p99_ratio"] > 0
    assert result["owners_after"] == {"node0": 16, "node1": 16, "node2": 16, "node3": 16}


def test_rebalance_numbers(report: dict[str, object]) -> None:
    rounds = report["rounds"]
    assert isinstance(rounds, list)
    rebalance = rounds[0]["during"]["rebalance"]
    assert rebalance["transfers"] == 16 and rebalance["targets"] == ["node3"]
    assert rebalance["copied_bytes"] > 2000 * 100 // 8  # about a quarter of the data
    assert rebalance["seconds"] > 0
    assert rebalance["approved_at"] < rebalance["done_at"]
    assert isinstance(rebalance["covered_window"], bool)
    assert 0 <= rebalance["covered_fraction"] <= 1
    assert [state for _, state in rebalance["plan_states"]][-1] == "done"
    assert all(len(point) == 2 for point in rebalance["node_counted_series"])
    assert rebalance["controller_terms_passed"] >= 0
    assert isinstance(rebalance["approve_refusals"], list)
    assert "overlap_node_counted_ops_per_second" in rebalance


def test_settings_summary_and_machine(report: dict[str, object]) -> None:
    settings, machine, summary = report["settings"], report["machine"], report["summary"]
    assert isinstance(settings, dict) and isinstance(machine, dict)
    assert isinstance(summary, dict)
    assert settings["keys"] == 2000 and settings["seconds"] == 2
    assert settings["throttle_bytes_per_second"] == 8 * 1024 * 1024
    assert set(summary["by_routing"]) == {"smart"} and summary["target_ratio"] == 0.7
    assert isinstance(summary["by_routing"]["smart"]["meets_target"], bool)
    assert machine["code"] == str(Path(quorumdb.__file__).resolve().parent.parent)


def test_table_prints_from_the_report(
    report: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    load_script().print_table(report)
    table = capsys.readouterr().out
    assert "idle_before" in table and "during" in table and "idle_after" in table
    assert "rebalance: 16 transfers" in table and "during/idle" in table


def test_arguments_are_bounded() -> None:
    script = load_script()
    for arguments in (["--keys", "10"], ["--seconds", "0"], ["--routing", "nearest"]):
        with pytest.raises(SystemExit):
            script.parse_arguments(arguments)
