"""The driver of a simulated Raft group: `RaftNode`s on simulated disks and network.

Like `sim.cluster` for data nodes, it carries out each batch of effects in order and
enforces persist-before-send: once a node applied a write not yet synced, its sends
and replies wait for the next fsync. A crash loses unsynced writes and the node's
memory (its state machine too); a restart rebuilds the node from what the disk kept.

After every simulation step `after_step` hands each changed node to the invariant
checker, but only while that node has nothing unsynced (see `check.raft_invariants`).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from quorumdb.check.raft_invariants import RaftInvariantChecker
from quorumdb.core.controller.raft import RaftNode
from quorumdb.core.controller.raft_config import RaftConfig
from quorumdb.core.controller.raft_configuration import MembershipChange
from quorumdb.core.controller.raft_messages import RAFT_MESSAGE_TYPES
from quorumdb.core.controller.raft_persistence import load_persisted_state
from quorumdb.core.effects import Effect, Persist, Reply, Send
from quorumdb.core.messages import Message, Outcome
from quorumdb.sim.cluster import NodeClock, SimNodeDisk
from quorumdb.sim.events import EventQueue
from quorumdb.sim.network import Network
from quorumdb.sim.register_state_machine import RegisterStateMachine
from quorumdb.sim.trace import Trace, describe_outcome
from quorumdb.storage.sim_disk import SimDisk

TICK_INTERVAL_MS = 25


class RecordingStateMachine(RegisterStateMachine):
    """The register, remembering what it applied until the checker has seen it."""

    def __init__(self) -> None:
        super().__init__()
        self.unchecked: list[tuple[int, bytes]] = []

    def apply(self, index: int, command: bytes) -> bytes:
        self.unchecked.append((index, command))
        return super().apply(index, command)


class ReplyListener(Protocol):
    def on_reply(self, node_id: str, request_id: int, outcome: Outcome) -> None: ...

    def on_crash(self, node_id: str) -> None: ...


@dataclass(slots=True)
class RaftSimNode(SimNodeDisk):
    config: RaftConfig = field(kw_only=True)
    raft: RaftNode | None = None
    state_machine: RecordingStateMachine | None = None
    dirty: bool = True

    @property
    def up(self) -> bool:
        return self.raft is not None


@dataclass(slots=True)
class ControllerClusterStats:
    persists: int = 0
    syncs: int = 0
    crashes: int = 0
    restarts: int = 0
    lost_batches: int = 0
    dropped_at_down_node: int = 0


class ControllerCluster:
    def __init__(
        self,
        queue: EventQueue,
        rng: random.Random,
        trace: Trace,
        network: Network,
        node_ids: Sequence[str],
        bootstrap_voters: tuple[str, ...],
        config: RaftConfig,
        clocks: Sequence[NodeClock],
        fsync_ms_range: tuple[int, int],
        checker: RaftInvariantChecker,
    ) -> None:
        assert len(clocks) == len(node_ids)
        self.queue = queue
        self.rng = rng
        self.trace = trace
        self.network = network
        self.fsync_ms_range = fsync_ms_range
        self.checker = checker
        self.stats = ControllerClusterStats()
        self.nodes: dict[str, RaftSimNode] = {}
        for node_id, clock in zip(node_ids, clocks, strict=True):
            voters = bootstrap_voters if node_id in bootstrap_voters else ()
            sim_node = RaftSimNode(
                node_id, SimDisk(), clock, config=replace(config, bootstrap_voters=voters)
            )
            self._start(sim_node)
            self.nodes[node_id] = sim_node
        self._listener: ReplyListener | None = None
        self.on_sync_scheduled: Callable[[str, int], None] | None = None
        network.attach(self._on_delivery)

    def attach(self, listener: ReplyListener) -> None:
        assert self._listener is None
        self._listener = listener

    @property
    def node_ids(self) -> list[str]:
        return list(self.nodes)

    def up_node_ids(self) -> list[str]:
        return [node_id for node_id, sim_node in self.nodes.items() if sim_node.up]

    def down_node_ids(self) -> list[str]:
        return [node_id for node_id, sim_node in self.nodes.items() if not sim_node.up]

    def raft(self, node_id: str) -> RaftNode | None:
        return self.nodes[node_id].raft

    def register_value(self, node_id: str, key: str) -> str | None:
        state_machine = self.nodes[node_id].state_machine
        assert state_machine is not None
        return state_machine.values.get(key)

    def local_ms(self, sim_node: RaftSimNode) -> int:
        return sim_node.clock.local_ms(self.queue.now_ms)

    def start_ticks(self) -> None:
        for sim_node in self.nodes.values():
            phase_ms = self.rng.randrange(TICK_INTERVAL_MS)
            self.queue.schedule_in(phase_ms, functools.partial(self._tick, sim_node))

    # --- inputs ---------------------------------------------------------------------------

    def propose(self, node_id: str, request_id: int, command: bytes) -> bool:
        return self._call(
            node_id,
            request_id,
            f"propose {command.decode()}",
            lambda raft, now_ms: raft.propose(now_ms, request_id, command),
        )

    def read(self, node_id: str, request_id: int) -> bool:
        return self._call(
            node_id, request_id, "read", lambda raft, now_ms: raft.read(now_ms, request_id)
        )

    def change_membership(self, node_id: str, request_id: int, change: MembershipChange) -> bool:
        return self._call(
            node_id,
            request_id,
            f"{change.kind.value} {change.node_id}",
            lambda raft, now_ms: raft.change_membership(now_ms, request_id, change),
        )

    def _call(
        self,
        node_id: str,
        request_id: int,
        text: str,
        call: Callable[[RaftNode, int], list[Effect]],
    ) -> bool:
        sim_node = self.nodes[node_id]
        if sim_node.raft is None:
            return False
        self.trace.record(self.queue.now_ms, f"request {node_id} req#{request_id} {text}")
        self._carry_out(sim_node, call(sim_node.raft, self.local_ms(sim_node)))
        return True

    def _on_delivery(self, source: str, destination: str, message: Message) -> None:
        sim_node = self.nodes[destination]
        if sim_node.raft is None:
            self.stats.dropped_at_down_node += 1
            return
        assert isinstance(message, RAFT_MESSAGE_TYPES)
        effects = sim_node.raft.on_message(self.local_ms(sim_node), source, message)
        self._carry_out(sim_node, effects)

    def _tick(self, sim_node: RaftSimNode) -> None:
        if sim_node.raft is not None:
            self._carry_out(sim_node, sim_node.raft.on_tick(self.local_ms(sim_node)))
        self.queue.schedule_in(TICK_INTERVAL_MS, functools.partial(self._tick, sim_node))

    # --- effects --------------------------------------------------------------------------

    def _carry_out(self, sim_node: RaftSimNode, effects: list[Effect]) -> None:
        sim_node.dirty = True
        for effect in effects:
            if isinstance(effect, Persist):
                self._persist(sim_node, effect)
            elif not sim_node.synced:
                sim_node.held.append(effect)
            else:
                self._emit(sim_node, effect)

    def _persist(self, sim_node: RaftSimNode, effect: Persist) -> None:
        sync_needed = sim_node.apply(effect.writes)
        self.stats.persists += 1
        self.trace.record(
            self.queue.now_ms, f"persist {sim_node.node_id} writes={len(effect.writes)}"
        )
        if not sync_needed:
            return
        delay_ms = self.rng.randint(*self.fsync_ms_range)
        self.queue.schedule_in(
            delay_ms, functools.partial(self._sync, sim_node, sim_node.incarnation)
        )
        if self.on_sync_scheduled is not None:
            self.on_sync_scheduled(sim_node.node_id, delay_ms)

    def _sync(self, sim_node: RaftSimNode, incarnation: int) -> None:
        if sim_node.incarnation != incarnation:
            return  # crashed before the fsync completed
        _, held = sim_node.sync()
        sim_node.dirty = True
        self.stats.syncs += 1
        self.trace.record(self.queue.now_ms, f"sync {sim_node.node_id}")
        for effect in held:
            self._emit(sim_node, effect)

    def _emit(self, sim_node: RaftSimNode, effect: Send | Reply) -> None:
        assert sim_node.synced, "persist-before-send"
        if isinstance(effect, Send):
            self.network.send(sim_node.node_id, effect.destination, effect.message)
            return
        self.trace.record(
            self.queue.now_ms,
            f"reply {sim_node.node_id} req#{effect.request_id} {describe_outcome(effect.outcome)}",
        )
        assert self._listener is not None
        self._listener.on_reply(sim_node.node_id, effect.request_id, effect.outcome)

    # --- observation ----------------------------------------------------------------------

    def after_step(self) -> None:
        """Show the checker every node changed since the last step, once it is durable."""
        for node_id, sim_node in self.nodes.items():
            if not sim_node.dirty or sim_node.raft is None or not sim_node.synced:
                continue
            sim_node.dirty = False
            assert sim_node.state_machine is not None
            applied, sim_node.state_machine.unchecked = sim_node.state_machine.unchecked, []
            self.checker.observe(node_id, sim_node.raft, applied)

    # --- crash and restart ----------------------------------------------------------------

    def crash(self, node_id: str) -> None:
        sim_node = self.nodes[node_id]
        assert sim_node.raft is not None
        lost = sim_node.crash()
        sim_node.raft = None
        sim_node.state_machine = None
        self.stats.crashes += 1
        self.stats.lost_batches += lost
        self.checker.forget_node(node_id)
        self.trace.record(self.queue.now_ms, f"crash {node_id} lost-batches={lost}")
        assert self._listener is not None
        self._listener.on_crash(node_id)

    def restart(self, node_id: str) -> None:
        sim_node = self.nodes[node_id]
        assert sim_node.raft is None
        self._start(sim_node)
        self.stats.restarts += 1
        self.trace.record(self.queue.now_ms, f"restart {node_id}")

    def _start(self, sim_node: RaftSimNode) -> None:
        state_machine = RecordingStateMachine()
        persisted = load_persisted_state(sim_node.disk)
        node_rng = random.Random(self.rng.getrandbits(64))
        sim_node.raft = RaftNode(
            sim_node.node_id, sim_node.config, persisted, state_machine, node_rng
        )
        sim_node.state_machine = state_machine
        sim_node.dirty = True
