"""N real `core.node.Node`s on simulated disks and a simulated network: the driver.

It carries out each batch of effects in order, like the real runtime, and enforces
persist-before-send: once a node has applied a write that is not yet synced, every
`Send` and `Reply` it produces waits for the next sync, in order. That covers more
than the effects following a `Persist` in the same batch, on purpose: reads in the
core see unsynced writes, so any later answer may depend on data a crash would lose.
An fsync takes a random few ms; persists arriving while one is pending share it
(group commit). A crash drops the node object and all its pending work; a restart
builds a new `Node` over the same disk.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from quorumdb.core.cluster import Member
from quorumdb.core.controller.raft_config import RaftConfig
from quorumdb.core.effects import Effect, Persist, Reply, Send
from quorumdb.core.messages import Message, Operation, Outcome
from quorumdb.core.node import Node, NodeLimits
from quorumdb.sim.events import EventQueue
from quorumdb.sim.network import Network
from quorumdb.sim.trace import Trace, describe_message, describe_operation, describe_outcome
from quorumdb.storage.interface import Write
from quorumdb.storage.sim_disk import SimDisk

# Node clocks start near a real date so expiry arithmetic looks like production.
EPOCH_MS = 1_700_000_000_000
TICK_INTERVAL_MS = 100
SIM_RAFT_CONFIG = RaftConfig(
    election_timeout_ms_min=600, election_timeout_ms_max=1_200, heartbeat_interval_ms=100
)


@dataclass(frozen=True, slots=True)
class NodeClock:
    """What a node believes the time is: virtual time plus a fixed offset and a drift."""

    offset_ms: int = 0
    drift_ppm: int = 0

    def __post_init__(self) -> None:
        assert -1_000_000 < self.drift_ppm < 1_000_000  # keeps the clock monotonic

    def local_ms(self, virtual_ms: int) -> int:
        return EPOCH_MS + self.offset_ms + virtual_ms + virtual_ms * self.drift_ppm // 1_000_000


class ClientListener(Protocol):
    """The workload side: answers to client requests, and crashes that lose them."""

    def on_reply(self, node_id: str, request_id: int, outcome: Outcome) -> None: ...

    def on_crash(self, node_id: str) -> None: ...


@dataclass(slots=True)
class SimNodeDisk:
    """A simulated node's disk and clock, and its persist-before-send bookkeeping: while
    a batch is applied but not synced, every output waits in `held`. Shared by the data
    and the controller drivers."""

    node_id: str
    disk: SimDisk
    clock: NodeClock
    # Bumped on every crash: callbacks scheduled for an earlier life do nothing.
    incarnation: int = 0
    applied_count: int = 0
    synced_count: int = 0
    sync_scheduled: bool = False
    held: list[Send | Reply] = field(default_factory=list)

    @property
    def synced(self) -> bool:
        return self.applied_count == self.synced_count

    def apply(self, writes: Sequence[Write]) -> bool:
        """Apply one batch; True when no sync is pending yet, so one must be scheduled
        (batches arriving while one is pending share it: group commit)."""
        self.disk.apply(writes)
        self.applied_count += 1
        if self.sync_scheduled:
            return False
        self.sync_scheduled = True
        return True

    def sync(self) -> tuple[int, list[Send | Reply]]:
        """The fsync completes: the count of batches it made durable, and the outputs
        that waited for it, to release in order."""
        assert self.sync_scheduled
        assert self.applied_count > self.synced_count
        self.disk.sync()
        batch_count = self.applied_count - self.synced_count
        self.synced_count = self.applied_count
        self.sync_scheduled = False
        held, self.held = self.held, []
        return batch_count, held

    def crash(self) -> int:
        """Power loss: unsynced writes and waiting outputs vanish; the count of batches lost."""
        lost_batch_count = self.applied_count - self.synced_count
        self.disk.crash()
        self.incarnation += 1
        self.applied_count = 0
        self.synced_count = 0
        self.sync_scheduled = False
        self.held = []
        return lost_batch_count


@dataclass(slots=True)
class SimNode(SimNodeDisk):
    node: Node | None = None

    @property
    def up(self) -> bool:
        return self.node is not None


@dataclass(slots=True)
class ClusterStats:
    persists: int = 0
    syncs: int = 0
    replies: int = 0
    crashes: int = 0
    restarts: int = 0
    writes_lost: int = 0
    dropped_at_down_node: int = 0
    refused: int = 0


class SimCluster:
    def __init__(
        self,
        queue: EventQueue,
        rng: random.Random,
        trace: Trace,
        network: Network,
        members: tuple[Member, ...],
        clocks: Sequence[NodeClock],
        fsync_ms_range: tuple[int, int] = (1, 5),
        limits: NodeLimits | None = None,
        spares: tuple[Member, ...] = (),
    ) -> None:
        """`members` found the cluster; `spares` run from the start too, but as nodes that
        join later (`founder=False`): an operator adds them through the metadata."""
        assert len(clocks) == len(members) + len(spares)
        assert 0 <= fsync_ms_range[0] <= fsync_ms_range[1]
        self.queue = queue
        self.rng = rng
        self.trace = trace
        self.network = network
        self.members = members
        self.fsync_ms_range = fsync_ms_range
        self.limits = limits
        self.stats = ClusterStats()
        self._starts = 0
        self._founder_ids = frozenset(member.node_id for member in members)
        self.nodes: dict[str, SimNode] = {}
        for member, clock in zip(members + spares, clocks, strict=True):
            sim_node = SimNode(member.node_id, SimDisk(), clock)
            sim_node.node = self._new_node(member.node_id, sim_node.disk)
            self.nodes[member.node_id] = sim_node
        self._listeners: list[ClientListener] = []
        # Told (node id, fsync delay) whenever a sync is scheduled: lets the nemesis aim
        # a crash into the window where writes are applied but not yet durable.
        self.on_sync_scheduled: Callable[[str, int], None] | None = None
        # Told (node id, request id, outcome) when a node answers a client, at the instant
        # it decides the answer (before the answer waits for a sync).
        self.on_answer: Callable[[str, int, Outcome], None] | None = None
        network.attach(self._on_delivery)

    def attach(self, listener: ClientListener) -> None:
        """Every listener hears every reply and crash; each ignores request ids not its own."""
        assert listener not in self._listeners
        self._listeners.append(listener)

    def start_ticks(self) -> None:
        """Tick every node every 100 ms, each starting at its own random phase."""
        for sim_node in self.nodes.values():
            phase_ms = self.rng.randrange(TICK_INTERVAL_MS)
            self.queue.schedule_in(phase_ms, functools.partial(self._tick, sim_node))

    @property
    def node_ids(self) -> list[str]:
        return list(self.nodes)

    def up_node_ids(self) -> list[str]:
        return [node_id for node_id, sim_node in self.nodes.items() if sim_node.up]

    def down_node_ids(self) -> list[str]:
        return [node_id for node_id, sim_node in self.nodes.items() if not sim_node.up]

    def is_up(self, node_id: str) -> bool:
        return self.nodes[node_id].up

    def local_ms(self, node_id: str) -> int:
        return self.nodes[node_id].clock.local_ms(self.queue.now_ms)

    # --- inputs ---------------------------------------------------------------------------

    def client_request(self, node_id: str, request_id: int, operation: Operation) -> bool:
        """Hand a client request to a node; False when the node is down."""
        sim_node = self.nodes[node_id]
        if sim_node.node is None:
            return False
        self.trace.record(
            self.queue.now_ms, f"request {node_id} req#{request_id} {describe_operation(operation)}"
        )
        effects = sim_node.node.on_client_request(self.local_ms(node_id), request_id, operation)
        self._carry_out(sim_node, effects)
        return True

    def _on_delivery(self, source: str, destination: str, message: Message) -> None:
        sim_node = self.nodes[destination]
        if sim_node.node is None:
            self.stats.dropped_at_down_node += 1
            self.trace.record(self.queue.now_ms, f"drop-down {source}->{destination}")
            return
        effects = sim_node.node.on_message(self.local_ms(destination), source, message)
        self._carry_out(sim_node, effects)

    def _tick(self, sim_node: SimNode) -> None:
        if sim_node.node is not None:
            effects = sim_node.node.on_tick(sim_node.clock.local_ms(self.queue.now_ms))
            self._carry_out(sim_node, effects)
        self.queue.schedule_in(TICK_INTERVAL_MS, lambda: self._tick(sim_node))

    def _on_refused(self, sim_node: SimNode, incarnation: int, peer: str) -> None:
        """A connection to a down peer was refused: tell the sender, if it still lives."""
        if sim_node.node is None or sim_node.incarnation != incarnation:
            return
        self.trace.record(self.queue.now_ms, f"unreachable {sim_node.node_id}->{peer}")
        local_ms = sim_node.clock.local_ms(self.queue.now_ms)
        self._carry_out(sim_node, sim_node.node.on_peer_unreachable(local_ms, peer))

    # --- effects --------------------------------------------------------------------------

    def _carry_out(self, sim_node: SimNode, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Reply) and self.on_answer is not None:
                self.on_answer(sim_node.node_id, effect.request_id, effect.outcome)
            if isinstance(effect, Persist):
                self._persist(sim_node, effect)
            elif not sim_node.synced:
                sim_node.held.append(effect)
            else:
                assert not sim_node.held
                self._release(sim_node, effect)

    def _persist(self, sim_node: SimNode, effect: Persist) -> None:
        sync_needed = sim_node.apply(effect.writes)
        self.stats.persists += 1
        keys = ",".join(
            f"{write.keyspace}/{write.key.decode('ascii', 'backslashreplace')}"
            + ("" if write.value is not None else "(deleted)")
            for write in effect.writes
        )
        self.trace.record(self.queue.now_ms, f"persist {sim_node.node_id} {keys}")
        if sync_needed:
            delay_ms = self.rng.randint(*self.fsync_ms_range)
            incarnation = sim_node.incarnation
            self.queue.schedule_in(delay_ms, lambda: self._sync(sim_node, incarnation))
            if self.on_sync_scheduled is not None:
                self.on_sync_scheduled(sim_node.node_id, delay_ms)

    def _sync(self, sim_node: SimNode, incarnation: int) -> None:
        if sim_node.incarnation != incarnation:
            return  # the node crashed before the fsync completed
        batch_count, held = sim_node.sync()
        self.stats.syncs += 1
        self.trace.record(self.queue.now_ms, f"sync {sim_node.node_id} batches={batch_count}")
        for effect in held:
            self._release(sim_node, effect)

    def _release(self, sim_node: SimNode, effect: Send | Reply) -> None:
        assert sim_node.node is not None
        assert sim_node.synced, "persist-before-send"
        self._emit(sim_node, effect)

    def _emit(self, sim_node: SimNode, effect: Send | Reply) -> None:
        """Put one output on its way: to the network, or to the waiting client."""
        if isinstance(effect, Reply):
            self.stats.replies += 1
            self.trace.record(
                self.queue.now_ms,
                f"reply {sim_node.node_id} req#{effect.request_id}"
                f" {describe_outcome(effect.outcome)}",
            )
            assert self._listeners
            for listener in self._listeners:
                listener.on_reply(sim_node.node_id, effect.request_id, effect.outcome)
            return
        source, destination = sim_node.node_id, effect.destination
        if not self.nodes[destination].up and not self.network.blocked(source, destination):
            self._refuse(sim_node, destination, effect.message)
            return
        self.network.send(source, destination, effect.message)

    def _refuse(self, sim_node: SimNode, destination: str, message: Message) -> None:
        """Sending to a down node fails fast (connection refused), unlike a partition."""
        self.stats.refused += 1
        self.trace.record(
            self.queue.now_ms,
            f"refused {sim_node.node_id}->{destination} {describe_message(message)}",
        )
        profile = self.network.profiles[(sim_node.node_id, destination)]
        delay_ms = 2 * profile.latency_ms_base + 1
        incarnation = sim_node.incarnation
        self.queue.schedule_in(
            delay_ms, lambda: self._on_refused(sim_node, incarnation, destination)
        )

    # --- crash and restart ----------------------------------------------------------------

    def crash(self, node_id: str) -> None:
        """Power loss: unsynced writes vanish, the process and its pending work are gone."""
        sim_node = self.nodes[node_id]
        assert sim_node.node is not None
        lost_batch_count = sim_node.crash()
        sim_node.node = None
        self.stats.crashes += 1
        self.stats.writes_lost += lost_batch_count
        self.trace.record(self.queue.now_ms, f"crash {node_id} lost-batches={lost_batch_count}")
        assert self._listeners
        for listener in self._listeners:
            listener.on_crash(node_id)

    def restart(self, node_id: str) -> None:
        sim_node = self.nodes[node_id]
        assert sim_node.node is None
        sim_node.node = self._new_node(node_id, sim_node.disk)
        self.stats.restarts += 1
        self.trace.record(self.queue.now_ms, f"restart {node_id}")

    def _new_node(self, node_id: str, disk: SimDisk) -> Node:
        self._starts += 1  # every start of any node gets a larger incarnation
        # The controller's timing suits this driver's 100 ms ticks; its generator is drawn
        # from the run's, so the seed still decides everything. A spare (not a founding
        # member) is built as a node that joins later, at every restart too.
        return Node(
            node_id,
            self.members,
            disk,
            self.limits,
            self._starts,
            rng=random.Random(self.rng.getrandbits(64)),
            raft_config=SIM_RAFT_CONFIG,
            founder=node_id in self._founder_ids,
        )
