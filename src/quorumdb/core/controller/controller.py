"""One node's seat in the metadata controller: its Raft member plus the metadata it applies.

Every node runs one: the bootstrap voters vote, every other node is a learner that
receives and applies the same log, so every node holds the same versioned metadata
and routes by it without asking anyone. Proposals carry a continuation: when the
entry is applied on this (leader) node, or refused, the continuation turns the
outcome into the node's own effects (a client reply, a forwarded reply).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from quorumdb.core.cluster_metadata import ClusterMetadata
from quorumdb.core.controller.raft import RaftNode, RandomSource, Role
from quorumdb.core.controller.raft_config import RaftConfig
from quorumdb.core.controller.raft_configuration import MembershipChange, MembershipChangeKind
from quorumdb.core.controller.raft_messages import RaftMessage
from quorumdb.core.controller.raft_persistence import load_persisted_state
from quorumdb.core.effects import Effect, Reply
from quorumdb.core.messages import Outcome
from quorumdb.storage.interface import StorageReader

DEFAULT_VOTERS = 3

Continuation = Callable[[Outcome], list[Effect]]


def choose_voters(node_ids: Sequence[str], voter_count: int = DEFAULT_VOTERS) -> tuple[str, ...]:
    """The first `voter_count` node ids in sorted order (1, 3 or 5; fewer if fewer nodes).

    Every founding node computes the same answer from the same member list."""
    if voter_count not in (1, 3, 5):
        raise ValueError("a controller has 1, 3 or 5 voters")
    ordered = sorted(node_ids)
    count = min(voter_count, len(ordered))
    if count % 2 == 0:
        count -= 1  # an even group tolerates no more failures than the odd one below it
    return tuple(ordered[:count])


class Controller:
    def __init__(
        self,
        node_id: str,
        bootstrap: ClusterMetadata,
        storage: StorageReader,
        rng: RandomSource,
        config: RaftConfig,
    ) -> None:
        self.metadata = bootstrap
        self.raft = RaftNode(node_id, config, load_persisted_state(storage), bootstrap, rng)
        self._continuations: dict[int, Continuation] = {}
        self._next_request_id = 1
        # (log index, deadline, what to do): see `when_applied_everywhere`.
        self._waiters: list[tuple[int, int, Callable[[], list[Effect]]]] = []
        self._membership_in_flight = False

    @property
    def leader_id(self) -> str | None:
        if self.raft.role is Role.LEADER:
            return self.raft.node_id
        return self.raft.leader_id

    @property
    def is_leader(self) -> bool:
        return self.raft.role is Role.LEADER

    def on_tick(self, now_ms: int) -> list[Effect]:
        return self._absorb(self.raft.on_tick(now_ms)) + self._wake(now_ms)

    def on_message(self, now_ms: int, source: str, message: RaftMessage) -> list[Effect]:
        return self._absorb(self.raft.on_message(now_ms, source, message)) + self._wake(now_ms)

    def when_applied_everywhere(
        self, index: int, deadline_ms: int, then: Callable[[], list[Effect]]
    ) -> list[Effect]:
        """Run `then` once every member has applied `index` (so a client may use what it
        changed through any node at once), or at `deadline_ms` if some member is slow or
        down: that one catches up later, like any lagging learner."""
        self._waiters.append((index, deadline_ms, then))
        return self._wake(None)

    def _wake(self, now_ms: int | None) -> list[Effect]:
        if not self._waiters:
            return []
        effects: list[Effect] = []
        waiting: list[tuple[int, int, Callable[[], list[Effect]]]] = []
        for index, deadline_ms, then in self._waiters:
            overdue = now_ms is not None and now_ms >= deadline_ms
            if overdue or self.raft.applied_everywhere(index) or not self.is_leader:
                effects.extend(then())
            else:
                waiting.append((index, deadline_ms, then))
        self._waiters = waiting
        return effects

    def propose(self, now_ms: int, command: bytes, then: Continuation) -> list[Effect]:
        request_id = self._next_request_id
        self._next_request_id += 1
        self._continuations[request_id] = then
        return self._absorb(self.raft.propose(now_ms, request_id, command))

    def change_membership(
        self, now_ms: int, change: MembershipChange, then: Continuation
    ) -> list[Effect]:
        request_id = self._next_request_id
        self._next_request_id += 1
        self._continuations[request_id] = then
        return self._absorb(self.raft.change_membership(now_ms, request_id, change))

    def membership_duty(self, now_ms: int, voter_count: int) -> list[Effect]:
        """Leader only: make the Raft configuration follow the metadata's member list, one
        server at a time: add new members as learners, remove those that left, and keep
        `voter_count` voters (fewer if fewer members) by promoting learners."""
        raft = self.raft
        if not self.is_leader or self._membership_in_flight:
            return []
        configuration = raft.configuration
        wanted = {
            node_id for node_id, member in self.metadata.members.items() if member.state != "left"
        }
        change: MembershipChange | None = None
        for node_id in sorted(wanted - configuration.members):
            change = MembershipChange(MembershipChangeKind.ADD_LEARNER, node_id)
            break
        if change is None:
            for node_id in sorted(configuration.members - wanted):
                if node_id != raft.node_id or len(configuration.voters) > 1:
                    change = MembershipChange(MembershipChangeKind.REMOVE, node_id)
                    break
        if change is None:
            target = min(voter_count, len(wanted))
            caught_up = [
                node_id
                for node_id in sorted(configuration.learners & wanted)
                if (progress := raft.progress_of(node_id)) is not None
                and progress.match_index >= raft.commit_index
            ]
            if len(configuration.voters) < target and caught_up:
                change = MembershipChange(MembershipChangeKind.PROMOTE_LEARNER, caught_up[0])
        if change is None:
            return []
        self._membership_in_flight = True

        def done(outcome: Outcome) -> list[Effect]:
            self._membership_in_flight = False
            return []

        return self.change_membership(now_ms, change, done)

    def rebalance_status(self) -> dict[str, object]:
        """The current plan in numbers (for /v1/cluster and /metrics)."""
        metadata = self.metadata
        plan = metadata.plan
        transfers = plan.transfers if plan is not None else ()
        return {
            "mode": metadata.rebalance_mode,
            "throttle_bytes_per_second": metadata.throttle_bytes_per_second,
            "plan_id": None if plan is None else plan.plan_id,
            "state": None if plan is None else plan.state,
            "transfers_total": len(transfers),
            "transfers_done": sum(1 for transfer in transfers if transfer.state == "done"),
            "copied_bytes": sum(transfer.copied_bytes for transfer in transfers),
        }

    def status(self) -> dict[str, object]:
        """What operators and tests see of the controller, from this node."""
        raft = self.raft
        configuration = raft.configuration
        return {
            "leader": self.leader_id,
            "role": raft.role.value,
            "term": raft.current_term,
            "commit_index": raft.commit_index,
            "applied_index": raft.applied_index,
            "voters": sorted(configuration.voters),
            "learners": sorted(configuration.learners),
            "metadata_version": self.metadata.version,
        }

    def _absorb(self, effects: list[Effect]) -> list[Effect]:
        """Raft's replies go to the continuations; persists and sends pass through, in
        order, so a continuation's reply still follows the writes that preceded it."""
        if not any(type(effect) is Reply for effect in effects):
            return effects
        result: list[Effect] = []
        for effect in effects:
            if type(effect) is Reply:
                continuation = self._continuations.pop(effect.request_id, None)
                if continuation is not None:
                    result.extend(continuation(effect.outcome))
            else:
                result.append(effect)
        return result
