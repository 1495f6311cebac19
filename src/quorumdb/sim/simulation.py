"""One seeded run: build the cluster, a safety phase with faults, healing, final reads.

The phases follow TigerBeetle's VOPR: during the safety phase the nemesis partitions,
crashes and skews while clients work; then the network heals and every node restarts,
and the cluster must answer a final read of every key within bounded virtual time.
Checkers judge the recorded history afterwards. Every phase has a time limit and the
whole run an event limit, so a livelock ends as a reported failure, not a hang.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from quorumdb.check.acknowledged_writes import check_acknowledged_writes
from quorumdb.core.cluster import local_members
from quorumdb.sim.cluster import SimCluster
from quorumdb.sim.events import EventLimitExceeded, EventQueue
from quorumdb.sim.faults import (
    Nemesis,
    ParameterOverrides,
    SimulationParameters,
    build_network,
    draw_parameters,
    node_clocks,
)
from quorumdb.sim.network import Network
from quorumdb.sim.trace import Trace
from quorumdb.sim.workload import Workload

SAFETY_TIME_MS_MAX = 60 * 60 * 1000
SETTLE_MS = 2_000
FINAL_TIME_MS_MAX = 10 * 60 * 1000
EVENT_COUNT_MAX = 5_000_000
BASE_PORT = 7000


@dataclass(frozen=True, slots=True)
class PhaseTimes:
    safety_end_ms: int
    healed_ms: int
    end_ms: int


class Simulation:
    def __init__(
        self, parameters: SimulationParameters, rng: random.Random, keep_trace: bool = False
    ) -> None:
        self.parameters = parameters
        self.rng = rng
        self.queue = EventQueue(EVENT_COUNT_MAX)
        self.trace = Trace(keep_lines=keep_trace)
        members = local_members(parameters.total_node_count, BASE_PORT)
        node_ids = [member.node_id for member in members]
        self.network = build_network(self.queue, rng, self.trace, parameters, node_ids)
        self.cluster = SimCluster(
            self.queue,
            rng,
            self.trace,
            self.network,
            members[: parameters.node_count],
            node_clocks(parameters),
            (parameters.fsync_ms_min, parameters.fsync_ms_max),
            spares=members[parameters.node_count :],
        )
        self.workload = Workload(
            self.queue, rng, self.trace, self.cluster, parameters.workload_shape()
        )
        self.nemesis = Nemesis(self.queue, rng, self.cluster, self.network, parameters)
        self.problems: list[str] = []
        self.phase_times: PhaseTimes | None = None

    @classmethod
    def from_seed(
        cls, seed: int, overrides: ParameterOverrides | None = None, keep_trace: bool = False
    ) -> Simulation:
        rng = random.Random(seed)
        return cls(draw_parameters(seed, rng, overrides), rng, keep_trace)

    def run(self) -> None:
        """Run every phase; limits reached become `problems`, never exceptions."""
        try:
            self._run_phases()
        except EventLimitExceeded as error:
            self.problems.append(f"event limit: {error}")

    def _run_phases(self) -> None:
        self.cluster.start_ticks()
        self.workload.start()
        self.nemesis.start()
        self._start_actors()
        safety_done = self.queue.run_until(SAFETY_TIME_MS_MAX, stop=lambda: self.workload.finished)
        safety_end_ms = self.queue.now_ms
        if not safety_done:
            self.problems.append(f"safety phase did not finish in {SAFETY_TIME_MS_MAX} ms")
            self.workload.stop_issuing()
        self.trace.record(self.queue.now_ms, "phase heal")
        self.nemesis.heal()
        self._after_heal()
        # Long enough for every request still open to time out and messages to land.
        settle_ms = SETTLE_MS + self.parameters.client_timeout_ms
        self.queue.run_until(self.queue.now_ms + settle_ms, stop=None)
        healed_ms = self.queue.now_ms
        self.trace.record(self.queue.now_ms, "phase final-reads")
        self.workload.start_final_reads()
        final_done = self.queue.run_until(
            self.queue.now_ms + FINAL_TIME_MS_MAX,
            stop=lambda: self.workload.final_reads_finished,
        )
        if not final_done:
            self.problems.append(f"final reads did not finish in {FINAL_TIME_MS_MAX} ms")
        self.phase_times = PhaseTimes(safety_end_ms, healed_ms, self.queue.now_ms)

    def _start_actors(self) -> None:
        """Start what else acts during the safety phase (a subclass's operator)."""

    def _after_heal(self) -> None:
        """Right after healing, before the settle time: a subclass's convergence wait."""

    def check(self) -> list[str]:
        """Every violation found: run problems first, then the history checkers."""
        violations = list(self.problems)
        violations.extend(f"wrong answer: {anomaly}" for anomaly in self.workload.anomalies)
        violations.extend(str(item) for item in check_acknowledged_writes(self.workload.history))
        return violations

    def digest(self) -> str:
        return self.trace.digest()

    def summary_lines(self) -> list[str]:
        cluster = self.cluster.stats
        return [
            *run_summary_lines(self.workload, self.network, self.cluster, self.nemesis),
            f"disk: persists={cluster.persists} syncs={cluster.syncs}",
            f"virtual-time-ms: {self.queue.now_ms} events: {self.queue.steps}"
            f" trace-lines: {self.trace.line_count}",
        ]


def run_summary_lines(
    workload: Workload,
    network: Network,
    cluster: SimCluster,
    nemesis: Nemesis[SimCluster],
    faults: str = "",
) -> list[str]:
    """What every data-path run reports: operations, messages, faults (`faults` adds
    scenario-specific counts to that line)."""
    counts = workload.outcome_counts
    sent = network.stats
    stats = cluster.stats
    return [
        f"operations: issued={workload.issued_count} ok={counts['ok']}"
        f" fail={counts['fail']} info={counts['info']} (counts include final reads)",
        f"messages: sent={sent.sent} delivered={sent.delivered}"
        f" dropped={sent.dropped} (loss={sent.dropped_by_loss}"
        f" cut={sent.dropped_by_cut}) duplicated={sent.duplicated}"
        f" lost-at-down-node={stats.dropped_at_down_node} refused={stats.refused}",
        f"faults: partitions={nemesis.stats.partitions} one-way={nemesis.stats.one_way_partitions}"
        f"{faults} crashes={stats.crashes} restarts={stats.restarts}"
        f" lost-unsynced-batches={stats.writes_lost}",
    ]
