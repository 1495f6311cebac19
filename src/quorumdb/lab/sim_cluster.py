"""A simulated cluster the lab drives like a client: real nodes, virtual time, a chosen
latency on every link and a chosen offset on every clock, and requests that wait for
their answers (or a deadline) by running the event queue."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from quorumdb.core.cluster import local_members
from quorumdb.core.messages import Operation, Outcome
from quorumdb.sim.cluster import NodeClock, SimCluster
from quorumdb.sim.events import EventQueue
from quorumdb.sim.network import LinkProfile, Network
from quorumdb.sim.trace import Trace

EVENT_COUNT_MAX = 20_000_000


@dataclass
class _Answers:
    """The cluster's client side: answers by request id."""

    outcomes: dict[int, Outcome] = field(default_factory=dict)

    def on_reply(self, node_id: str, request_id: int, outcome: Outcome) -> None:
        self.outcomes[request_id] = outcome

    def on_crash(self, node_id: str) -> None:
        return None


class LabCluster:
    def __init__(
        self,
        seed: int,
        node_count: int = 3,
        latency_ms: int = 1,
        clock_offsets_ms: Sequence[int] | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.queue = EventQueue(EVENT_COUNT_MAX)
        trace = Trace(keep_lines=False)
        members = local_members(node_count, 7000)
        node_ids = [member.node_id for member in members]
        profiles = {
            (source, destination): LinkProfile(latency_ms, 0.5)
            for source in node_ids
            for destination in node_ids
            if source != destination
        }
        self.network = Network(self.queue, self.rng, trace, profiles, 0.0, 0.0)
        offsets = list(clock_offsets_ms or [0] * node_count)
        clocks = [NodeClock(offset, 0) for offset in offsets]
        self.cluster = SimCluster(self.queue, self.rng, trace, self.network, members, clocks)
        self.answers = _Answers()
        self.cluster.attach(self.answers)
        self.cluster.start_ticks()
        self._next_request = 1

    @property
    def now_ms(self) -> int:
        return self.queue.now_ms

    def run_for(self, duration_ms: int) -> None:
        self.queue.run_until(self.queue.now_ms + duration_ms)

    def submit(self, node_id: str, operation: Operation) -> int:
        """Send without waiting; the answer lands in `answers.outcomes[id]`."""
        request_id = self._next_request
        self._next_request += 1
        self.cluster.client_request(node_id, request_id, operation)
        return request_id

    def request(self, node_id: str, operation: Operation, timeout_ms: int = 10_000) -> Outcome:
        """Send and wait for the answer (a TIMEOUT-like failure when none comes)."""
        request_id = self.submit(node_id, operation)
        self.queue.run_until(
            self.queue.now_ms + timeout_ms, stop=lambda: request_id in self.answers.outcomes
        )
        outcome = self.answers.outcomes.pop(request_id, None)
        return outcome if outcome is not None else Outcome(None, message="no answer in time")

    def wait_for_controller(self, timeout_ms: int = 20_000) -> None:
        def ready() -> bool:
            nodes = [sim.node for sim in self.cluster.nodes.values() if sim.node is not None]
            leaders = {node.controller.leader_id for node in nodes}
            return len(leaders) == 1 and None not in leaders

        if not self.queue.run_until(self.queue.now_ms + timeout_ms, stop=ready):
            raise RuntimeError("no controller leader in the lab cluster")
