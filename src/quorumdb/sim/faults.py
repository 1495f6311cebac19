"""Swarm configuration and the fault injector (nemesis), all decided by the seed.

`draw_parameters` draws every field in one fixed order, whatever the overrides say,
so `--nodes 3` changes the cluster size of a seed without reshuffling its fault rates.
Each run thus explores a different corner: few or many nodes, lossy or clean links,
frequent crashes or none. The `Nemesis` turns the interval parameters into a schedule
of partitions, one-way partitions and crash-restarts during the safety phase.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypedDict, TypeVar

from quorumdb.sim.cluster import NodeClock
from quorumdb.sim.events import EventQueue
from quorumdb.sim.network import LinkProfile, Network
from quorumdb.sim.trace import Trace
from quorumdb.sim.workload import WorkloadShape

FAULT_KINDS = ("loss", "duplicate", "partition", "one-way", "crash", "skew")
NODE_COUNT_MAX = 7


class FaultListError(ValueError):
    """A `--faults` value naming an unknown fault kind."""


def parse_faults(text: str) -> tuple[str, ...]:
    """`all`, `none`, or a comma-separated subset of FAULT_KINDS, in canonical order."""
    if text == "all":
        return FAULT_KINDS
    if text == "none":
        return ()
    names = {name.strip() for name in text.split(",") if name.strip()}
    unknown = sorted(names - set(FAULT_KINDS))
    if unknown:
        known = ",".join(FAULT_KINDS)
        raise FaultListError(f"unknown fault kind {', '.join(unknown)} (known: {known})")
    return tuple(kind for kind in FAULT_KINDS if kind in names)


@dataclass(frozen=True, slots=True)
class ParameterOverrides:
    node_count: int | None = None
    faults: tuple[str, ...] | None = None
    operation_count: int | None = None
    # Replication scenario: each node's clock runs this many ppm fast or slow, the
    # direction drawn per node (the lease assumes rates at most 1 % apart: up to 5,000
    # ppm each way; beyond that a deposed leader may still read, sometimes stale).
    clock_drift_ppm: int | None = None


@dataclass(frozen=True, slots=True)
class SimulationParameters:
    """Everything that shapes one run; intervals of 0 mean the fault never happens."""

    seed: int
    node_count: int
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
    keys_per_writer: int
    shared_key_count: int
    think_ms_max: int
    client_timeout_ms: int
    client_latency_ms_max: int
    # Nodes running from the start that are not founding members: they join later (the
    # rebalance scenario's operator adds them). Clocks cover founders, then spares.
    spare_count: int = 0

    def __post_init__(self) -> None:
        assert 1 <= self.node_count
        assert 0 <= self.spare_count
        assert len(self.clock_offsets_ms) == self.total_node_count
        assert len(self.clock_drifts_ppm) == self.total_node_count
        assert 0 <= self.latency_ms_min <= self.latency_ms_max
        assert 0 <= self.fsync_ms_min <= self.fsync_ms_max
        assert 0.0 <= self.loss_probability < 1.0
        assert 0.0 <= self.duplicate_probability < 1.0

    @property
    def total_node_count(self) -> int:
        return self.node_count + self.spare_count

    def workload_shape(self) -> WorkloadShape:
        return WorkloadShape(
            client_count=self.client_count,
            operation_count=self.operation_count,
            keys_per_writer=self.keys_per_writer,
            shared_key_count=self.shared_key_count,
            think_ms_max=self.think_ms_max,
            client_timeout_ms=self.client_timeout_ms,
            client_latency_ms_max=self.client_latency_ms_max,
        )

    def describe(self) -> list[str]:
        offsets = ",".join(f"{offset:+d}" for offset in self.clock_offsets_ms)
        drifts = ",".join(f"{drift:+d}" for drift in self.clock_drifts_ppm)
        return [
            f"seed: {self.seed}",
            f"cluster: nodes={self.node_count}"
            + (f" spare={self.spare_count}" if self.spare_count else "")
            + f" clients={self.client_count}"
            f" operations={self.operation_count} faults={','.join(self.faults) or 'none'}",
            *describe_faults(self),
            f"clocks: offset_ms=[{offsets}] drift_ppm=[{drifts}]",
            f"disk: fsync_ms={self.fsync_ms_min}..{self.fsync_ms_max}",
            f"clients: keys_per_writer={self.keys_per_writer}"
            f" shared_keys={self.shared_key_count} think_ms_max={self.think_ms_max}"
            f" timeout_ms={self.client_timeout_ms}"
            f" latency_ms=1..{self.client_latency_ms_max}",
        ]


def draw_parameters(
    seed: int,
    rng: random.Random,
    overrides: ParameterOverrides | None = None,
    spare_count: int = 0,
    node_count_min: int = 1,
) -> SimulationParameters:
    """Draw a whole configuration from `rng` (seeded with `seed`), then apply overrides.

    `node_count_min` raises the founding node count (drawn or overridden) to at least
    that; `spare_count` nodes run besides the founders (each with its own clock)."""
    overrides = overrides or ParameterOverrides()
    node_count = rng.randint(1, NODE_COUNT_MAX)
    faults = tuple(kind for kind in FAULT_KINDS if rng.random() < 0.5)
    latency_ms_min = rng.randint(0, 5)
    fsync_ms_min = rng.randint(0, 3)
    drawn = SimulationParameters(
        seed=seed,
        node_count=NODE_COUNT_MAX,
        faults=FAULT_KINDS,
        latency_ms_min=latency_ms_min,
        latency_ms_max=latency_ms_min + rng.randint(0, 20),
        jitter_ms_mean=round(rng.uniform(0.5, 10.0), 2),
        loss_probability=round(rng.uniform(0.0, 0.10), 4),
        duplicate_probability=round(rng.uniform(0.0, 0.05), 4),
        partition_interval_ms=rng.randint(200, 3_000),
        partition_duration_ms_max=rng.randint(50, 2_000),
        one_way_interval_ms=rng.randint(200, 3_000),
        one_way_duration_ms_max=rng.randint(50, 2_000),
        crash_interval_ms=rng.randint(200, 3_000),
        restart_delay_ms_max=rng.randint(10, 2_000),
        clock_offsets_ms=tuple(rng.randint(-2_000, 2_000) for _ in range(NODE_COUNT_MAX)),
        clock_drifts_ppm=tuple(rng.randint(-500, 500) for _ in range(NODE_COUNT_MAX)),
        fsync_ms_min=fsync_ms_min,
        fsync_ms_max=fsync_ms_min + rng.randint(0, 10),
        client_count=rng.randint(1, 8),
        operation_count=rng.randint(100, 400),
        keys_per_writer=rng.randint(1, 3),
        shared_key_count=rng.randint(1, 3),
        think_ms_max=rng.randint(0, 200),
        client_timeout_ms=rng.randint(500, 8_000),
        client_latency_ms_max=rng.randint(1, 5),
    )
    if overrides.node_count is not None:
        if not 1 <= overrides.node_count:
            raise ValueError("a cluster needs at least one node")
        node_count = overrides.node_count
    if overrides.faults is not None:
        faults = overrides.faults
    operation_count = drawn.operation_count
    if overrides.operation_count is not None:
        operation_count = overrides.operation_count
    node_count = max(node_count, node_count_min)
    return _without_disabled(drawn, node_count, spare_count, faults, operation_count)


def _without_disabled(
    drawn: SimulationParameters,
    node_count: int,
    spare_count: int,
    faults: tuple[str, ...],
    operation_count: int,
) -> SimulationParameters:
    """Fit the drawn values to the chosen cluster size and zero the disabled faults."""

    return replace(
        drawn,
        node_count=node_count,
        spare_count=spare_count,
        faults=faults,
        operation_count=operation_count,
        **disabled_faults_zeroed(drawn, faults, node_count + spare_count),
    )


class FaultSchedule(Protocol):
    """The parameters a nemesis reads: how often each fault strikes, how long it lasts."""

    @property
    def partition_interval_ms(self) -> int: ...
    @property
    def partition_duration_ms_max(self) -> int: ...
    @property
    def one_way_interval_ms(self) -> int: ...
    @property
    def one_way_duration_ms_max(self) -> int: ...
    @property
    def crash_interval_ms(self) -> int: ...
    @property
    def restart_delay_ms_max(self) -> int: ...


class FaultParameters(FaultSchedule, Protocol):
    """The drawn fields both scenarios share: network, fault schedule, clocks."""

    @property
    def latency_ms_min(self) -> int: ...
    @property
    def latency_ms_max(self) -> int: ...
    @property
    def jitter_ms_mean(self) -> float: ...
    @property
    def loss_probability(self) -> float: ...
    @property
    def duplicate_probability(self) -> float: ...
    @property
    def clock_offsets_ms(self) -> tuple[int, ...]: ...
    @property
    def clock_drifts_ppm(self) -> tuple[int, ...]: ...


class FaultFields(TypedDict):
    loss_probability: float
    duplicate_probability: float
    partition_interval_ms: int
    one_way_interval_ms: int
    crash_interval_ms: int
    clock_offsets_ms: tuple[int, ...]
    clock_drifts_ppm: tuple[int, ...]


def disabled_faults_zeroed(
    drawn: FaultParameters, faults: tuple[str, ...], node_count: int
) -> FaultFields:
    """The fault fields with every kind not in `faults` switched off, clocks per node."""

    def per_node(values: tuple[int, ...]) -> tuple[int, ...]:
        if "skew" not in faults:
            return (0,) * node_count
        return tuple(values[index % len(values)] for index in range(node_count))

    enabled = set(faults)
    return FaultFields(
        loss_probability=drawn.loss_probability if "loss" in enabled else 0.0,
        duplicate_probability=drawn.duplicate_probability if "duplicate" in enabled else 0.0,
        partition_interval_ms=drawn.partition_interval_ms if "partition" in enabled else 0,
        one_way_interval_ms=drawn.one_way_interval_ms if "one-way" in enabled else 0,
        crash_interval_ms=drawn.crash_interval_ms if "crash" in enabled else 0,
        clock_offsets_ms=per_node(drawn.clock_offsets_ms),
        clock_drifts_ppm=per_node(drawn.clock_drifts_ppm),
    )


def describe_faults(parameters: FaultParameters) -> list[str]:
    """The network, partition and crash lines of a scenario's description."""

    def every(interval_ms: int, duration_ms_max: int) -> str:
        if interval_ms == 0:
            return "never"
        return f"every~{interval_ms}ms for<={duration_ms_max}ms"

    return [
        f"network: latency_ms={parameters.latency_ms_min}..{parameters.latency_ms_max}"
        f" jitter_ms_mean={parameters.jitter_ms_mean} loss={parameters.loss_probability}"
        f" duplicate={parameters.duplicate_probability}",
        "partitions: full"
        f" {every(parameters.partition_interval_ms, parameters.partition_duration_ms_max)}"
        f", one-way {every(parameters.one_way_interval_ms, parameters.one_way_duration_ms_max)}",
        f"crashes: {every(parameters.crash_interval_ms, parameters.restart_delay_ms_max)} down",
    ]


def build_network(
    queue: EventQueue,
    rng: random.Random,
    trace: Trace,
    parameters: FaultParameters,
    node_ids: list[str],
) -> Network:
    """The network with a latency drawn for each direction of each link."""
    low, high = parameters.latency_ms_min, parameters.latency_ms_max
    profiles = {
        (source, destination): LinkProfile(rng.randint(low, high), parameters.jitter_ms_mean)
        for source in node_ids
        for destination in node_ids
        if source != destination
    }
    return Network(
        queue,
        rng,
        trace,
        profiles,
        parameters.loss_probability,
        parameters.duplicate_probability,
    )


def node_clocks(parameters: FaultParameters) -> list[NodeClock]:
    return [
        NodeClock(offset, drift)
        for offset, drift in zip(
            parameters.clock_offsets_ms, parameters.clock_drifts_ppm, strict=True
        )
    ]


class NodeLife(Protocol):
    @property
    def up(self) -> bool: ...
    @property
    def incarnation(self) -> int: ...


class FaultTarget(Protocol):
    """The simulated cluster as the nemesis sees it (data nodes or a Raft group)."""

    on_sync_scheduled: Callable[[str, int], None] | None

    @property
    def nodes(self) -> Mapping[str, NodeLife]: ...
    @property
    def node_ids(self) -> list[str]: ...
    def up_node_ids(self) -> list[str]: ...
    def down_node_ids(self) -> list[str]: ...
    def crash(self, node_id: str) -> None: ...
    def restart(self, node_id: str) -> None: ...


ClusterT = TypeVar("ClusterT", bound=FaultTarget)


@dataclass(slots=True)
class NemesisStats:
    partitions: int = 0
    one_way_partitions: int = 0
    crashes: int = 0


class Nemesis(Generic[ClusterT]):
    """Injects partitions, one-way partitions and crash-restarts while it is active."""

    def __init__(
        self,
        queue: EventQueue,
        rng: random.Random,
        cluster: ClusterT,
        network: Network,
        parameters: FaultSchedule,
    ) -> None:
        self.queue = queue
        self.rng = rng
        self.cluster = cluster
        self.network = network
        self.parameters = parameters
        self.active = False
        self.stats = NemesisStats()
        self._armed_node_id: str | None = None
        cluster.on_sync_scheduled = self._on_sync_scheduled

    def start(self) -> None:
        self.active = True
        schedule: list[tuple[int, Callable[[], None]]] = [
            (self.parameters.partition_interval_ms, self._partition),
            (self.parameters.one_way_interval_ms, self._one_way),
            (self.parameters.crash_interval_ms, self._crash),
        ]
        for interval_ms, action in schedule:
            if interval_ms > 0:
                self._schedule(interval_ms, action)

    def heal(self) -> None:
        """End the safety phase: no more faults, every link whole, every node up."""
        self.active = False
        self._armed_node_id = None
        self.network.heal_all()
        self.network.set_rates(0.0, 0.0)
        for node_id in self.cluster.down_node_ids():
            self.cluster.restart(node_id)

    def _schedule(self, interval_ms: int, action: Callable[[], None]) -> None:
        delay_ms = 1 + int(self.rng.expovariate(1.0 / interval_ms))
        self.queue.schedule_in(delay_ms, functools.partial(self._fire, interval_ms, action))

    def _fire(self, interval_ms: int, action: Callable[[], None]) -> None:
        if not self.active:
            return
        action()
        self._schedule(interval_ms, action)

    def _partition(self) -> None:
        node_ids = self.cluster.node_ids
        if len(node_ids) < 2:
            return
        self.rng.shuffle(node_ids)
        split = self.rng.randint(1, len(node_ids) - 1)
        cut_id = self.network.partition([sorted(node_ids[:split]), sorted(node_ids[split:])])
        self.stats.partitions += 1
        duration_ms = self.rng.randint(1, self.parameters.partition_duration_ms_max)
        self.queue.schedule_in(duration_ms, functools.partial(self.network.heal, cut_id))

    def _one_way(self) -> None:
        node_ids = self.cluster.node_ids
        if len(node_ids) < 2:
            return
        source, destination = self.rng.sample(node_ids, 2)
        cut_id = self.network.cut_one_way(source, destination)
        self.stats.one_way_partitions += 1
        duration_ms = self.rng.randint(1, self.parameters.one_way_duration_ms_max)
        self.queue.schedule_in(duration_ms, functools.partial(self.network.heal, cut_id))

    def _crash(self) -> None:
        """Crash a node now, or (half the time) inside its next unsynced-write window."""
        up_node_ids = self.cluster.up_node_ids()
        if not up_node_ids:
            return
        node_id = self._crash_target(up_node_ids)
        if self.rng.random() < 0.5:
            self._armed_node_id = node_id
            return
        self._crash_now(node_id)

    def _crash_target(self, up_node_ids: list[str]) -> str:
        return self.rng.choice(up_node_ids)

    def _on_sync_scheduled(self, node_id: str, delay_ms: int) -> None:
        if node_id != self._armed_node_id or delay_ms < 1:
            return
        self._armed_node_id = None
        incarnation = self.cluster.nodes[node_id].incarnation
        crash_in_ms = self.rng.randint(0, delay_ms - 1)
        self.queue.schedule_in(
            crash_in_ms, functools.partial(self._crash_if_alive, node_id, incarnation)
        )

    def _crash_if_alive(self, node_id: str, incarnation: int) -> None:
        sim_node = self.cluster.nodes[node_id]
        if self.active and sim_node.up and sim_node.incarnation == incarnation:
            self._crash_now(node_id)

    def _crash_now(self, node_id: str) -> None:
        self.cluster.crash(node_id)
        self.stats.crashes += 1
        incarnation = self.cluster.nodes[node_id].incarnation
        delay_ms = self.rng.randint(1, self.parameters.restart_delay_ms_max)
        self.queue.schedule_in(delay_ms, functools.partial(self._restart, node_id, incarnation))

    def _restart(self, node_id: str, incarnation: int) -> None:
        sim_node = self.cluster.nodes[node_id]
        if sim_node.up or sim_node.incarnation != incarnation:
            return  # already restarted by the healing phase
        self.cluster.restart(node_id)
