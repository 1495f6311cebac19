"""The replication scenario of the simulator: a sweep of seeds per sync mode under
every fault kind, and proof that each check it runs can fail.

Every randomized test prints its seeds, and a failing seed its replay command.
"""

from __future__ import annotations

import time

import pytest

from quorumdb.core.replication import lost_found
from quorumdb.core.replication.replica import PartitionReplica, _Batch
from quorumdb.sim import command
from quorumdb.sim.faults import ParameterOverrides
from quorumdb.sim.replication_sim import ReplicationSimulation
from quorumdb.storage.interface import Write

# (mode, seeds): 510 seeds in all. Each seed draws its own cluster size (3 to 7 nodes),
# network, fault rates, clocks and workload; every fault kind is on.
SWEEPS = (
    ("sync", range(1000, 1170)),
    ("semi", range(2000, 2170)),
    ("async", range(3000, 3170)),
)


def replay(seed: int, mode: str) -> str:
    return f"replay: quorumdb sim --seed {seed} --mode {mode} --check --trace"


def run(seed: int, mode: str) -> ReplicationSimulation:
    simulation = ReplicationSimulation.from_seed(seed, mode)
    simulation.run()
    return simulation


@pytest.mark.parametrize("mode, seeds", SWEEPS, ids=[mode for mode, _ in SWEEPS])
def test_a_sweep_of_seeds_has_no_violation_and_real_failovers(mode: str, seeds: range) -> None:
    print(f"mode {mode}: seeds {seeds.start}..{seeds.stop - 1}")
    started = time.monotonic()
    failing: list[str] = []
    with_failovers = 0
    lost = accounted = with_losses = 0
    for seed in seeds:
        simulation = run(seed, mode)
        result = simulation.check()
        if result.violations:
            failing.append(f"seed {seed}: {result.violations[0]}\n  {replay(seed, mode)}")
        with_failovers += simulation.failovers > 0
        lost += result.lost
        accounted += result.accounted
        with_losses += result.lost > 0
    print(
        f"mode {mode}: {len(seeds)} seeds in {time.monotonic() - started:.1f} s,"
        f" {with_failovers} with failovers, lost-acknowledged: {lost} accounted: {accounted}"
        f" ({with_losses} seeds lost some)"
    )
    assert failing == [], "\n".join(failing)
    assert with_failovers >= len(seeds) // 4  # the nemesis really replaces leaders
    if mode == "async":
        assert with_losses >= 3 and accounted == lost  # losses happen, all accounted
    else:
        assert lost == 0


def test_a_seed_replays_to_the_same_trace_and_records() -> None:
    seed = 1108
    print(f"seed {seed}: {replay(seed, 'async')}")
    first, second = run(seed, "async"), run(seed, "async")
    assert first.digest() == second.digest()
    assert first.history_records() == second.history_records()


# --- clocks within and beyond the lease's bound ---------------------------------------------

# The same seeds, leader isolations and clocks only (crashes and random cuts would blur
# what the clocks do), each node's clock fast or slow by the drift, its direction drawn
# per node: a slow leader with fast followers is cut off and replaced while its own clock
# says its lease still holds; readers routing by the map they cached keep asking it.
DRIFT_SEEDS = range(40, 60)
DRIFT_FAULTS = ("partition", "skew")
WITHIN_BOUND_PPM = 5_000  # rates at most 1 % apart: the lease's `max_clock_drift`
BEYOND_BOUND_PPM = 600_000


def drift_replay(seed: int, drift_ppm: int) -> str:
    return (
        f"replay: quorumdb sim --seed {seed} --mode sync --faults partition,skew"
        f" --clock-drift-ppm {drift_ppm} --check --trace"
    )


def run_drifting(seed: int, drift_ppm: int) -> ReplicationSimulation:
    overrides = ParameterOverrides(faults=DRIFT_FAULTS, clock_drift_ppm=drift_ppm)
    simulation = ReplicationSimulation.from_seed(seed, "sync", overrides)
    simulation.run()
    return simulation


def drift_sweep(drift_ppm: int) -> tuple[dict[int, list[str]], dict[int, int]]:
    """Each seed's violations and count of reads a deposed leader answered."""
    violations: dict[int, list[str]] = {}
    deposed_reads: dict[int, int] = {}
    for seed in DRIFT_SEEDS:
        simulation = run_drifting(seed, drift_ppm)
        violations[seed] = simulation.check().violations
        deposed_reads[seed] = simulation.deposed_reads
        if violations[seed] or deposed_reads[seed]:
            print(
                f"seed {seed}: deposed-leader reads {deposed_reads[seed]},"
                f" violations {len(violations[seed])}\n  {drift_replay(seed, drift_ppm)}"
            )
    return violations, deposed_reads


def test_clocks_within_the_bound_never_let_a_deposed_leader_read() -> None:
    """Within the bound the lease ends before any follower promises a successor, so no
    leader answers a read once another node leads a newer epoch, and nothing is stale."""
    print(f"seeds {DRIFT_SEEDS.start}..{DRIFT_SEEDS.stop - 1} at {WITHIN_BOUND_PPM} ppm")
    violations, deposed_reads = drift_sweep(WITHIN_BOUND_PPM)
    failing = [
        f"seed {seed}: {found[0]}\n  {drift_replay(seed, WITHIN_BOUND_PPM)}"
        for seed, found in violations.items()
        if found
    ]
    assert failing == [], "\n".join(failing)
    assert sum(deposed_reads.values()) == 0


def test_clocks_beyond_the_bound_let_a_deposed_leader_read_stale() -> None:
    """The same seeds with clocks 60 % fast or slow: deposed leaders answer reads, and in
    some seeds one of them misses a write the successor acknowledged before the read
    began (docs/replication.md, "What breaks beyond the drift bound", lists them)."""
    print(f"seeds {DRIFT_SEEDS.start}..{DRIFT_SEEDS.stop - 1} at {BEYOND_BOUND_PPM} ppm")
    violations, deposed_reads = drift_sweep(BEYOND_BOUND_PPM)
    stale = [seed for seed, found in violations.items() if found]
    print(f"stale in seeds {stale}")
    assert stale
    for seed in stale:  # each a read a deposed leader served
        assert any(item.startswith("linearizability:") for item in violations[seed]), seed
        assert deposed_reads[seed] > 0
    assert sum(1 for count in deposed_reads.values() if count) > len(stale)  # not always


def test_the_stale_read_beyond_the_bound_replays_from_its_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for seed in DRIFT_SEEDS:  # the first seed with a stale read
        arguments = ["--seed", str(seed), "--mode", "sync", "--faults", "partition,skew"]
        arguments += ["--clock-drift-ppm", str(BEYOND_BOUND_PPM), "--check"]
        if command.main(arguments) == 1:
            break
    output = capsys.readouterr().out
    assert "drift_ppm=[" in output and "readers: " in output
    assert "violation: linearizability: key " in output
    assert drift_replay(seed, BEYOND_BOUND_PPM) in output


# --- each check can fail --------------------------------------------------------------------


def test_acknowledging_before_a_majority_holds_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Majority mode answering like async: writes acknowledged by an isolated leader
    alone are lost by the failover, and linearizability and acknowledged writes say so."""
    monkeypatch.setattr(PartitionReplica, "_satisfied", lambda self, sequence: True)
    for seed in range(100, 140):  # the first seed whose failovers lose such a write
        print(f"seed {seed}: {replay(seed, 'sync')} (with the leader acknowledging alone)")
        simulation = run(seed, "sync")
        violations = simulation.check().violations
        if violations:
            break
    assert simulation.failovers > 0
    assert any(item.startswith("linearizability:") for item in violations), violations
    assert any(item.startswith("acknowledged-writes:") for item in violations), violations


def test_undone_writes_missing_from_lost_and_found_are_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Async mode whose undo files nothing in `_lostfound`: lost-acknowledged exceeds
    accounted, and each unaccounted write is a violation."""

    def filed_elsewhere(self: lost_found.LostWrite) -> Write:
        return Write("_discarded", 0, self.storage_key, b"-")

    monkeypatch.setattr(lost_found.LostWrite, "write", filed_elsewhere)
    for seed in range(100, 160):  # the first seed whose run loses an acknowledged write
        print(f"seed {seed}: {replay(seed, 'async')} (with lost+found filed elsewhere)")
        result = run(seed, "async").check()
        if result.lost:
            break
    assert result.lost > result.accounted == 0
    unaccounted = [item for item in result.violations if item.startswith("lost+found:")]
    assert len(unaccounted) == result.lost, result.violations


def test_an_undo_that_keeps_the_data_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """An old leader that drops its divergent tail from the log but not from the data:
    its replica differs from the others after healing."""

    def undo_log_only(self: PartitionReplica, sequence: int, batch: _Batch) -> None:
        self._unlog_from(sequence, batch)
        count = sequence - self.base.sequence - 1
        self.entries = self.entries[:count]

    monkeypatch.setattr(PartitionReplica, "_undo_from", undo_log_only)
    for seed in range(100, 140):  # the first seed whose run undoes a divergent tail
        print(f"seed {seed}: {replay(seed, 'async')} (with undo keeping the data)")
        violations = run(seed, "async").check().violations
        if any(item.startswith("convergence:") for item in violations):
            break
    assert any(item.startswith("convergence:") for item in violations), violations


# --- the verb -------------------------------------------------------------------------------


def test_the_command_prints_the_accounting_and_ends_with_the_violation_count(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert command.main(["--seeds", "3001..3002", "--mode", "async", "--check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("seed 3001: nodes=") and "mode=async" in lines[0]
    assert "failovers=" in lines[0] and "lost-acknowledged=" in lines[0]
    assert lines[-2].startswith("lost-acknowledged: ") and " accounted: " in lines[-2]
    assert lines[-1] == "violations: 0"


def test_a_failing_seed_prints_the_command_that_replays_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(PartitionReplica, "_satisfied", lambda self, sequence: True)
    for seed in range(100, 140):  # the first seed the mutation fails
        if command.main(["--seed", str(seed), "--mode", "sync", "--check"]) == 1:
            break
    output = capsys.readouterr().out
    assert "sync=majority" in output and "leader-isolation:" in output
    assert "violation: linearizability:" in output
    assert f"replay: quorumdb sim --seed {seed} --mode sync --check --trace" in output
