"""`quorumdb check`: a simulator history passes, doctored ones fail, the output's shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from quorumdb.check import command
from quorumdb.check.convergence import replica_digest
from quorumdb.check.history import (
    HistoryEvent,
    HistoryFile,
    LostFoundEntry,
    ReplicaRecord,
    load_history,
    save_history,
)
from quorumdb.sim.faults import ParameterOverrides
from quorumdb.sim.simulation import Simulation


def quorumdb(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quorumdb", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def sim_history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("check") / "seed3.jsonl"
    simulated = quorumdb("sim", "--seed", "3", "--history", str(path))
    assert simulated.returncode == 0, simulated.stderr
    return path


def doctored(source: Path, target: Path) -> Path:
    """The history plus a final read, by a new process, of a value no one wrote."""
    events = load_history(source)
    key = next(e.key for e in events if e.type == "ok" and e.f == "put")
    index, time_ms = len(events), events[-1].time_ms + 1
    process = 1 + max(event.process for event in events)
    events.append(HistoryEvent(index, time_ms, process, "invoke", "get", key))
    events.append(HistoryEvent(index + 1, time_ms + 1, process, "ok", "get", key, "doctored"))
    save_history(target, events)
    return target


def test_a_simulator_history_passes_and_a_doctored_one_fails(
    sim_history: Path, tmp_path: Path
) -> None:
    passed = quorumdb("check", str(sim_history))
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert passed.stdout.rstrip().endswith("violations: 0")
    for name in ("linearizability", "acknowledged-writes", "read-your-writes"):
        assert name in passed.stdout
    assert "not applicable: no replica records" in passed.stdout
    bad = doctored(sim_history, tmp_path / "doctored.jsonl")
    failed = quorumdb("check", str(bad))
    assert failed.returncode == 1, failed.stdout
    assert "linearizability: violation: key" in failed.stdout
    assert "acknowledged-writes: violation:" in failed.stdout


def test_json_lists_every_checker(
    sim_history: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert command.main(["--json", str(sim_history)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["violations"] == 0
    assert list(document["checkers"]) == list(command.CHECKERS)
    assert document["checkers"]["convergence"]["applicable"] is False
    bad = doctored(sim_history, tmp_path / "doctored.jsonl")
    assert command.main(["--json", str(bad)]) == 1
    document = json.loads(capsys.readouterr().out)
    linearizability = document["checkers"]["linearizability"]
    assert linearizability["violation_count"] == 1 and linearizability["violations"]


def test_records_switch_on_lost_found_and_convergence(
    sim_history: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = load_history(sim_history)
    same = replica_digest([("k", "v")])
    replicas = [
        ReplicaRecord("node0", "default", 0, same, (1, 3)),
        ReplicaRecord("node1", "default", 0, same, (1, 3)),
    ]
    unacknowledged = LostFoundEntry("w0-0", "never-acknowledged", 1)
    path = tmp_path / "with-records.jsonl"
    save_history(path, [*events, unacknowledged, *replicas])
    assert command.main([str(path)]) == 0
    output = capsys.readouterr().out
    assert "1 lost+found records, 2 replica records" in output
    assert "listed-unmatched=1" in output and "1 partitions" in output
    diverged = ReplicaRecord("node2", "default", 0, replica_digest([]), (1, 2))
    save_history(path, [*events, *replicas, diverged])
    assert command.main([str(path)]) == 1
    assert "convergence: violation: keyspace 'default' partition 0" in capsys.readouterr().out


def test_only_forces_a_checker_and_skip_leaves_one_out(
    sim_history: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = doctored(sim_history, tmp_path / "doctored.jsonl")
    assert command.main(["--skip", "linearizability,acknowledged-writes", str(bad)]) == 0
    assert "linearizability" in capsys.readouterr().out
    assert command.main(["--only", "lost+found", str(sim_history)]) == 0
    output = capsys.readouterr().out
    assert "lost+found: lost=0 accounted=0" in output
    assert "not applicable: not selected" in output


def test_a_broken_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"index": 0, "time_ms": 0, "process": 0, "type": "ok", "f": "get"}\n')
    assert command.main([str(path)]) == 2
    assert "missing field" in capsys.readouterr().err
    path.write_text(
        '{"index": 0, "time_ms": 0, "process": 0, "type": "invoke", "f": "get", "key": "k"}\n'
        '{"index": 1, "time_ms": 0, "process": 0, "type": "ok", "f": "get", "key": "k",'
        ' "value": 7}\n'
    )
    assert command.main([str(path)]) == 2
    assert "ok get with value 7" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        command.main(["--only", "nonsense", str(path)])


@pytest.mark.parametrize("seed", [1, 2, 5, 8])
def test_every_checker_passes_simulator_runs_with_faults(seed: int) -> None:
    simulation = Simulation.from_seed(seed, ParameterOverrides(None, ("crash", "loss"), 300))
    simulation.run()
    history = HistoryFile(simulation.workload.history, [], [])
    summaries = command.run_checkers(history, step_limit=20_000)
    replay = f"quorumdb sim --seed {seed} --faults crash,loss --operations 300 --history F"
    assert [item.violations for item in summaries] == [[]] * len(summaries), replay
    assert summaries[0].judged > 0 and summaries[1].judged > 0
