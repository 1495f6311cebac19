"""scripts/controller_benchmark.py in a tiny mode (2 failovers, 10 creates per
configuration, real node processes), so the script cannot rot unnoticed: the JSON has
the documented shape and the table prints from it."""

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

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "controller_benchmark.py"
SUMMARY_KEYS = {"median", "p99", "min", "max"}
CONFIGURATIONS = [("leader", 1), ("follower", 1), ("leader", 8), ("follower", 8)]


def load_script() -> ModuleType:
    specification = importlib.util.spec_from_file_location("controller_benchmark", SCRIPT)
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
        [sys.executable, str(SCRIPT), "--runs", "2", "--creates", "10", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env=environment,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return dict(json.loads(completed.stdout))


def test_failover_numbers(report: dict[str, object]) -> None:
    failover = report["failover"]
    assert isinstance(failover, dict)
    for key in ("leader_agreed_ms", "write_applied_ms", "write_acknowledged_ms"):
        assert set(failover[key]) == SUMMARY_KEYS
        assert 0 < failover[key]["min"] <= failover[key]["median"] <= failover[key]["max"]
    runs = failover["runs"]
    assert len(runs) == 2
    for run in runs:
        assert run["new_leader"] != run["old_leader"]
        assert run["term_after"] > run["term_before"]
        assert run["write_attempts"] >= 1


def test_metadata_operation_numbers(report: dict[str, object]) -> None:
    loads = report["metadata_operations"]
    assert isinstance(loads, list)
    assert [(load["through"], load["clients"]) for load in loads[:4]] == CONFIGURATIONS
    assert loads[4]["through"].startswith("leader, node") and loads[4]["clients"] == 8
    for load in loads:
        # A busy machine may cause an election and a few refused creates: count, not fail.
        assert load["creates"] + load["errors"] == 10 and load["creates"] > 0
        assert load["operations_per_second"] > 0
        assert 0 < load["latency_ms_p50"] <= load["latency_ms_p99"] <= load["latency_ms_max"]
        assert load["terms_passed"] >= 0 and isinstance(load["leader_changed"], bool)
    versions = report["metadata_version_by_round"]
    assert isinstance(versions, list) and versions == sorted(versions)
    costs = report["metadata_cost_by_size"]
    assert isinstance(costs, list) and [cost["keyspaces"] for cost in costs] == [101, 401, 801]
    assert all(cost["routing_view_ms"] > 0 and cost["snapshot_bytes"] > 0 for cost in costs)


def test_settings_and_machine(report: dict[str, object]) -> None:
    settings, machine = report["settings"], report["machine"]
    assert isinstance(settings, dict) and isinstance(machine, dict)
    assert settings["nodes"] == 3 and settings["runs"] == 2 and settings["creates"] == 10
    assert settings["election_timeout_ms"] == [300, 600]
    assert machine["code"] == str(Path(quorumdb.__file__).resolve().parent.parent)


def test_table_prints_from_the_report(
    report: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    load_script().print_table(report)
    table = capsys.readouterr().out
    assert "survivors agree on a new leader" in table
    assert "follower" in table and "every node applied it" in table


def test_arguments_are_bounded() -> None:
    script = load_script()
    for arguments in (["--runs", "0"], ["--nodes", "2"], ["--creates", "100000"]):
        with pytest.raises(SystemExit):
            script.parse_arguments(arguments)
