"""The `quorumdb sim` verb: run seeded simulations, print what was drawn and what happened.

`quorumdb sim --seed S ...` replays a run exactly: every failing run prints that
command. `python -m quorumdb.sim.command` runs the verb without the main CLI.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable, Sequence
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
        "--history",
        type=Path,
        metavar="FILE",
        help="write the JSON-lines history (with --seeds, '{seed}' in FILE is replaced)",
    )
    parser.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="all",
        help="data: the data path; controller: the Raft metadata group; all: both (default)",
    )
    parser.add_argument("--trace", action="store_true", help="print the trace")
    parser.add_argument("--check", action="store_true", help="run the history checkers")


SCENARIOS = ("data", "controller", "all")


def replay_command(seed: int, args: argparse.Namespace, scenario: str = "data") -> str:
    parts = ["quorumdb", "sim", "--seed", str(seed)]
    if scenario != "data" or args.scenario == "data":
        parts += ["--scenario", scenario]
    if args.nodes is not None:
        parts += ["--nodes", str(args.nodes)]
    if args.faults is not None:
        faults = "all" if tuple(args.faults) == FAULT_KINDS else ",".join(args.faults) or "none"
        parts += ["--faults", faults]
    if args.operations is not None:
        parts += ["--operations", str(args.operations)]
    parts += ["--check", "--trace"]
    return " ".join(parts)


def _simulate(seed: int, args: argparse.Namespace) -> tuple[Simulation, list[str]]:
    overrides = ParameterOverrides(args.nodes, args.faults, args.operations)
    simulation = Simulation.from_seed(seed, overrides, keep_trace=args.trace)
    simulation.run()
    violations = simulation.check() if args.check else []
    if args.history is not None:
        path = Path(str(args.history).replace("{seed}", str(seed)))
        save_history(path, simulation.workload.history)
    return simulation, violations


def _overrides(args: argparse.Namespace) -> ParameterOverrides:
    return ParameterOverrides(args.nodes, args.faults, args.operations)


def _simulate_controller(
    seed: int, args: argparse.Namespace
) -> tuple[ControllerSimulation, list[str]]:
    simulation = ControllerSimulation.from_seed(seed, _overrides(args), keep_trace=args.trace)
    simulation.run()
    violations = simulation.check() if args.check else []
    return simulation, violations


def _run_one(args: argparse.Namespace) -> int:
    violation_count = 0
    failed: list[str] = []
    if args.scenario in ("data", "all"):
        violations = _run_one_data(args)
        violation_count += len(violations)
        if violations:
            failed.append("data")
    if args.scenario in ("controller", "all"):
        violations = _run_one_controller(args)
        violation_count += len(violations)
        if violations:
            failed.append("controller")
    if not args.check:
        return 0
    print(f"violations: {violation_count}")
    for scenario in failed:
        print(f"replay: {replay_command(args.seed, args, scenario)}")
    return 1 if failed else 0


def _run_one_controller(args: argparse.Namespace) -> list[str]:
    seed: int = args.seed
    for line in draw_controller_parameters(seed, controller_rng(seed), _overrides(args)).describe():
        print(line)
    simulation, violations = _simulate_controller(seed, args)
    if args.trace:
        for line in simulation.trace.lines:
            print(f"trace: {line}")
    for line in simulation.summary_lines():
        print(line)
    print(f"trace-digest: {simulation.digest()}")
    for violation in violations:
        print(f"violation: {violation}")
    return violations


def _run_one_data(args: argparse.Namespace) -> list[str]:
    seed: int = args.seed
    overrides = _overrides(args)
    # Print the parameters before running, so a hang or crash still shows them.
    for line in draw_parameters(seed, random.Random(seed), overrides).describe():
        print(line)
    simulation, violations = _simulate(seed, args)
    if args.trace:
        for line in simulation.trace.lines:
            print(f"trace: {line}")
    for line in simulation.summary_lines():
        print(line)
    print(f"trace-digest: {simulation.digest()}")
    for violation in violations:
        print(f"violation: {violation}")
    return violations


def _run_many(seeds: range, args: argparse.Namespace) -> int:
    if args.history is not None and "{seed}" not in str(args.history) and len(seeds) > 1:
        print("--history with --seeds needs '{seed}' in the file name", file=sys.stderr)
        return 2
    failed: list[tuple[int, str]] = []
    violation_count = 0
    for seed in seeds if args.scenario in ("data", "all") else ():
        simulation, violations = _simulate(seed, args)
        if args.trace:
            for line in simulation.trace.lines:
                print(f"trace {seed}: {line}")
        counts = simulation.workload.outcome_counts
        parameters = simulation.parameters
        line = (
            f"seed {seed}: nodes={parameters.node_count}"
            f" faults={','.join(parameters.faults) or 'none'}"
            f" ok={counts['ok']} fail={counts['fail']} info={counts['info']}"
            f" crashes={simulation.cluster.stats.crashes}"
            f" virtual-ms={simulation.queue.now_ms} trace-digest={simulation.digest()}"
        )
        if args.check:
            line += f" violations={len(violations)}"
        print(line)
        for violation in violations:
            print(f"  violation: {violation}")
        violation_count += len(violations)
        if violations:
            failed.append((seed, "data"))
    for seed in seeds if args.scenario in ("controller", "all") else ():
        violations = _run_controller_seed(seed, args)
        violation_count += len(violations)
        if violations:
            failed.append((seed, "controller"))
    failed_seed_count = len({seed for seed, _ in failed})
    print(f"seeds: {len(seeds)} run, {failed_seed_count} with violations")
    for seed, scenario in failed:
        print(f"replay: {replay_command(seed, args, scenario)}")
    if args.check:
        print(f"violations: {violation_count}")
    return 1 if failed else 0


def _run_controller_seed(seed: int, args: argparse.Namespace) -> list[str]:
    simulation, violations = _simulate_controller(seed, args)
    if args.trace:
        for line in simulation.trace.lines:
            print(f"trace controller {seed}: {line}")
    counts = simulation.clients.counts
    parameters = simulation.parameters
    line = (
        f"controller seed {seed}: voters={parameters.voter_count}"
        f" spare={parameters.spare_count}"
        f" faults={','.join(parameters.faults) or 'none'}"
        f" ok={counts.ok} fail={counts.fail} info={counts.info}"
        f" crashes={simulation.cluster.stats.crashes}"
        f" membership-changes={simulation.operator.counts.committed}"
        f" virtual-ms={simulation.queue.now_ms} trace-digest={simulation.digest()}"
    )
    if args.check:
        line += f" violations={len(violations)}"
    print(line)
    for violation in violations:
        print(f"  violation: {violation}")
    return violations


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
