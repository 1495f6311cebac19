"""The controller scenario: a Raft group of 1, 3 or 5 voters under faults, from one seed.

One seed draws everything - group size, a spare node for membership changes, network
latency, loss, duplication, partitions (full and one-way), crashes (half of them
aimed inside a node's unsynced-write window), clock skew and drift, client load - and
prints it. Phases, as in `simulation.py`: a safety phase with faults while clients
put, compare-and-set and read registers and an operator changes membership; then
every fault heals and every node restarts, and the group must serve a final read of
every key and bring every member up to the leader's commit index in bounded time.
Raft's invariants are checked after every step; the history's linearizability at the
end.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from quorumdb.check.linearizability import RegisterModel, Verdict, check_per_key
from quorumdb.check.raft_invariants import RaftInvariantChecker
from quorumdb.core.controller.raft_config import RaftConfig
from quorumdb.sim.controller_cluster import ControllerCluster
from quorumdb.sim.controller_workload import ClientShape, MembershipOperator, RegisterClients
from quorumdb.sim.events import EventLimitExceeded, EventQueue
from quorumdb.sim.faults import (
    FAULT_KINDS,
    Nemesis,
    ParameterOverrides,
    build_network,
    describe_faults,
    disabled_faults_zeroed,
    node_clocks,
)
from quorumdb.sim.trace import Trace

VOTER_COUNTS = (1, 3, 5)
SAFETY_TIME_MS_MAX = 120_000
SETTLE_MS = 1_000
FINAL_TIME_MS_MAX = 30_000
CONVERGE_TIME_MS_MAX = 10_000
EVENT_COUNT_MAX = 2_000_000
LINEARIZABILITY_STEP_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class ControllerParameters:
    """Everything that shapes one controller run; intervals of 0 mean never."""

    seed: int
    voter_count: int
    spare_count: int
    faults: tuple[str, ...]
    latency_ms_min: int
    latency_ms_max: int
    jitter_ms_mean: float
    loss_probability: float
    duplicate_probability: float
    partition_interval_ms: int
    partition_duration_ms_max: int
    one_way_interval_ms: int
    one_way_duration_ms_max: int
    crash_interval_ms: int
    restart_delay_ms_max: int
    clock_offsets_ms: tuple[int, ...]
    clock_drifts_ppm: tuple[int, ...]
    fsync_ms_min: int
    fsync_ms_max: int
    client_count: int
    operation_count: int
    key_count: int
    think_ms_max: int
    client_timeout_ms: int
    membership_interval_ms: int
    heartbeat_interval_ms: int
    election_timeout_ms_min: int
    snapshot_threshold_entries: int

    @property
    def node_count(self) -> int:
        return self.voter_count + self.spare_count

    def raft_config(self) -> RaftConfig:
        return RaftConfig(
            election_timeout_ms_min=self.election_timeout_ms_min,
            election_timeout_ms_max=2 * self.election_timeout_ms_min,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            snapshot_threshold_entries=self.snapshot_threshold_entries,
            entries_per_message_max=16,
        )

    def client_shape(self) -> ClientShape:
        return ClientShape(
            self.client_count,
            self.operation_count,
            self.key_count,
            self.think_ms_max,
            self.client_timeout_ms,
        )

    def describe(self) -> list[str]:
        membership = (
            f"every~{self.membership_interval_ms}ms" if self.membership_interval_ms else "never"
        )
        return [
            f"seed: {self.seed} scenario: controller",
            f"raft: voters={self.voter_count} spare={self.spare_count}"
            f" heartbeat_ms={self.heartbeat_interval_ms}"
            f" election_timeout_ms={self.election_timeout_ms_min}.."
            f"{2 * self.election_timeout_ms_min}"
            f" snapshot_every={self.snapshot_threshold_entries} membership-changes {membership}",
            f"faults: {','.join(self.faults) or 'none'}",
            *describe_faults(self),
            f"clocks: offset_ms={list(self.clock_offsets_ms)}"
            f" drift_ppm={list(self.clock_drifts_ppm)}",
            f"disk: fsync_ms={self.fsync_ms_min}..{self.fsync_ms_max}",
            f"clients: {self.client_count} operations={self.operation_count}"
            f" keys={self.key_count} think_ms_max={self.think_ms_max}"
            f" timeout_ms={self.client_timeout_ms}",
        ]


def controller_rng(seed: int) -> random.Random:
    """The controller scenario's own stream, independent of the data scenario's."""
    return random.Random(f"controller:{seed}")


def draw_controller_parameters(
    seed: int, rng: random.Random, overrides: ParameterOverrides | None = None
) -> ControllerParameters:
    """Draw every field in one fixed order, then apply the overrides."""
    overrides = overrides or ParameterOverrides()
    voter_count = rng.choice(VOTER_COUNTS)
    spare_count = rng.randint(0, 1)
    faults = tuple(kind for kind in FAULT_KINDS if rng.random() < 0.5)
    node_count_max = max(VOTER_COUNTS) + 1
    latency_ms_min = rng.randint(1, 5)
    fsync_ms_min = rng.randint(0, 3)
    drawn = ControllerParameters(
        seed=seed,
        voter_count=voter_count,
        spare_count=spare_count,
        faults=faults,
        latency_ms_min=latency_ms_min,
        latency_ms_max=latency_ms_min + rng.randint(0, 15),
        jitter_ms_mean=round(rng.uniform(0.5, 8.0), 2),
        loss_probability=round(rng.uniform(0.0, 0.15), 4),
        duplicate_probability=round(rng.uniform(0.0, 0.08), 4),
        partition_interval_ms=rng.randint(200, 2_000),
        partition_duration_ms_max=rng.randint(50, 1_500),
        one_way_interval_ms=rng.randint(200, 2_000),
        one_way_duration_ms_max=rng.randint(50, 1_500),
        crash_interval_ms=rng.randint(200, 2_000),
        restart_delay_ms_max=rng.randint(10, 1_500),
        clock_offsets_ms=tuple(rng.randint(-2_000, 2_000) for _ in range(node_count_max)),
        clock_drifts_ppm=tuple(rng.randint(-20_000, 20_000) for _ in range(node_count_max)),
        fsync_ms_min=fsync_ms_min,
        fsync_ms_max=fsync_ms_min + rng.randint(0, 8),
        client_count=rng.randint(1, 5),
        operation_count=rng.randint(60, 200),
        key_count=rng.randint(1, 3),
        think_ms_max=rng.randint(0, 150),
        client_timeout_ms=rng.randint(300, 2_000),
        membership_interval_ms=rng.choice((0, rng.randint(100, 800))),
        heartbeat_interval_ms=rng.randint(20, 60),
        election_timeout_ms_min=rng.randint(150, 400),
        snapshot_threshold_entries=rng.randint(4, 40),
    )
    if overrides.node_count in VOTER_COUNTS:
        voter_count = overrides.node_count
    if overrides.faults is not None:
        faults = overrides.faults
    operation_count = drawn.operation_count
    if overrides.operation_count is not None:
        operation_count = overrides.operation_count
    return replace(
        drawn,
        voter_count=voter_count,
        faults=faults,
        operation_count=operation_count,
        election_timeout_ms_min=max(drawn.election_timeout_ms_min, 3 * drawn.heartbeat_interval_ms),
        **disabled_faults_zeroed(drawn, faults, voter_count + spare_count),
    )


class ControllerNemesis(Nemesis[ControllerCluster]):
    """The data scenario's nemesis, but the leader is a favourite crash target: half the
    crashes hit it."""

    def _crash_target(self, up_node_ids: list[str]) -> str:
        leaders = [
            node_id
            for node_id in up_node_ids
            if (raft := self.cluster.raft(node_id)) and raft.is_leader
        ]
        if leaders and self.rng.random() < 0.5:
            return self.rng.choice(leaders)
        return self.rng.choice(up_node_ids)


class ControllerSimulation:
    def __init__(
        self, parameters: ControllerParameters, rng: random.Random, keep_trace: bool = False
    ) -> None:
        self.parameters = parameters
        self.rng = rng
        self.queue = EventQueue(EVENT_COUNT_MAX)
        self.trace = Trace(keep_lines=keep_trace)
        node_ids = [f"c{index + 1}" for index in range(parameters.node_count)]
        self.voter_ids = tuple(node_ids[: parameters.voter_count])
        self.network = build_network(self.queue, rng, self.trace, parameters, node_ids)
        self.checker = RaftInvariantChecker()
        self.cluster = ControllerCluster(
            self.queue,
            rng,
            self.trace,
            self.network,
            node_ids,
            self.voter_ids,
            parameters.raft_config(),
            node_clocks(parameters),
            (parameters.fsync_ms_min, parameters.fsync_ms_max),
            self.checker,
        )
        self.clients = RegisterClients(
            self.queue, rng, self.trace, self.cluster, parameters.client_shape()
        )
        self.operator = MembershipOperator(
            self.queue,
            rng,
            self.trace,
            self.cluster,
            self.clients,
            parameters.membership_interval_ms,
        )
        self.nemesis = ControllerNemesis(self.queue, rng, self.cluster, self.network, parameters)
        self.problems: list[str] = []
        self.linearizability_unknown_keys: list[str] = []

    @classmethod
    def from_seed(
        cls, seed: int, overrides: ParameterOverrides | None = None, keep_trace: bool = False
    ) -> ControllerSimulation:
        rng = controller_rng(seed)
        return cls(draw_controller_parameters(seed, rng, overrides), rng, keep_trace)

    # --- phases ---------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run_phases()
        except EventLimitExceeded as error:
            self.problems.append(f"event limit: {error}")
        except AssertionError as error:
            # A node's own assertion (say, about to overwrite a committed entry) is a
            # finding of this seed, to report and replay, not a crash of the simulator.
            self.problems.append(f"assertion failed at {self.queue.now_ms} ms: {error}")

    def _run_until(self, delay_ms: int, done: Callable[[], bool] | None) -> bool:
        def stop() -> bool:
            self.cluster.after_step()  # the invariants, after every step
            return done is not None and done()

        return self.queue.run_until(self.queue.now_ms + delay_ms, stop)

    def _run_phases(self) -> None:
        self.cluster.start_ticks()
        self.clients.start()
        self.operator.start()
        self.nemesis.start()
        if not self._run_until(SAFETY_TIME_MS_MAX, lambda: self.clients.finished):
            self.problems.append(f"safety phase did not finish in {SAFETY_TIME_MS_MAX} ms")
            self.clients.issuing = False
        self.trace.record(self.queue.now_ms, "phase heal")
        self.operator.stop()
        self.nemesis.heal()
        self._run_until(SETTLE_MS + self.parameters.client_timeout_ms, None)
        self.trace.record(self.queue.now_ms, "phase final-reads")
        self.clients.read_every_key()
        if not self._run_until(FINAL_TIME_MS_MAX, lambda: self.clients.final_reads_finished):
            self.problems.append(f"liveness: final reads unanswered after {FINAL_TIME_MS_MAX} ms")
            return
        if not self._run_until(CONVERGE_TIME_MS_MAX, self._converged):
            self.problems.append(f"liveness: members did not converge in {CONVERGE_TIME_MS_MAX} ms")

    def _converged(self) -> bool:
        """Every member has applied everything the current leader committed."""
        leaders = [
            raft
            for node_id in self.cluster.up_node_ids()
            if (raft := self.cluster.raft(node_id)) is not None and raft.is_leader
        ]
        if not leaders:
            return False
        leader = max(leaders, key=lambda raft: raft.current_term)
        for node_id in sorted(leader.configuration.members):
            raft = self.cluster.raft(node_id)
            if raft is None or raft.applied_index < leader.commit_index:
                return False
        return True

    # --- verdicts -------------------------------------------------------------------------

    def check(self) -> list[str]:
        violations = list(self.problems)
        violations.extend(f"raft invariant: {text}" for text in self.checker.violations)
        hidden = self.checker.violation_count - len(self.checker.violations)
        if hidden > 0:
            violations.append(f"raft invariant: {hidden} more")
        results = check_per_key(
            self.clients.operations, lambda key: RegisterModel(), LINEARIZABILITY_STEP_LIMIT
        )
        self.linearizability_unknown_keys = []
        for key, result in results.items():
            if result.verdict is Verdict.VIOLATION:
                violations.append(f"not linearizable: key {key}: {result.detail}")
            elif result.verdict is Verdict.UNKNOWN:
                self.linearizability_unknown_keys.append(key)
        return violations

    def digest(self) -> str:
        return self.trace.digest()

    def summary_lines(self) -> list[str]:
        counts = self.clients.counts
        network = self.network.stats
        cluster = self.cluster.stats
        operator = self.operator.counts
        unknown = ",".join(self.linearizability_unknown_keys) or "none"
        return [
            f"operations: issued={self.clients.issued_count} ok={counts.ok}"
            f" fail={counts.fail} info={counts.info} (counts include final reads)",
            f"membership: requested={operator.requested} committed={operator.committed}"
            f" refused={operator.refused}",
            f"messages: sent={network.sent} delivered={network.delivered}"
            f" dropped={network.dropped} duplicated={network.duplicated}"
            f" lost-at-down-node={cluster.dropped_at_down_node}",
            f"faults: partitions={self.nemesis.stats.partitions}"
            f" one-way={self.nemesis.stats.one_way_partitions}"
            f" crashes={cluster.crashes} restarts={cluster.restarts}"
            f" lost-unsynced-batches={cluster.lost_batches}",
            f"raft: leaders-by-term={len(self.checker.leaders)}"
            f" committed-max={self.checker.commit_index_max}"
            f" observations={self.checker.observations}"
            f" linearizability-unknown-keys={unknown}",
            f"virtual-time-ms: {self.queue.now_ms} events: {self.queue.steps}"
            f" trace-lines: {self.trace.line_count}",
        ]
