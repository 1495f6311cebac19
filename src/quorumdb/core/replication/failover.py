"""Failover of single-leader partitions, run by the controller leader.

When the failure detector declares a partition's leader down (two independent sources
agree, see core/membership), the controller asks the other replicas for their last log
position with a `PositionQuery` for the next epoch. Each replica first promises that
epoch (so the old leader, if it is only cut off from the controller, gets no more
acknowledgements from it), then answers. With enough answers the controller picks the
most up-to-date replica, earlier in the replica order on ties (the synchronous follower
in `semi` mode comes first), and proposes `fail_over` to the metadata log: the new
leader, the epoch + 1. Every node then reconfigures from the metadata.

"Enough" is what makes the choice safe: every acknowledged write is on the leader and
on enough followers that any set of answers this size holds one of them.

| mode     | a write is acknowledged on          | answers needed (R replicas)  |
|----------|-------------------------------------|------------------------------|
| all      | every replica                       | 1                            |
| majority | R // 2 + 1, the leader included     | R - (R // 2 + 1) + 1         |
| semi     | the leader and one sync follower    | R - 1 (every follower)       |
| async    | the leader alone                    | 1, after a grace period      |

In `async` mode no number of answers suffices: the leader's unreplicated tail is lost
by design; the controller waits `async_grace_ms` to hear from as many as it can, takes
the best, and the old leader files the tail in lost+found when it comes back.

A promise cannot be taken back, so a round that got one must end in a new epoch: once
a replica has promised epoch + 1 it refuses the old leader's entries, and the old
leader steps down when it hears of the promise. If the leader comes back (no longer
failed) after a promise, the round re-elects it in place: `fail_over` to the same
leader, epoch + 1. That is safe because a leader holds every write it acknowledged.
Promises the controller hears of after it dropped a round (a query held by a lease
and answered late) count too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from quorumdb.core.cluster import PartitionMap
from quorumdb.core.cluster_metadata import command
from quorumdb.core.effects import Effect, Send
from quorumdb.core.replication.log_format import Position
from quorumdb.core.replication.messages import LeaderSuspicion, PositionQuery, PositionReply
from quorumdb.core.replication.quorums import answers_needed

QUERY_RETRY_MS = 500
PROPOSAL_RETRY_MS = 3_000
ASYNC_GRACE_MS = 1_000
SUSPICION_TTL_MS = 1_000  # a follower's report of a silent leader counts this long

Propose = Callable[[bytes], list[Effect]]


@dataclass(slots=True)
class _Round:
    epoch: int  # the partition's epoch when the round began; it proposes epoch + 1
    followers: tuple[str, ...]
    started_ms: int
    asked_ms: int
    answers: dict[str, Position] = field(default_factory=dict)
    proposed_ms: int | None = None

    @property
    def promised(self) -> bool:
        """Some follower promised the next epoch: the old one can no longer be led."""
        return bool(self.answers)


@dataclass(slots=True)
class FailoverCoordinator:
    async_grace_ms: int = ASYNC_GRACE_MS
    # Independent sources that must agree a partition leader failed: followers that
    # reported it silent, and this node's failure detector suspecting it. (A verdict
    # of "down" from the failure detector already needed that many sources itself.)
    sources_required: int = 2
    suspicion_ttl_ms: int = SUSPICION_TTL_MS
    failovers_proposed: int = 0
    _rounds: dict[tuple[str, int], _Round] = field(default_factory=dict)
    # (keyspace, partition) -> follower -> (epoch it suspected, when it said so)
    _suspicions: dict[tuple[str, int], dict[str, tuple[int, int]]] = field(default_factory=dict)
    # Partitions some replica promised this epoch to while no round was open for it.
    _late_promises: dict[tuple[str, int], int] = field(default_factory=dict)

    def on_suspicion(self, now_ms: int, source: str, suspicion: LeaderSuspicion) -> None:
        index = (suspicion.keyspace, suspicion.partition)
        self._suspicions.setdefault(index, {})[source] = (suspicion.epoch, now_ms)

    def _failed(
        self,
        now_ms: int,
        index: tuple[str, int],
        epoch: int,
        nodes: tuple[str, ...],
        down: frozenset[str],
        suspected: frozenset[str],
    ) -> bool:
        leader = nodes[0]
        if leader in down:
            return True
        heard = self._suspicions.get(index, {})
        sources = sum(
            1
            for follower, (suspected_epoch, at_ms) in heard.items()
            if follower in nodes[1:]
            and suspected_epoch == epoch
            and now_ms - at_ms <= self.suspicion_ttl_ms
        )
        if leader in suspected:
            sources += 1
        return sources >= self.sources_required

    def on_tick(
        self,
        now_ms: int,
        is_controller_leader: bool,
        partition_map: PartitionMap,
        down: frozenset[str],
        propose: Propose,
        suspected: frozenset[str] = frozenset(),
        leaving: frozenset[str] = frozenset(),
    ) -> list[Effect]:
        """`down`: members the failure detector declared down; `suspected`: those it
        suspects (one source); `leaving`: members being decommissioned, whose
        partitions are handed over the same way (the leader is asked too, first, so it
        stops acknowledging before its followers answer)."""
        if not is_controller_leader:
            self._rounds.clear()
            self._suspicions.clear()
            self._late_promises.clear()
            return []
        effects: list[Effect] = []
        active: set[tuple[str, int]] = set()
        for name, placement in sorted(partition_map.keyspaces.items()):
            if not placement.replica_sets:
                continue
            mode = placement.config.sync
            for partition, (epoch, nodes) in sorted(placement.replica_sets.items()):
                index = (name, partition)
                if len(nodes) == 1:
                    continue
                handover = nodes[0] in leaving
                if handover or self._failed(now_ms, index, epoch, nodes, down, suspected):
                    active.add(index)
                    effects += self._drive(
                        now_ms, index, epoch, nodes, mode, down, propose, handover
                    )
                elif self._promised(index, epoch, now_ms, nodes):
                    active.add(index)
                    effects += self._reelect(now_ms, index, epoch, nodes[0], propose)
        for index in set(self._rounds) - active:
            del self._rounds[index]  # the leader came back, or the failover happened
        return effects

    def _promised(
        self, index: tuple[str, int], epoch: int, now_ms: int, nodes: tuple[str, ...]
    ) -> bool:
        """Whether some replica promised epoch + 1 (the partition has no usable leader)."""
        late = self._late_promises.get(index)
        if late is not None and late <= epoch:
            del self._late_promises[index]  # a failover reached that epoch since
            late = None
        round_ = self._rounds.get(index)
        if round_ is not None and round_.epoch == epoch and round_.promised:
            return True
        if late == epoch + 1:
            self._rounds[index] = _Round(epoch, nodes[1:], now_ms, now_ms)
            return True
        return False

    def _reelect(
        self, now_ms: int, index: tuple[str, int], epoch: int, leader: str, propose: Propose
    ) -> list[Effect]:
        """The leader is back but a follower promised the next epoch: lead that one."""
        round_ = self._rounds[index]
        if round_.proposed_ms is not None and now_ms - round_.proposed_ms < PROPOSAL_RETRY_MS:
            return []
        round_.proposed_ms = now_ms
        return self._propose(index, epoch, leader, propose)

    def _drive(
        self,
        now_ms: int,
        index: tuple[str, int],
        epoch: int,
        nodes: tuple[str, ...],
        mode: str,
        down: frozenset[str],
        propose: Propose,
        handover: bool,
    ) -> list[Effect]:
        round_ = self._rounds.get(index)
        if round_ is None or round_.epoch != epoch:
            round_ = self._rounds[index] = _Round(epoch, nodes[1:], now_ms, now_ms)
            # A handover asks the (live, leaving) leader too: it promises the new epoch
            # and stops renewing its followers' grants, so they can answer. A suspected
            # leader is not asked: if it is alive after all, its heartbeats keep the
            # grants going and the round stalls instead of deposing it.
            return self._ask(index, round_, nodes if handover else nodes[1:])
        if round_.proposed_ms is not None:
            if now_ms - round_.proposed_ms < PROPOSAL_RETRY_MS:
                return []
            round_.proposed_ms = None  # the proposal was lost or refused: choose again
        candidates = {n: p for n, p in round_.answers.items() if n not in down}
        enough = len(candidates) >= answers_needed(mode, len(nodes))
        if mode == "async":
            everyone = len(candidates) == len(round_.followers)
            enough = enough and (everyone or now_ms - round_.started_ms >= self.async_grace_ms)
        if not enough:
            if now_ms - round_.asked_ms < QUERY_RETRY_MS:
                return []
            round_.asked_ms = now_ms
            missing = tuple(n for n in round_.followers if n not in round_.answers)
            return self._ask(index, round_, missing)
        best = max(candidates.values())
        leader = next(n for n in round_.followers if candidates.get(n) == best)
        round_.proposed_ms = now_ms
        return self._propose(index, epoch, leader, propose)

    def _propose(
        self, index: tuple[str, int], epoch: int, leader: str, propose: Propose
    ) -> list[Effect]:
        self.failovers_proposed += 1
        keyspace, partition = index
        proposal = command(
            "fail_over",
            keyspace=keyspace,
            partition=partition,
            expected_epoch=epoch,
            leader=leader,
        )
        return propose(proposal)

    def _ask(self, index: tuple[str, int], round_: _Round, nodes: tuple[str, ...]) -> list[Effect]:
        keyspace, partition = index
        query = PositionQuery(keyspace, partition, round_.epoch + 1)
        return [Send(node_id, query) for node_id in nodes]

    def on_position_reply(self, source: str, reply: PositionReply) -> None:
        index = (reply.keyspace, reply.partition)
        round_ = self._rounds.get(index)
        if round_ is not None and reply.epoch == round_.epoch + 1 and source in round_.followers:
            round_.answers[source] = reply.last
        elif round_ is None:
            known = self._late_promises.get(index, 0)
            self._late_promises[index] = max(known, reply.epoch)
