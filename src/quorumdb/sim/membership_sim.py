"""SWIM membership at scale in virtual time: many members, a lossy network, one crash.

A lean network of its own (the data cluster's `network.py` traces every message,
too slow for a thousand members): each datagram draws, from the run's one
`random.Random` and always in the same order, one loss roll and one delay (a base
latency plus exponential jitter, capped). Members are woken exactly when they have
work (`Membership.next_wakeup_ms`), not on a fixed tick, so idle members cost nothing.

What is measured, in virtual milliseconds:
- detection: from the crash to the first member declaring the crashed one down, and
  to the moment every live member holds it down;
- false positives: `down` declarations about members that were not crashed, counted
  once per (member, incarnation) however many members hold them.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from quorumdb.core.membership import (
    FactLearned,
    MemberChanged,
    Membership,
    MembershipConfig,
    MembershipEffect,
    MembershipMessage,
    MemberState,
    MemberUpdate,
    Send,
    SendToAddress,
)
from quorumdb.sim.events import EventQueue

JITTER_MEANS_MAX = 20
"""Jitter beyond this many means is cut off, so every delay has a maximum."""


@dataclass(frozen=True, slots=True)
class NetworkModel:
    latency_ms_base: int = 2
    jitter_ms_mean: float = 3.0
    loss_probability: float = 0.0

    def __post_init__(self) -> None:
        assert self.latency_ms_base >= 0
        assert self.jitter_ms_mean > 0
        assert 0.0 <= self.loss_probability <= 1.0


@dataclass(slots=True)
class TrafficStatistics:
    sent: int = 0
    lost: int = 0
    delivered_to_crashed: int = 0


def node_name(index: int) -> str:
    return f"n{index:04d}"


def node_address(node_id: str) -> str:
    return f"sim://{node_id}"


MemberChangedObserver = Callable[[int, str, MemberChanged], None]


class MembershipCluster:
    """Members, the network between them, crashes; the driver of the pure core."""

    def __init__(
        self,
        seed: int,
        node_count: int,
        network: NetworkModel,
        config: MembershipConfig,
        steps_max: int = 200_000_000,
    ) -> None:
        assert node_count >= 1
        self.seed = seed
        self.network = network
        self.queue = EventQueue(steps_max)
        self.rng = random.Random(seed)
        self.node_ids = [node_name(index) for index in range(node_count)]
        self.nodes = {
            node_id: Membership(
                node_id, node_address(node_id), config, random.Random(f"{seed}/{node_id}")
            )
            for node_id in self.node_ids
        }
        self._id_by_address = {node_address(node_id): node_id for node_id in self.node_ids}
        self.crashed: set[str] = set()
        self.outbound_loss: dict[str, float] = {}
        self.cut_links: set[tuple[str, str]] = set()
        """(source, destination) pairs that drop everything, at sending and at arrival."""
        """Per-member loss on everything it sends, replacing the network's rate."""
        self.traffic = TrafficStatistics()
        self.observers: list[MemberChangedObserver] = []
        self.facts_learned: dict[str, list[tuple[int, FactLearned]]] = {}
        self._wakeup_ms: dict[str, int | None] = dict.fromkeys(self.node_ids)
        self._digest = hashlib.sha256()

    # --- setup ----------------------------------------------------------------------------

    def start_converged(self) -> None:
        """Every member starts knowing every other as alive: a cluster already formed."""
        everyone = [
            MemberUpdate(node_id, node_address(node_id), MemberState.ALIVE, 0)
            for node_id in self.node_ids
        ]
        for node_id in self.node_ids:
            others = [update for update in everyone if update.node_id != node_id]
            self._carry_out(node_id, self.nodes[node_id].join(0, (), others))

    def start_joining(self, node_id: str, seed_ids: list[str]) -> None:
        """`node_id` joins now through the addresses of `seed_ids`."""
        addresses = [node_address(seed_id) for seed_id in seed_ids]
        self._carry_out(node_id, self.nodes[node_id].join(self.queue.now_ms, addresses))

    def crash(self, node_id: str) -> None:
        self.crashed.add(node_id)
        self._record(f"crash {node_id}")

    def partition(self, groups: list[list[str]]) -> None:
        """Members in different groups cannot reach each other, either way, until `heal`."""
        for group in groups:
            for other in groups:
                if other is not group:
                    self.cut_links.update((source, target) for source in group for target in other)
        self._record(f"partition {' | '.join(','.join(group) for group in groups)}")

    def heal(self) -> None:
        self.cut_links.clear()
        self._record("heal")

    def act(self, node_id: str, command: Callable[[Membership], list[MembershipEffect]]) -> None:
        """Run a command (leave, decommission, ...) on a member now and carry out its effects."""
        self._carry_out(node_id, command(self.nodes[node_id]))

    def run_until(self, time_ms: int, stop: Callable[[], bool] | None = None) -> bool:
        return self.queue.run_until(time_ms, stop)

    @property
    def now_ms(self) -> int:
        return self.queue.now_ms

    @property
    def digest(self) -> str:
        """A hash of every membership event and crash, with its time: equal for a replay."""
        return self._digest.hexdigest()

    def live_node_ids(self) -> list[str]:
        return [
            node_id
            for node_id in self.node_ids
            if node_id not in self.crashed and not self.nodes[node_id].removed
        ]

    # --- driving the core -----------------------------------------------------------------

    def _carry_out(self, node_id: str, effects: list[MembershipEffect]) -> None:
        now_ms = self.queue.now_ms
        for effect in effects:
            if isinstance(effect, Send):
                self._send(node_id, effect.destination, effect.message)
            elif isinstance(effect, SendToAddress):
                destination = self._id_by_address.get(effect.address)
                if destination is not None:
                    self._send(node_id, destination, effect.message)
            elif isinstance(effect, MemberChanged):
                if effect.state is not MemberState.ALIVE or effect.incarnation > 0:
                    self._record(
                        f"{node_id} sees {effect.node_id} {effect.state.value}@{effect.incarnation}"
                    )
                for observer in self.observers:
                    observer(now_ms, node_id, effect)
            else:
                self.facts_learned.setdefault(node_id, []).append((now_ms, effect))
        self._schedule_wakeup(node_id)

    def _schedule_wakeup(self, node_id: str) -> None:
        wakeup_ms = self.nodes[node_id].next_wakeup_ms()
        if wakeup_ms is None:
            return
        wakeup_ms = max(wakeup_ms, self.queue.now_ms)
        scheduled_ms = self._wakeup_ms[node_id]
        if scheduled_ms is not None and scheduled_ms <= wakeup_ms:
            return
        self._wakeup_ms[node_id] = wakeup_ms

        def wake() -> None:
            if self._wakeup_ms[node_id] != wakeup_ms:
                return  # superseded by an earlier wakeup, which already ran
            self._wakeup_ms[node_id] = None
            if node_id in self.crashed:
                return
            self._carry_out(node_id, self.nodes[node_id].on_tick(self.queue.now_ms))

        self.queue.schedule(wakeup_ms, wake)

    def _send(self, source: str, destination: str, message: MembershipMessage) -> None:
        network = self.network
        loss_roll = self.rng.random()
        jitter_ms = self.rng.expovariate(1.0 / network.jitter_ms_mean)
        self.traffic.sent += 1
        loss_probability = self.outbound_loss.get(source, network.loss_probability)
        if loss_roll < loss_probability or (source, destination) in self.cut_links:
            self.traffic.lost += 1
            return
        delay_ms = network.latency_ms_base + int(
            min(jitter_ms, network.jitter_ms_mean * JITTER_MEANS_MAX)
        )

        def arrive() -> None:
            if destination in self.crashed:
                self.traffic.delivered_to_crashed += 1
                return
            if (source, destination) in self.cut_links:
                return
            node = self.nodes[destination]
            self._carry_out(destination, node.on_message(self.queue.now_ms, source, message))

        self.queue.schedule_in(delay_ms, arrive)

    def _record(self, text: str) -> None:
        self._digest.update(f"{self.queue.now_ms} {text}\n".encode())


# --- one measured run -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunParameters:
    seed: int
    node_count: int
    loss_probability: float
    required_sources: int
    duration_ms: int
    """Without a crash: how long to run. With one: the longest wait after the crash."""
    crash_at_ms: int | None = None
    latency_ms_base: int = 2
    jitter_ms_mean: float = 3.0
    lossy_member_outbound_loss: float | None = None
    """If set, the first member loses this share of everything it sends (only it)."""
    config: MembershipConfig = field(default_factory=MembershipConfig)

    def membership_config(self) -> MembershipConfig:
        return replace(self.config, required_sources=self.required_sources)

    def network_model(self) -> NetworkModel:
        return NetworkModel(self.latency_ms_base, self.jitter_ms_mean, self.loss_probability)


@dataclass(slots=True)
class RunResult:
    parameters: RunParameters
    crashed_node: str | None = None
    first_detection_ms: int | None = None
    """Crash to the first member declaring the crashed member down."""
    all_detection_ms: int | None = None
    """Crash to every live member holding it down."""
    false_downs: int = 0
    """Distinct (member, incarnation) declared down in the crash-free part of the run."""
    lossy_member_downs: int = 0
    """Distinct incarnations of the lossy member declared down (rightly: it cannot answer)."""
    false_downs_after_crash: int = 0
    """The same, for members other than the crashed one, after the crash."""
    crash_free_member_ms: int = 0
    """Members x virtual time of the crash-free part: the exposure for `false_downs`."""
    virtual_ms: int = 0
    """Where the run stopped on the virtual clock."""
    probes: int = 0
    messages_sent: int = 0
    messages_lost: int = 0
    digest: str = ""

    @property
    def crash_free_member_hours(self) -> float:
        return self.crash_free_member_ms / 3_600_000


def run(parameters: RunParameters) -> RunResult:
    """Start a formed cluster; crash one member if asked, and measure its detection.

    The crashed member is drawn from the seed. A run has a crash or a lossy member,
    not both.

    False positives are counted only before the crash, so that a run with a crash
    also serves as a run without one for its first `crash_at_ms`.
    """
    node_count = parameters.node_count
    cluster = MembershipCluster(
        parameters.seed, node_count, parameters.network_model(), parameters.membership_config()
    )
    result = RunResult(parameters)
    false_downs: set[tuple[str, int]] = set()
    false_downs_after_crash: set[tuple[str, int]] = set()
    holders: set[str] = set()
    lossy_member_downs: set[int] = set()
    crash_at_ms = parameters.crash_at_ms
    lossy_member: str | None = None
    if parameters.lossy_member_outbound_loss is not None:
        lossy_member = cluster.node_ids[0]
        cluster.outbound_loss[lossy_member] = parameters.lossy_member_outbound_loss

    def observe(now_ms: int, observer: str, change: MemberChanged) -> None:
        if change.state is not MemberState.DOWN:
            return
        if change.node_id == lossy_member:
            lossy_member_downs.add(change.incarnation)
            return
        if result.crashed_node is None:
            false_downs.add((change.node_id, change.incarnation))
            return
        if change.node_id != result.crashed_node:
            false_downs_after_crash.add((change.node_id, change.incarnation))
            return
        assert crash_at_ms is not None
        if result.first_detection_ms is None:
            result.first_detection_ms = now_ms - crash_at_ms
        holders.add(observer)
        if result.all_detection_ms is None and len(holders) == node_count - 1:
            result.all_detection_ms = now_ms - crash_at_ms

    cluster.observers.append(observe)
    cluster.start_converged()
    assert crash_at_ms is None or lossy_member is None
    if crash_at_ms is None:
        cluster.run_until(parameters.duration_ms)
        result.crash_free_member_ms = node_count * parameters.duration_ms
    else:
        crashed = cluster.node_ids[cluster.rng.randrange(node_count)]
        cluster.run_until(crash_at_ms)
        result.crashed_node = crashed
        cluster.crash(crashed)
        cluster.run_until(
            crash_at_ms + parameters.duration_ms, lambda: result.all_detection_ms is not None
        )
        result.crash_free_member_ms = node_count * crash_at_ms
    result.false_downs = len(false_downs)
    result.false_downs_after_crash = len(false_downs_after_crash)
    result.lossy_member_downs = len(lossy_member_downs)
    result.virtual_ms = cluster.now_ms
    result.probes = sum(node.statistics.probes_sent for node in cluster.nodes.values())
    result.messages_sent = cluster.traffic.sent
    result.messages_lost = cluster.traffic.lost
    result.digest = cluster.digest
    return result
