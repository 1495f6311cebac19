"""Numbers for docs/controller.md, measured in the deterministic simulator.

1. Election time after a leader crash, in virtual ms, over many seeds (3 and 5
   voters, default timing: heartbeat 50 ms, election timeout 300..600 ms, links
   1..5 ms plus jitter, fsync 0..3 ms).
2. Wall-clock throughput: metadata proposals committed per second of real time by a
   3-voter group in the simulator (one process; it includes the simulated network,
   disks and the invariant checks after every step, so it bounds the core's cost from
   below, it is not a network benchmark).

Run: PYTHONPATH=src python scripts/controller_measurements.py
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from dataclasses import replace

from quorumdb.sim.controller_sim import (
    ControllerParameters,
    ControllerSimulation,
    controller_rng,
    draw_controller_parameters,
)
from quorumdb.sim.faults import ParameterOverrides


def quiet_parameters(
    seed: int, voters: int, operations: int, clients: int
) -> tuple[ControllerParameters, random.Random]:
    rng = controller_rng(seed)
    drawn = draw_controller_parameters(seed, rng, ParameterOverrides(voters, (), operations))
    parameters = replace(
        drawn,
        spare_count=0,
        latency_ms_min=1,
        latency_ms_max=5,
        jitter_ms_mean=1.0,
        fsync_ms_min=0,
        fsync_ms_max=3,
        heartbeat_interval_ms=50,
        election_timeout_ms_min=300,
        snapshot_threshold_entries=64,
        membership_interval_ms=0,
        client_count=clients,
        think_ms_max=0,
        client_timeout_ms=2_000,
        clock_offsets_ms=(0,) * voters,
        clock_drifts_ppm=(0,) * voters,
    )
    return parameters, rng


def leader_of(simulation: ControllerSimulation) -> str | None:
    for node_id in simulation.cluster.up_node_ids():
        raft = simulation.cluster.raft(node_id)
        if raft is not None and raft.is_leader:
            return node_id
    return None


def failover_ms(seed: int, voters: int) -> int:
    parameters, rng = quiet_parameters(seed, voters, 0, 1)
    simulation = ControllerSimulation(parameters, rng)
    simulation.cluster.start_ticks()
    simulation._run_until(10_000, lambda: leader_of(simulation) is not None)
    simulation._run_until(1_000, None)  # steady state
    old = leader_of(simulation)
    assert old is not None
    simulation.cluster.crash(old)
    crashed_ms = simulation.queue.now_ms
    found = simulation._run_until(20_000, lambda: leader_of(simulation) not in (None, old))
    assert found, f"seed {seed}: no new leader"
    return simulation.queue.now_ms - crashed_ms


def percentile(values: list[int], fraction: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> int:
    seeds = range(1, 201)
    for voters in (3, 5):
        times = [failover_ms(seed, voters) for seed in seeds]
        print(
            f"election after leader crash, {voters} voters, {len(times)} seeds:"
            f" median {statistics.median(times):.0f} ms, p99 {percentile(times, 0.99)} ms,"
            f" max {max(times)} ms (virtual)"
        )
    rates = []
    for seed in (1, 2, 3):
        parameters, rng = quiet_parameters(seed, 3, 3_000, 16)
        simulation = ControllerSimulation(parameters, rng)
        started = time.perf_counter()
        simulation.run()
        elapsed_s = time.perf_counter() - started
        assert simulation.check() == [], seed
        writes = sum(
            1
            for operation in simulation.clients.operations
            if operation.function != "read" and operation.completed_ms is not None
        )
        rates.append(writes / elapsed_s)
        print(f"seed {seed}: {writes} committed writes in {elapsed_s:.2f} s wall")
    print(
        "3 voters, wall-clock committed metadata writes/s in the simulator:"
        f" median {statistics.median(rates):.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
