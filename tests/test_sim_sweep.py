"""A sweep of seeds with every fault kind: the acknowledged-writes checker must hold for all."""

from __future__ import annotations

from quorumdb.sim.faults import ParameterOverrides, parse_faults
from quorumdb.sim.simulation import Simulation

SEEDS = range(1000, 1300)


def test_three_hundred_seeds_with_all_faults_have_no_violation() -> None:
    failing = []
    for seed in SEEDS:
        simulation = Simulation.from_seed(seed, ParameterOverrides(faults=parse_faults("all")))
        simulation.run()
        if simulation.check():
            failing.append(seed)
    replay = [f"quorumdb sim --seed {seed} --faults all --check --trace" for seed in failing]
    assert failing == [], "\n".join(replay)


def test_duplicated_forwards_run_once() -> None:
    """Seed 1441 once lost an acknowledged put to a duplicated, delayed forward."""
    simulation = Simulation.from_seed(1441, ParameterOverrides(faults=parse_faults("all")))
    simulation.run()
    assert simulation.check() == []
