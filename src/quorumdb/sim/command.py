"""The `quorumdb sim` verb: run seeded simulations, print what was drawn and what happened.

`quorumdb sim --seed S ...` replays a run exactly: every failing run prints that
command. `python -m quorumdb.sim.command` runs the verb without the main CLI.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from quorumdb.check.history import save_history
from quorumdb.sim.controller_sim import (
    ControllerSimulation,
    controller_rng,
    draw_controller_parameters,
)
from quorumdb.sim.faults import (
    FAULT_KINDS,
    FaultListError,
    ParameterOverrides,
    draw_parameters,
    parse_faults,
)
from quorumdb.sim.rebalance_simulation import RebalanceSimulation, describe_rebalance
from quorumdb.sim.replication_sim import MODES, ReplicationSimulation, draw_replication_parameters
from quorumdb.sim.simulation import Simulation


def _seed_range(text: str) -> range:
    first, separator, last = text.partition("..")
    try:
        if not separator:
            raise ValueError(text)
        start, end = int(first), int(last)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A..B, got {text!r}") from None
    if end < start:
        raise argparse.ArgumentTypeError(f"empty seed range {text!r}")
    return range(start, end + 1)


def _faults(text: str) -> tuple[str, ...]:
    try:
        return parse_faults(text)
    except FaultListError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=1, help="the run to replay (default 1)")
    parser.add_argument(
        "--seeds", type=_seed_range, metavar="A..B", help="run every seed from A to B"
    )
    parser.add_argument("--nodes", type=_count(1), help="cluster size instead of the drawn one")
    parser.add_argument(
        "--faults",
        type=_faults,
        help="comma-separated loss,duplicate,partition,one-way,crash,skew; or all, none"
        " (default: drawn from the seed)",
    )
    parser.add_argument(
        "--operations", type=_count(0), help="operation count instead of the drawn one"
    )
    parser.add_argument(
        "--clock-drift-ppm",
        type=_count(0),
        help="with --mode: each node's clock runs this many ppm fast or slow (the direction"
        " drawn per node) instead of the drawn drift; the lease assumes rates at most 1%%"
        " apart, so up to 5000; beyond it a deposed leader may read stale",
    )
    parser.add_argument(
        "--history",
        type=Path,
        metavar="FILE",
        help="write the JSON-lines history (with --seeds, '{seed}' in FILE is replaced)",
    )
    parser.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="all",
        help="data: the data path; controller: the Raft metadata group; rebalance: the data"
        " path while a spare node joins and leaves; all: every one (default)",
    )
    parser.add_argument(
        "--mode",
        choices=tuple(MODES),
        help="run the replication scenario instead: a single-leader keyspace in this sync"
        " mode (sync: majority), leaders isolated, lost+found and replicas checked",
    )
    parser.add_argument("--trace", action="store_true", help="print the trace")
    parser.add_argument("--check", action="store_true", help="run the history checkers")


SCENARIOS = ("data", "controller", "rebalance", "all")


def replay_command(seed: int, args: argparse.Namespace, scenario: str = "data") -> str:
    parts = ["quorumdb", "sim", "--seed", str(seed)]
    if scenario == "replication":
        parts += ["--mode", args.mode]
    elif scenario != "data" or args.scenario == "data":
        parts += ["--scenario", scenario]
    if args.nodes is not None:
        parts += ["--nodes", str(args.nodes)]
    if args.faults is not None:
        faults = "all" if tuple(args.faults) == FAULT_KINDS else ",".join(args.faults) or "none"
        parts += ["--faults", faults]
    if args.operations is not None:
        parts += ["--operations", str(args.operations)]
    if args.clock_drift_ppm is not None:
        parts += ["--clock-drift-ppm", str(args.clock_drift_ppm)]
    parts += ["--check", "--trace"]
    return " ".join(parts)


@dataclass(frozen=True, slots=True)
class _Run:
    """What one seed of one scenario printed: the same shape for every scenario."""

    trace_lines: list[str]
    summary_lines: list[str]
    digest: str
    brief: str  # the one-line outcome with --seeds, after "seed S: "
    violations: list[str]
    # Acknowledged writes gone at the end, and of those the ones lost+found holds:
    # printed for scenarios that promise the accounting (replication, async).
    lost_accounted: tuple[int, int] | None = None
    notes: list[str] = field(default_factory=list)  # checker notes, printed with --check


def _overrides(args: argparse.Namespace) -> ParameterOverrides:
    return ParameterOverrides(args.nodes, args.faults, args.operations, args.clock_drift_ppm)


def _describe_data(seed: int, args: argparse.Namespace) -> list[str]:
    return draw_parameters(seed, random.Random(seed), _overrides(args)).describe()


def _simulate_data(seed: int, args: argparse.Namespace) -> _Run:
    simulation = Simulation.from_seed(seed, _overrides(args), keep_trace=args.trace)
    return _data_run(seed, args, simulation)


def _data_run(seed: int, args: argparse.Namespace, simulation: Simulation) -> _Run:
    simulation.run()
    violations = simulation.check() if args.check else []
    if args.history is not None:
        path = Path(str(args.history).replace("{seed}", str(seed)))
        save_history(path, simulation.workload.history)
    counts = simulation.workload.outcome_counts
    parameters = simulation.parameters
    brief = (
        f"nodes={parameters.node_count}"
        f" faults={','.join(parameters.faults) or 'none'}"
        f" ok={counts['ok']} fail={counts['fail']} info={counts['info']}"
        f" crashes={simulation.cluster.stats.crashes}"
        f" virtual-ms={simulation.queue.now_ms} trace-digest={simulation.digest()}"
    )
    return _Run(
        simulation.trace.lines,
        simulation.summary_lines(),
        simulation.digest(),
        brief,
        violations,
    )


def _describe_rebalance(seed: int, args: argparse.Namespace) -> list[str]:
    return describe_rebalance(seed, _overrides(args))


def _simulate_rebalance(seed: int, args: argparse.Namespace) -> _Run:
    simulation = RebalanceSimulation.from_rebalance_seed(
        seed, _overrides(args), keep_trace=args.trace
    )
    run = _data_run(seed, args, simulation)
    parameters = simulation.parameters
    rebalance = simulation.rebalance_line().removeprefix("rebalance: ").split(" (")[0]
    brief = run.brief.replace(
        f"nodes={parameters.node_count}",
        f"founders={parameters.node_count} spare={parameters.spare_count}"
        f" mode={'automatic' if simulation.operator.parameters.automatic else 'manual'}",
    ).replace(" virtual-ms=", f" {rebalance} virtual-ms=")
    return _Run(run.trace_lines, run.summary_lines, run.digest, brief, run.violations)


def _describe_controller(seed: int, args: argparse.Namespace) -> list[str]:
    return draw_controller_parameters(seed, controller_rng(seed), _overrides(args)).describe()


def _simulate_controller(seed: int, args: argparse.Namespace) -> _Run:
    simulation = ControllerSimulation.from_seed(seed, _overrides(args), keep_trace=args.trace)
    simulation.run()
    violations = simulation.check() if args.check else []
    counts = simulation.clients.counts
    parameters = simulation.parameters
    brief = (
        f"voters={parameters.voter_count}"
        f" spare={parameters.spare_count}"
        f" faults={','.join(parameters.faults) or 'none'}"
        f" ok={counts.ok} fail={counts.fail} info={counts.info}"
        f" crashes={simulation.cluster.stats.crashes}"
        f" membership-changes={simulation.operator.counts.committed}"
        f" virtual-ms={simulation.queue.now_ms} trace-digest={simulation.digest()}"
    )
    return _Run(
        simulation.trace.lines,
        simulation.summary_lines(),
        simulation.digest(),
        brief,
        violations,
    )


def _describe_replication(seed: int, args: argparse.Namespace) -> list[str]:
    rng = random.Random(seed)
    return draw_replication_parameters(seed, rng, args.mode, _overrides(args)).describe()


def _simulate_replication(seed: int, args: argparse.Namespace) -> _Run:
    simulation = ReplicationSimulation.from_seed(
        seed, args.mode, _overrides(args), keep_trace=args.trace
    )
    simulation.run()
    if args.history is not None:
        path = Path(str(args.history).replace("{seed}", str(seed)))
        save_history(path, simulation.history_records())
    result = simulation.check() if args.check else None
    counts = simulation.workload.outcome_counts
    parameters = simulation.parameters
    brief = (
        f"nodes={parameters.base.node_count} mode={parameters.mode}"
        f" faults={','.join(parameters.base.faults) or 'none'}"
        f" ok={counts['ok']} fail={counts['fail']} info={counts['info']}"
        f" crashes={simulation.cluster.stats.crashes}"
        f" isolations={simulation.nemesis.leader_isolations}"
        f" failovers={simulation.failovers}"
        f" deposed-reads={simulation.deposed_reads}"
        f" lost+found={len(simulation.collected.lost_found)}"
    )
    lost_accounted = None
    if result is not None and parameters.mode == "async":
        lost_accounted = (result.lost, result.accounted)
        brief += f" lost-acknowledged={result.lost} accounted={result.accounted}"
    brief += f" virtual-ms={simulation.queue.now_ms} trace-digest={simulation.digest()}"
    notes = []
    for summary in [] if result is None else result.summaries:
        if summary.applicable:
            judged = f"{summary.judged} {summary.unit}"
            notes.append(f"checker {summary.name}: judged {judged}, unknown {summary.unknown}")
            notes += [f"checker {summary.name}: {note}" for note in summary.notes]
    return _Run(
        simulation.trace.lines,
        simulation.summary_lines(),
        simulation.digest(),
        brief,
        [] if result is None else result.violations,
        lost_accounted,
        notes,
    )


@dataclass(frozen=True, slots=True)
class _Scenario:
    name: str
    label: str  # printed before "seed" and in trace lines with --seeds
    describe: Callable[[int, argparse.Namespace], list[str]]
    simulate: Callable[[int, argparse.Namespace], _Run]


_SCENARIOS = (
    _Scenario("data", "", _describe_data, _simulate_data),
    _Scenario("controller", "controller ", _describe_controller, _simulate_controller),
    _Scenario("rebalance", "rebalance ", _describe_rebalance, _simulate_rebalance),
)


_REPLICATION = _Scenario("replication", "", _describe_replication, _simulate_replication)


def _chosen(args: argparse.Namespace) -> list[_Scenario]:
    if args.mode is not None:
        return [_REPLICATION]
    return [scenario for scenario in _SCENARIOS if args.scenario in (scenario.name, "all")]


def _run_one(args: argparse.Namespace) -> int:
    seed: int = args.seed
    violation_count = 0
    failed: list[str] = []
    lost_accounted: tuple[int, int] | None = None
    for scenario in _chosen(args):
        # Print the parameters before running, so a hang or crash still shows them.
        for line in scenario.describe(seed, args):
            print(line)
        result = scenario.simulate(seed, args)
        for line in result.trace_lines if args.trace else ():
            print(f"trace: {line}")
        for line in result.summary_lines:
            print(line)
        print(f"trace-digest: {result.digest}")
        for line in result.notes:
            print(line)
        lost_accounted = _add(lost_accounted, result.lost_accounted)
        for violation in result.violations:
            print(f"violation: {violation}")
        violation_count += len(result.violations)
        if result.violations:
            failed.append(scenario.name)
    if not args.check:
        return 0
    _print_lost_accounted(lost_accounted)
    print(f"violations: {violation_count}")
    for name in failed:
        print(f"replay: {replay_command(seed, args, name)}")
    return 1 if failed else 0


def _run_many(seeds: range, args: argparse.Namespace) -> int:
    if args.history is not None and "{seed}" not in str(args.history) and len(seeds) > 1:
        print("--history with --seeds needs '{seed}' in the file name", file=sys.stderr)
        return 2
    failed: list[tuple[int, str]] = []
    violation_count = 0
    lost_accounted: tuple[int, int] | None = None
    for scenario in _chosen(args):
        for seed in seeds:
            result = scenario.simulate(seed, args)
            for line in result.trace_lines if args.trace else ():
                print(f"trace {scenario.label}{seed}: {line}")
            line = f"{scenario.label}seed {seed}: {result.brief}"
            if args.check:
                line += f" violations={len(result.violations)}"
            print(line)
            for violation in result.violations:
                print(f"  violation: {violation}")
            violation_count += len(result.violations)
            lost_accounted = _add(lost_accounted, result.lost_accounted)
            if result.violations:
                failed.append((seed, scenario.name))
    failed_seed_count = len({seed for seed, _ in failed})
    print(f"seeds: {len(seeds)} run, {failed_seed_count} with violations")
    for seed, name in failed:
        print(f"replay: {replay_command(seed, args, name)}")
    if args.check:
        _print_lost_accounted(lost_accounted)
        print(f"violations: {violation_count}")
    return 1 if failed else 0


def _add(total: tuple[int, int] | None, more: tuple[int, int] | None) -> tuple[int, int] | None:
    if more is None:
        return total
    if total is None:
        return more
    return total[0] + more[0], total[1] + more[1]


def _print_lost_accounted(lost_accounted: tuple[int, int] | None) -> None:
    if lost_accounted is not None:
        lost, accounted = lost_accounted
        print(f"lost-acknowledged: {lost} accounted: {accounted}")


def run(args: argparse.Namespace) -> int:
    if args.seeds is not None:
        return _run_many(args.seeds, args)
    return _run_one(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="quorumdb sim", description="Run the deterministic simulator."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
