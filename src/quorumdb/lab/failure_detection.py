"""Lab: how fast SWIM declares a crashed member down, and how often a live one, by size,
loss and the number of independent sources required (the notes ask for two).

Every run starts from a formed cluster, counts false `down` declarations during a
crash-free window, then crashes one member drawn from the seed and measures the time
to the first `down` and to the moment every live member holds it. A second table
gives one member a lossy outbound link (90 % of what it sends is lost) and counts how
often healthy members are declared down: the case two sources are meant for.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quorumdb.sim.membership_sim import RunParameters, RunResult

DESCRIPTION = (
    "SWIM failure detection at 10, 100 and 1000 members: time to declare a crash down, "
    "false downs under loss, one versus two independent sources"
)

LOSSY_LINK_LOSS = 0.9


@dataclass(frozen=True, slots=True)
class SizePlan:
    node_count: int
    runs: int
    crash_free_ms: int
    """Virtual time before the crash: the window in which false downs are counted."""
    detection_cap_ms: int
    """Longest wait after the crash for every live member to hold it down."""


@dataclass(frozen=True, slots=True)
class Plan:
    sizes: tuple[SizePlan, ...]
    loss_probabilities: tuple[float, ...]
    required_sources: tuple[int, ...]
    lossy_link_sizes: tuple[int, ...]
    lossy_link_ms: int


FULL_PLAN = Plan(
    sizes=(
        SizePlan(10, runs=10, crash_free_ms=120_000, detection_cap_ms=60_000),
        SizePlan(100, runs=4, crash_free_ms=40_000, detection_cap_ms=40_000),
        SizePlan(1000, runs=1, crash_free_ms=20_000, detection_cap_ms=25_000),
    ),
    loss_probabilities=(0.0, 0.05, 0.2),
    required_sources=(1, 2),
    lossy_link_sizes=(10, 100),
    lossy_link_ms=300_000,
)
QUICK_PLAN = Plan(
    sizes=(
        SizePlan(10, runs=3, crash_free_ms=20_000, detection_cap_ms=60_000),
        SizePlan(30, runs=2, crash_free_ms=10_000, detection_cap_ms=60_000),
    ),
    loss_probabilities=(0.0, 0.05, 0.2),
    required_sources=(1, 2),
    lossy_link_sizes=(10,),
    lossy_link_ms=60_000,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="fewer members and runs (seconds)")
    parser.add_argument("--seed", type=int, default=1, help="base seed of every run (default 1)")
    parser.add_argument(
        "--jobs", type=int, default=2, help="worker processes; results do not depend on it"
    )
    parser.add_argument(
        "--indirect-probes",
        type=int,
        default=3,
        metavar="K",
        help="members asked to probe a target that missed its direct ack (default 3)",
    )


def percentile(values: Sequence[int], share: float) -> int | None:
    """Nearest-rank percentile: with fewer than 1/(1-share) samples, the largest."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def run_seed(base_seed: int, run_index: int) -> int:
    """The same seeds in every cell, so that 1 and 2 sources face the same crashes."""
    return base_seed * 1000 + run_index


def _grid(plan: Plan, base_seed: int, indirect_probe_count: int) -> list[RunParameters]:
    from quorumdb.core.membership import MembershipConfig
    from quorumdb.sim.membership_sim import RunParameters

    config = MembershipConfig(indirect_probe_count=indirect_probe_count)

    grid = []
    for size in plan.sizes:
        for loss in plan.loss_probabilities:
            for sources in plan.required_sources:
                for run_index in range(size.runs):
                    grid.append(
                        RunParameters(
                            seed=run_seed(base_seed, run_index),
                            node_count=size.node_count,
                            loss_probability=loss,
                            required_sources=sources,
                            duration_ms=size.detection_cap_ms,
                            crash_at_ms=size.crash_free_ms,
                            config=config,
                        )
                    )
    for node_count in plan.lossy_link_sizes:
        for sources in plan.required_sources:
            grid.append(
                RunParameters(
                    seed=run_seed(base_seed, 0),
                    node_count=node_count,
                    loss_probability=0.0,
                    required_sources=sources,
                    duration_ms=plan.lossy_link_ms,
                    lossy_member_outbound_loss=LOSSY_LINK_LOSS,
                    config=config,
                )
            )
    return grid


def _execute(grid: list[RunParameters], jobs: int) -> list[RunResult]:
    from quorumdb.sim.membership_sim import run

    # The largest runs first, so two workers finish together.
    order = sorted(range(len(grid)), key=lambda index: -grid[index].node_count)
    results: dict[int, RunResult] = {}
    if jobs <= 1:
        for index in order:
            results[index] = run(grid[index])
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=jobs) as pool:
            done = pool.map(run, [grid[index] for index in order])
            results = dict(zip(order, done, strict=True))
    return [results[index] for index in range(len(grid))]


def _summarize(results: list[RunResult]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    cells: dict[tuple[int, float, int], list[RunResult]] = {}
    lossy: list[dict[str, Any]] = []
    for result in results:
        parameters = result.parameters
        if parameters.lossy_member_outbound_loss is not None:
            hours = result.crash_free_member_hours
            lossy.append(
                {
                    "nodes": parameters.node_count,
                    "required_sources": parameters.required_sources,
                    "lossy_outbound_loss": parameters.lossy_member_outbound_loss,
                    "virtual_ms": parameters.duration_ms,
                    "healthy_declared_down": result.false_downs,
                    "healthy_down_per_member_hour": result.false_downs / hours,
                    "lossy_member_declared_down": result.lossy_member_downs,
                }
            )
            continue
        key = (parameters.node_count, parameters.loss_probability, parameters.required_sources)
        cells.setdefault(key, []).append(result)
    rows = []
    for (node_count, loss, sources), runs in cells.items():
        firsts = [r.first_detection_ms for r in runs if r.first_detection_ms is not None]
        alls = [r.all_detection_ms for r in runs if r.all_detection_ms is not None]
        false_downs = sum(r.false_downs for r in runs)
        hours = sum(r.crash_free_member_hours for r in runs)
        rows.append(
            {
                "nodes": node_count,
                "loss": loss,
                "required_sources": sources,
                "runs": len(runs),
                "first_median_ms": percentile(firsts, 0.5),
                "first_p99_ms": percentile(firsts, 0.99),
                "all_median_ms": percentile(alls, 0.5),
                "all_p99_ms": percentile(alls, 0.99),
                "undetected_by_all": len(runs) - len(alls),
                "false_downs": false_downs,
                "crash_free_member_hours": hours,
                "false_downs_per_member_hour": false_downs / hours,
                "false_downs_after_crash": sum(r.false_downs_after_crash for r in runs),
                "messages_per_member_second": sum(r.messages_sent for r in runs)
                * 1000
                / sum(r.parameters.node_count * r.virtual_ms for r in runs),
            }
        )
    return rows, lossy


def _seconds(value: int | None) -> str:
    return "-" if value is None else f"{value / 1000:.1f}"


def _print_text(
    plan: Plan,
    rows: list[dict[str, Any]],
    lossy: list[dict[str, Any]],
    args: argparse.Namespace,
    wall_s: float,
) -> None:
    command = f"quorumdb lab failure-detection --seed {args.seed}"
    if args.quick:
        command += " --quick"
    if args.indirect_probes != 3:
        command += f" --indirect-probes {args.indirect_probes}"
    print(f"SWIM failure detection (virtual time; reproduce: {command})")
    print(
        f"Probe every 1 s, probe timeout 300 ms, {args.indirect_probes} indirect probes, suspicion"
    )
    print("4 x max(1, log10 n) s, updates retransmitted 4 x ceil(log10(n+1)) times.")
    print("Latency 2 ms + exponential jitter (mean 3 ms); loss applies to every datagram.")
    for size in plan.sizes:
        print(
            f"  {size.node_count} members: {size.runs} run{'' if size.runs == 1 else 's'} "
            "per cell, crash-free window "
            f"{size.crash_free_ms // 1000} s, then one crash, wait <= "
            f"{size.detection_cap_ms // 1000} s"
        )
    header = (
        f"{'nodes':>5} {'loss':>5} {'srcs':>4} {'runs':>4} | {'first med':>9} {'first p99':>9} "
        f"| {'all med':>8} {'all p99':>8} {'missed':>6} | {'false':>5} {'/member-h':>9} "
        f"{'member-h':>8}"
    )
    print()
    print("Detection of one crash (s after the crash) and false downs (crash-free window)")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['nodes']:>5} {row['loss']:>5.0%} {row['required_sources']:>4} "
            f"{row['runs']:>4} | {_seconds(row['first_median_ms']):>9} "
            f"{_seconds(row['first_p99_ms']):>9} | {_seconds(row['all_median_ms']):>8} "
            f"{_seconds(row['all_p99_ms']):>8} {row['undetected_by_all']:>6} | "
            f"{row['false_downs']:>5} {row['false_downs_per_member_hour']:>9.3f} "
            f"{row['crash_free_member_hours']:>8.1f}"
        )
    print("p99 is nearest-rank: below 100 runs it is the slowest run. A false down is one")
    print("(member, incarnation) declared down while alive; each member probes once a second,")
    print("so per probe it is the per-member-hour figure / 3600.")
    print()
    print(
        f"One member loses {LOSSY_LINK_LOSS:.0%} of what it sends; no other loss, no crash "
        f"({plan.lossy_link_ms // 1000} s)"
    )
    lossy_header = (
        f"{'nodes':>5} {'srcs':>4} | {'healthy downed':>14} {'/member-h':>9} | "
        f"{'lossy member downed':>19}"
    )
    print(lossy_header)
    print("-" * len(lossy_header))
    for row in lossy:
        print(
            f"{row['nodes']:>5} {row['required_sources']:>4} | "
            f"{row['healthy_declared_down']:>14} {row['healthy_down_per_member_hour']:>9.3f} | "
            f"{row['lossy_member_declared_down']:>19}"
        )
    print()
    print(f"wall time {wall_s:.1f} s")


def run(args: argparse.Namespace) -> int:
    plan = QUICK_PLAN if args.quick else FULL_PLAN
    if args.indirect_probes < 0:
        print("--indirect-probes must be 0 or more", file=sys.stderr)
        return 2
    started = time.perf_counter()
    grid = _grid(plan, args.seed, args.indirect_probes)
    results = _execute(grid, max(1, args.jobs))
    rows, lossy = _summarize(results)
    wall_s = time.perf_counter() - started
    if args.json:
        document = {
            "scenario": "failure-detection",
            "seed": args.seed,
            "quick": args.quick,
            "indirect_probe_count": args.indirect_probes,
            "plan": {
                "sizes": [
                    {
                        "nodes": size.node_count,
                        "runs": size.runs,
                        "crash_free_ms": size.crash_free_ms,
                        "detection_cap_ms": size.detection_cap_ms,
                    }
                    for size in plan.sizes
                ],
                "lossy_link_ms": plan.lossy_link_ms,
            },
            "detection": rows,
            "lossy_link": lossy,
            "wall_seconds": round(wall_s, 1),
        }
        print(json.dumps(document, indent=2))
    else:
        _print_text(plan, rows, lossy, args, wall_s)
    return 0
