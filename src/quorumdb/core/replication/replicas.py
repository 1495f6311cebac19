"""The partition replicas one node holds, kept in line with the cluster metadata, and
what the node asks of them: run a write or a read on a leader, route their messages,
tick them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from quorumdb.core.cluster import PartitionMap
from quorumdb.core.effects import Effect
from quorumdb.core.errors import ErrorCode
from quorumdb.core.messages import Outcome, failure
from quorumdb.core.replication.messages import (
    PositionQuery,
    PositionReply,
    Replicate,
    ReplicateReply,
    ReplicationMessage,
)
from quorumdb.core.replication.replica import (
    PartitionReplica,
    ReplicaSet,
    ReplicationLimits,
    WriteResult,
)
from quorumdb.storage.interface import StorageReader, Write

Answer = Callable[[Outcome], list[Effect]]
STEPPED_DOWN_REPORT_MS = 500  # how often a stepped-down leader tells the controller


class Replicas:
    def __init__(
        self, node_id: str, storage: StorageReader, limits: ReplicationLimits | None = None
    ) -> None:
        self.node_id = node_id
        self.storage = storage
        self.limits = limits or ReplicationLimits()
        self.by_partition: dict[tuple[str, int], PartitionReplica] = {}
        self.keyspaces: frozenset[str] = frozenset()  # the replicated ones
        self._reported_ms: dict[tuple[str, int], int] = {}

    def sync(self, now_ms: int, partition_map: PartitionMap) -> list[Effect]:
        """Create and configure a replica for every partition the metadata places here."""
        effects: list[Effect] = []
        keyspaces: set[str] = set()
        for name, placement in sorted(partition_map.keyspaces.items()):
            if not placement.config.replicated:
                continue
            keyspaces.add(name)
            for partition, (epoch, nodes) in sorted(placement.replica_sets.items()):
                if self.node_id not in nodes:
                    continue
                replica = self.by_partition.get((name, partition))
                if replica is None:
                    replica = PartitionReplica(
                        self.node_id, name, partition, self.storage, self.limits
                    )
                    self.by_partition[(name, partition)] = replica
                replica_set = ReplicaSet(epoch, nodes[0], nodes[1:], placement.config.sync)
                effects += replica.configure(now_ms, replica_set)
        self.keyspaces = frozenset(keyspaces)
        return effects

    def replica(self, keyspace: str, partition: int) -> PartitionReplica | None:
        return self.by_partition.get((keyspace, partition))

    def run(
        self,
        now_ms: int,
        keyspace: str,
        partition: int,
        writes: Sequence[Write],
        outcome: Outcome,
        answer: Answer,
    ) -> list[Effect]:
        """Answer `outcome` once its writes (none: a read) are replicated as the
        keyspace's mode asks; the answer says how many followers held them."""
        replica = self.by_partition.get((keyspace, partition))
        if replica is None or not replica.is_leader:
            return answer(self.not_leader(keyspace, partition))

        def complete(result: WriteResult) -> list[Effect]:
            return answer(_with_result(outcome, result, bool(writes)))

        if writes:
            return replica.append(now_ms, writes, complete)
        return replica.when_replicated(now_ms, complete)

    def not_leader(self, keyspace: str, partition: int) -> Outcome:
        replica = self.by_partition.get((keyspace, partition))
        epoch = replica.promised_epoch if replica is not None else 0
        return failure(
            ErrorCode.MOVED,
            f"this node does not lead partition {partition} of '{keyspace}'"
            f" (epoch {epoch} here): a failover may be under way; retry",
        )

    def on_message(self, now_ms: int, source: str, message: ReplicationMessage) -> list[Effect]:
        replica = self.by_partition.get((message.keyspace, message.partition))
        if replica is None:
            return []  # not placed here (yet): the sender retries
        if isinstance(message, Replicate):
            return replica.on_replicate(now_ms, source, message)
        if isinstance(message, ReplicateReply):
            return replica.on_reply(now_ms, source, message)
        if isinstance(message, PositionQuery):
            return replica.on_position_query(now_ms, source, message)
        return []

    def on_tick(self, now_ms: int, unavailable: frozenset[str]) -> list[Effect]:
        effects: list[Effect] = []
        for replica in self.by_partition.values():
            replica.unavailable = unavailable
            effects += replica.on_tick(now_ms)
        return effects

    def stepped_down(self, now_ms: int) -> list[PositionReply]:
        """Partitions this node leads by the map but may not: a replica promised a newer
        epoch (a failover round asked, then stopped, or the controller leader changed),
        so only a new epoch brings a leader back. Said to the controller leader, as
        the answer a position query would get, every `STEPPED_DOWN_REPORT_MS`."""
        reports: list[PositionReply] = []
        for index, replica in self.by_partition.items():
            replica_set = replica.replica_set
            if replica_set is None or replica_set.leader != self.node_id:
                continue
            if replica.promised_epoch <= replica_set.epoch:
                continue
            reported_ms = self._reported_ms.get(index)
            if reported_ms is not None and now_ms - reported_ms < STEPPED_DOWN_REPORT_MS:
                continue
            self._reported_ms[index] = now_ms
            keyspace, partition = index
            reports.append(PositionReply(keyspace, partition, replica.promised_epoch, replica.last))
        return reports

    def status(self) -> list[dict[str, object]]:
        """Every replica here: role, epoch, log position, and each follower's lag."""
        rows: list[dict[str, object]] = []
        for (keyspace, partition), replica in sorted(self.by_partition.items()):
            last = replica.last
            row: dict[str, object] = {
                "keyspace": keyspace,
                "partition": partition,
                "role": "leader" if replica.is_leader else "follower",
                "epoch": replica.promised_epoch,
                "last": [last.epoch, last.sequence],
                "lost": replica.lost_count,
            }
            if replica.is_leader:
                row["followers"] = {
                    node_id: {"match": match, "lag": last.sequence - match}
                    for node_id, match in replica.follower_matches().items()
                }
            rows.append(row)
        return rows


def _with_result(outcome: Outcome, result: WriteResult, wrote: bool) -> Outcome:
    position = (result.position.epoch, result.position.sequence)
    if result.error is not None:
        # A write is on the leader and may survive (or be undone by a failover): its
        # outcome is unknown. A read changed nothing: the node could not serve it.
        code = ErrorCode.TIMEOUT if wrote else ErrorCode.UNAVAILABLE
        return Outcome(None, code, result.error, result.follower_acks, position)
    return replace(outcome, acks=result.follower_acks, position=position)
