"""A tiny synchronous network of RaftNodes for unit tests (after etcd's raft_test.go).

Every Persist is applied and synced at once, messages wait in one FIFO queue until
`deliver` runs them, and links can be cut. Time only moves through `advance`.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from quorumdb.core.controller.raft import RaftNode, Role
from quorumdb.core.controller.raft_config import RaftConfig
from quorumdb.core.controller.raft_messages import RaftMessage
from quorumdb.core.controller.raft_persistence import load_persisted_state
from quorumdb.core.effects import Effect, Persist, Reply, Send
from quorumdb.core.messages import Outcome
from quorumdb.sim.register_state_machine import RegisterStateMachine
from quorumdb.storage.sim_disk import SimDisk

CONFIG = RaftConfig(
    election_timeout_ms_min=300,
    election_timeout_ms_max=600,
    heartbeat_interval_ms=50,
    snapshot_threshold_entries=1_000,
    entries_per_message_max=8,
)


class RaftTestCluster:
    def __init__(
        self,
        voters: int,
        learners_to_be: int = 0,
        config: RaftConfig = CONFIG,
        seed: int = 1,
    ) -> None:
        self.now_ms = 0
        self.rng = random.Random(seed)
        self.voter_ids = tuple(f"n{index + 1}" for index in range(voters))
        spare_ids = tuple(f"n{voters + index + 1}" for index in range(learners_to_be))
        self.config = config
        self.disks = {node_id: SimDisk() for node_id in self.voter_ids + spare_ids}
        self.nodes: dict[str, RaftNode] = {}
        self.state_machines: dict[str, RegisterStateMachine] = {}
        self.queue: list[tuple[str, str, RaftMessage]] = []
        self.replies: dict[int, Outcome] = {}
        self.cut: set[tuple[str, str]] = set()
        self.sent: list[tuple[str, str, RaftMessage]] = []
        for node_id in self.disks:
            self.start(node_id)

    def start(self, node_id: str) -> RaftNode:
        """(Re)build a node from its disk, as after a crash."""
        bootstrap = self.voter_ids if node_id in self.voter_ids else ()
        config = RaftConfig(
            election_timeout_ms_min=self.config.election_timeout_ms_min,
            election_timeout_ms_max=self.config.election_timeout_ms_max,
            heartbeat_interval_ms=self.config.heartbeat_interval_ms,
            snapshot_threshold_entries=self.config.snapshot_threshold_entries,
            entries_per_message_max=self.config.entries_per_message_max,
            bootstrap_voters=bootstrap,
            pre_vote=self.config.pre_vote,
            check_quorum=self.config.check_quorum,
        )
        state_machine = RegisterStateMachine()
        persisted = load_persisted_state(self.disks[node_id])
        node = RaftNode(node_id, config, persisted, state_machine, random.Random(self.rng.random()))
        self.nodes[node_id] = node
        self.state_machines[node_id] = state_machine
        return node

    def crash(self, node_id: str) -> None:
        self.disks[node_id].crash()
        del self.nodes[node_id]
        self.queue = [item for item in self.queue if node_id not in item[:2]]

    # --- driving --------------------------------------------------------------------------

    def carry_out(self, node_id: str, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Persist):
                self.disks[node_id].apply(effect.writes)
                self.disks[node_id].sync()
            elif isinstance(effect, Send):
                item = (node_id, effect.destination, effect.message)
                self.sent.append(item)
                if (node_id, effect.destination) not in self.cut:
                    self.queue.append(item)
            elif isinstance(effect, Reply):
                self.replies[effect.request_id] = effect.outcome

    def deliver(
        self, limit: int = 10_000, drop: Callable[[str, str, RaftMessage], bool] | None = None
    ) -> None:
        for _ in range(limit):
            if not self.queue:
                return
            source, destination, message = self.queue.pop(0)
            node = self.nodes.get(destination)
            if node is None or (source, destination) in self.cut:
                continue
            if drop is not None and drop(source, destination, message):
                continue
            self.carry_out(destination, node.on_message(self.now_ms, source, message))
        raise AssertionError("messages kept flowing")

    def advance(self, duration_ms: int, step_ms: int = 10) -> None:
        """Tick every node every `step_ms`, delivering messages between ticks."""
        end_ms = self.now_ms + duration_ms
        while self.now_ms < end_ms:
            self.now_ms += step_ms
            for node_id in sorted(self.nodes):
                self.carry_out(node_id, self.nodes[node_id].on_tick(self.now_ms))
            self.deliver()

    def isolate(self, node_id: str) -> None:
        for other in self.disks:
            if other != node_id:
                self.cut |= {(node_id, other), (other, node_id)}

    def heal(self) -> None:
        self.cut = set()

    # --- questions ------------------------------------------------------------------------

    def leaders(self) -> list[str]:
        return sorted(node_id for node_id, node in self.nodes.items() if node.role is Role.LEADER)

    def leader(self) -> str:
        """The leader of the highest term (there may be a stale one)."""
        leaders = [(self.nodes[node_id].current_term, node_id) for node_id in self.leaders()]
        assert leaders, "no leader"
        return max(leaders)[1]

    def elect(self, timeout_ms: int = 5_000) -> str:
        waited_ms = 0
        while not self.leaders():
            assert waited_ms < timeout_ms, "no leader elected"
            self.advance(50)
            waited_ms += 50
        return self.leader()

    def propose(self, node_id: str, request_id: int, command: bytes) -> None:
        self.carry_out(node_id, self.nodes[node_id].propose(self.now_ms, request_id, command))

    def read(self, node_id: str, request_id: int) -> None:
        self.carry_out(node_id, self.nodes[node_id].read(self.now_ms, request_id))
