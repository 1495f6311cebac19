"""The `quorumdb lab SCENARIO` verb: one sub-command per scenario module.

A scenario module exposes `DESCRIPTION`, `add_arguments(parser)` and
`run(args) -> int`. Every CLI start imports the scenario modules to build the
help, so they keep module-level imports light and import heavy things in `run`.
"""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType

# name -> module path; add a line here to register a scenario.
SCENARIOS: dict[str, str] = {
    "async-failover": "quorumdb.lab.async_failover",
    "failure-detection": "quorumdb.lab.failure_detection",
    "rebalance-cost": "quorumdb.lab.rebalance_cost",
    "statement-divergence": "quorumdb.lab.statement_divergence",
}


def _load(name: str) -> ModuleType:
    return importlib.import_module(SCENARIOS[name])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scenarios = parser.add_subparsers(dest="scenario", required=True, metavar="SCENARIO")
    for name in SCENARIOS:
        module = _load(name)
        description: str = module.DESCRIPTION
        sub = scenarios.add_parser(name, help=description, description=description)
        sub.add_argument("--json", action="store_true", help="print the results as JSON")
        module.add_arguments(sub)


def run(args: argparse.Namespace) -> int:
    result: int = _load(args.scenario).run(args)
    return result
