"""The controller scenario: a sweep of seeds with every fault, replayability, and proof
that the checkers and faults have teeth (a deliberately broken Raft is caught).

Every failure names its seeds and the command that replays each one.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from quorumdb.core.controller import raft
from quorumdb.sim import command
from quorumdb.sim.controller_sim import ControllerSimulation
from quorumdb.sim.faults import ParameterOverrides, parse_faults

SWEEP_SEEDS = range(1000, 1300)
ALL_FAULTS = ParameterOverrides(faults=parse_faults("all"))


def replay(seed: int) -> str:
    return f"replay: quorumdb sim --seed {seed} --scenario controller --faults all --check --trace"


def run(
    seed: int, overrides: ParameterOverrides = ALL_FAULTS
) -> tuple[ControllerSimulation, list[str]]:
    simulation = ControllerSimulation.from_seed(seed, overrides)
    simulation.run()
    return simulation, simulation.check()


def test_three_hundred_seeds_with_all_faults_have_no_violation() -> None:
    failing: dict[int, list[str]] = {}
    voter_counts: set[int] = set()
    membership_changes = 0
    crashes = 0
    for seed in SWEEP_SEEDS:
        simulation, violations = run(seed)
        voter_counts.add(simulation.parameters.voter_count)
        membership_changes += simulation.operator.counts.committed
        crashes += simulation.cluster.stats.crashes
        if violations:
            failing[seed] = violations
    report = "\n".join(f"{replay(seed)}\n  {violations[0]}" for seed, violations in failing.items())
    print(f"seeds {SWEEP_SEEDS.start}..{SWEEP_SEEDS.stop - 1}: {len(failing)} failing")
    assert failing == {}, report
    # The sweep really exercised what it claims to.
    assert voter_counts == {1, 3, 5}
    assert membership_changes > 100
    assert crashes > 300


def test_a_seed_replays_exactly() -> None:
    seed = 1042
    first, _ = run(seed)
    second, _ = run(seed)
    assert first.digest() == second.digest(), replay(seed)
    assert first.queue.steps == second.queue.steps


def test_the_digest_does_not_depend_on_string_hashing() -> None:
    seed = 1077
    digests = set()
    for hash_seed in ("1", "2"):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "quorumdb.sim.command",
                "--seed",
                str(seed),
                "--scenario",
                "controller",
                "--faults",
                "all",
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )
        digests.add(result.stdout.split("trace-digest: ")[1].split()[0])
    assert len(digests) == 1, replay(seed)


def grant_votes_without_the_log_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """A classic bug: vote for any candidate, however stale its log (§5.4.1)."""
    monkeypatch.setattr(raft.RaftNode, "_log_up_to_date", lambda self, request: True)


def test_a_raft_that_votes_for_stale_logs_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    grant_votes_without_the_log_check(monkeypatch)
    caught = []
    for seed in range(1000, 1040):
        _, violations = run(seed)
        if violations:
            caught.append(seed)
    print(f"seeds 1000..1039 catching the bug: {caught}")
    assert len(caught) >= 3


def test_the_command_runs_the_controller_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    status = command.main(["--seed", "1003", "--scenario", "controller", "--check"])
    output = capsys.readouterr().out
    assert status == 0, output
    assert output.startswith("seed: 1003 scenario: controller\n")
    assert "trace-digest: " in output
    assert output.rstrip().endswith("violations: 0")


def test_a_failing_controller_seed_prints_its_replay_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    grant_votes_without_the_log_check(monkeypatch)
    status = command.main(
        ["--seeds", "1000..1012", "--scenario", "controller", "--faults", "all", "--check"]
    )
    output = capsys.readouterr().out
    assert status == 1
    assert "replay: quorumdb sim --seed 10" in output
    assert "--scenario controller --faults all --check --trace" in output
    counted = int(output.rstrip().rsplit("violations: ", 1)[1])
    listed = sum(1 for line in output.splitlines() if line.startswith("  violation: "))
    assert counted >= listed > 0


def test_all_scenarios_count_into_one_violation_total(capsys: pytest.CaptureFixture[str]) -> None:
    status = command.main(["--seeds", "4..5", "--operations", "30", "--check"])
    output = capsys.readouterr().out
    assert status == 0, output
    assert "seed 4: " in output and "controller seed 4: " in output
    assert output.rstrip().endswith("violations: 0")
