"""The rebalance scenario: the data scenario plus a spare node that joins, then leaves.

One seed draws the data scenario's parameters (founders: at least two) and the
operator's; the spare runs from the start as a node that joins later, inside the
network, the clocks and the nemesis (it may crash; a restart builds it as a joiner
again). During the safety phase the operator grows the cluster by the spare and shrinks
it back while the clients keep working: they keep issuing past their operation count
until the operator is done, for at most `LOAD_TIME_MS_MAX` of virtual time. After
healing, both plans must be done and the spare marked left within
`HEALED_REBALANCE_MS_MAX`; then the final reads run. The checkers are the data
scenario's (no acknowledged write lost, every read right) plus those end-state facts.
"""

from __future__ import annotations

import random

from quorumdb.core.cluster import local_members
from quorumdb.sim.faults import ParameterOverrides, SimulationParameters, draw_parameters
from quorumdb.sim.rebalance_operator import (
    OperatorParameters,
    RebalanceOperator,
    draw_operator_parameters,
)
from quorumdb.sim.simulation import BASE_PORT, Simulation

FOUNDER_COUNT_MIN = 2
SPARE_COUNT = 1
LOAD_TIME_MS_MAX = 240_000
HEALED_REBALANCE_MS_MAX = 60_000


def rebalance_rng(seed: int) -> random.Random:
    """The rebalance scenario's own stream, independent of the data scenario's."""
    return random.Random(f"rebalance:{seed}")


def draw_rebalance_parameters(
    seed: int, rng: random.Random, overrides: ParameterOverrides | None = None
) -> tuple[SimulationParameters, OperatorParameters]:
    parameters = draw_parameters(seed, rng, overrides, SPARE_COUNT, FOUNDER_COUNT_MIN)
    return parameters, draw_operator_parameters(rng)


def describe_rebalance(seed: int, overrides: ParameterOverrides | None = None) -> list[str]:
    parameters, operator = draw_rebalance_parameters(seed, rebalance_rng(seed), overrides)
    lines = parameters.describe()
    lines[0] += " scenario: rebalance"
    return [*lines, operator.describe()]


class RebalanceSimulation(Simulation):
    def __init__(
        self,
        parameters: SimulationParameters,
        operator_parameters: OperatorParameters,
        rng: random.Random,
        keep_trace: bool = False,
    ) -> None:
        assert parameters.spare_count == SPARE_COUNT
        super().__init__(parameters, rng, keep_trace)
        spare = local_members(parameters.total_node_count, BASE_PORT)[parameters.node_count]
        self.operator = RebalanceOperator(
            self.queue, rng, self.trace, self.cluster, spare, operator_parameters
        )
        self.heal_ms: int | None = None

    @classmethod
    def from_rebalance_seed(
        cls, seed: int, overrides: ParameterOverrides | None = None, keep_trace: bool = False
    ) -> RebalanceSimulation:
        rng = rebalance_rng(seed)
        parameters, operator_parameters = draw_rebalance_parameters(seed, rng, overrides)
        return cls(parameters, operator_parameters, rng, keep_trace)

    @property
    def spare_id(self) -> str:
        return self.operator.spare.node_id

    def _start_actors(self) -> None:
        self.operator.start()
        self.workload.keep_issuing = self._keep_load

    def _keep_load(self) -> bool:
        return not self.operator.finished and self.queue.now_ms < LOAD_TIME_MS_MAX

    def _after_heal(self) -> None:
        """Without faults, the operator must finish both moves in bounded time."""
        self.heal_ms = self.queue.now_ms
        deadline_ms = self.queue.now_ms + HEALED_REBALANCE_MS_MAX
        self.queue.run_until(deadline_ms, stop=self._converged)
        problem = self._unfinished()
        if problem is not None:
            self.problems.append(
                f"rebalance not finished {HEALED_REBALANCE_MS_MAX} ms after healing: {problem}"
            )

    def _converged(self) -> bool:
        return self.operator.finished and self._unfinished() is None

    def _unfinished(self) -> str | None:
        """What the end state lacks: both plans done and the spare left, on every node."""
        for node_id, sim_node in sorted(self.cluster.nodes.items()):
            node = sim_node.node
            if node is None or node_id == self.spare_id:
                continue  # a node that left stops hearing the log, so it is not asked
            metadata = node.controller.metadata
            spare = metadata.members.get(self.spare_id)
            plan = metadata.plan
            plan_state = "none" if plan is None else f"{plan.plan_id}:{plan.state}"
            spare_state = "absent" if spare is None else spare.state
            if spare_state != "left" or plan is None or plan.state != "done":
                return (
                    f"{node_id} sees plan {plan_state} and the spare {spare_state};"
                    f" the operator is at step {self.operator.current_step}"
                )
        return None

    @property
    def moves_in_safety(self) -> int:
        """Moves that finished while the faults were on."""
        heal_ms = self.heal_ms if self.heal_ms is not None else self.queue.now_ms
        return sum(1 for move in self.operator.stats.moves if move.finished_ms <= heal_ms)

    def rebalance_line(self) -> str:
        moves = self.operator.stats.moves
        shown = " ".join(
            f"plan{move.plan_id}:{move.transfers_done}/{move.transfer_count}@{move.finished_ms}ms"
            for move in moves
        )
        return (
            f"rebalance: plans-done={len(moves)}"
            f" transfers-done={sum(move.transfers_done for move in moves)}"
            f" copied-bytes={sum(move.copied_bytes for move in moves)}"
            f" in-safety-phase={self.moves_in_safety}" + (f" ({shown})" if shown else "")
        )

    def summary_lines(self) -> list[str]:
        return [*super().summary_lines(), self.rebalance_line(), self.operator.summary_line()]
