"""The partition replicas one node holds, kept in line with the cluster metadata, and
what the node asks of them: run a write or a read on a leader, route their messages,
tick them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from quorumdb.core.cluster import PartitionMap
from quorumdb.core.cluster_metadata import command
from quorumdb.core.effects import Effect, Persist, Send
from quorumdb.core.errors import ErrorCode
from quorumdb.core.messages import Get, Outcome, failure
from quorumdb.core.replication.log_format import log_keyspace
from quorumdb.core.replication.messages import (
    LeaderSuspicion,
    PositionQuery,
    PositionReply,
    ReplicaSnapshot,
    ReplicaSnapshotAck,
    Replicate,
    ReplicateReply,
    ReplicationMessage,
)
from quorumdb.core.replication.replica import (
    PartitionReplica,
    ReplicaSet,
    ReplicationLimits,
    StatementRunner,
    WriteResult,
)
from quorumdb.storage.interface import StorageReader, Write

Answer = Callable[[Outcome], list[Effect]]
SUSPICION_REPORT_MS = 250
RETIRE_BATCH_KEYS = 512
MOVE_REPORT_MS = 1_000
STEPPED_DOWN_REPORT_MS = 500  # how often a stepped-down leader tells the controller


class Replicas:
    def __init__(
        self,
        node_id: str,
        storage: StorageReader,
        limits: ReplicationLimits | None = None,
        run_statement: StatementRunner | None = None,
    ) -> None:
        self.node_id = node_id
        self.run_statement = run_statement
        self.storage = storage
        self.limits = limits or ReplicationLimits()
        self.by_partition: dict[tuple[str, int], PartitionReplica] = {}
        # The replicated keyspaces: set by the node with every map, before any replica
        # of theirs is configured.
        self.keyspaces: frozenset[str] = frozenset()
        self._reported_ms: dict[tuple[str, int], int] = {}  # last suspicion sent, per replica
        # Replicas moved off this node: (keyspace, partition) -> where the sweep that
        # deletes their records and log has got to.
        self.retiring: dict[tuple[str, int], tuple[str, bytes]] = {}
        self._map: PartitionMap | None = None  # the last one synced (re-run after a sweep)
        self._resync = False
        self._stepped_down_reported_ms: dict[tuple[str, int], int] = {}
        self._move_proposed_ms: dict[tuple[str, int], int] = {}

    def sync(self, now_ms: int, partition_map: PartitionMap) -> list[Effect]:
        """Create and configure a replica for every partition the metadata places here."""
        self._map = partition_map
        effects: list[Effect] = []
        placed: set[tuple[str, int]] = set()
        for name, placement in sorted(partition_map.keyspaces.items()):
            if not placement.config.replicated:
                continue
            for partition, (epoch, nodes) in sorted(placement.replica_sets.items()):
                removing, learner = placement.pending_moves.get(partition, (None, None))
                if self.node_id not in nodes and self.node_id != learner:
                    continue
                placed.add((name, partition))
                if (name, partition) in self.retiring:
                    continue  # placed here again: once the old copy is gone (`on_tick`)
                replica = self.by_partition.get((name, partition))
                if replica is None:
                    replica = PartitionReplica(
                        self.node_id, name, partition, self.storage, self.limits, self.run_statement
                    )
                    self.by_partition[(name, partition)] = replica
                replica_set = ReplicaSet(
                    epoch, nodes[0], nodes[1:], placement.config.sync, learner, removing
                )
                effects += replica.configure(now_ms, replica_set)
        for index in [index for index in self.by_partition if index not in placed]:
            if index in self.retiring:
                continue
            retired = self.by_partition.pop(index)
            effects += retired.configure(
                now_ms, ReplicaSet(retired.promised_epoch + 1, "", (), "async")
            )  # it no longer leads: waiting writes fail; nothing else reaches it
            self.retiring[index] = ("data", b"")
        return effects

    def _sweep_retired(self) -> list[Effect]:
        """Delete a batch of a retired replica's records, then of its log."""
        if not self.retiring:
            return []
        (keyspace, partition), (part, start) = next(iter(self.retiring.items()))
        name = keyspace if part == "data" else log_keyspace(keyspace)
        rows = self.storage.scan(name, partition, start, None, RETIRE_BATCH_KEYS + 1)
        writes = [Write(name, partition, key, None) for key, _ in rows[:RETIRE_BATCH_KEYS]]
        if len(rows) > RETIRE_BATCH_KEYS:
            self.retiring[(keyspace, partition)] = (part, rows[RETIRE_BATCH_KEYS][0])
        elif part == "data":
            self.retiring[(keyspace, partition)] = ("log", b"")
        else:
            del self.retiring[(keyspace, partition)]
            self._resync = True  # placed here again meanwhile? once these deletes are in
        return [Persist(tuple(writes))] if writes else []

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
        mode: str | None = None,
        statement: bytes | None = None,
    ) -> list[Effect]:
        """Answer `outcome` once its writes (none: a read) are replicated as `mode` (by
        default the keyspace's) asks; the answer says how many followers held them."""
        replica = self.by_partition.get((keyspace, partition))
        if replica is None or not replica.is_leader:
            return answer(self.not_leader(keyspace, partition))

        def complete(result: WriteResult) -> list[Effect]:
            return answer(_with_result(outcome, result, bool(writes)))

        if writes:
            return replica.append(now_ms, writes, complete, mode, statement)
        return replica.when_replicated(now_ms, complete)

    def read_here(self, now_ms: int, keyspace: str, partition: int, read: Get) -> str:
        """Where a read that is not linearizable may be served: "here" (this replica is
        fresh enough), "wait" (a session read this follower will soon be able to serve),
        or "leader" (no replica here, or too far behind)."""
        replica = self.by_partition.get((keyspace, partition))
        if replica is None or replica.replica_set is None:
            return "leader"
        if replica.is_leader or read.consistency == "eventual":
            return "here"
        if read.consistency == "session":
            wanted = read.min_position
            if wanted is None or tuple(replica.last) >= tuple(wanted):
                return "here"
            return "wait"
        staleness_ms = replica.staleness_ms(now_ms)
        limit_ms = read.max_lag_ms if read.max_lag_ms is not None else 0
        if staleness_ms is not None and staleness_ms <= limit_ms:
            return "here"
        return "leader"

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
        if isinstance(message, ReplicaSnapshot):
            return replica.on_snapshot(now_ms, source, message)
        if isinstance(message, ReplicaSnapshotAck):
            return replica.on_snapshot_ack(now_ms, source, message)
        return []

    def on_tick(
        self, now_ms: int, unavailable: frozenset[str], controller_leader: str | None
    ) -> list[Effect]:
        """Tick every replica; followers whose leader went silent tell the controller
        leader (again every `SUSPICION_REPORT_MS` while it lasts)."""
        effects: list[Effect] = []
        if self._resync and self._map is not None:
            self._resync = False
            effects += self.sync(now_ms, self._map)
        effects += self._sweep_retired()
        for index, replica in self.by_partition.items():
            replica.unavailable = unavailable
            effects += replica.on_tick(now_ms)
            if controller_leader is None or not replica.leader_silent(now_ms):
                continue
            if now_ms - self._reported_ms.get(index, -SUSPICION_REPORT_MS) < SUSPICION_REPORT_MS:
                continue
            self._reported_ms[index] = now_ms
            suspicion = LeaderSuspicion(index[0], index[1], replica.promised_epoch)
            effects.append(Send(controller_leader, suspicion))
        return effects

    def completed_moves(self, now_ms: int) -> list[bytes]:
        """`complete_move` proposals for moves whose learner has caught up on a partition
        this node leads (again every `MOVE_REPORT_MS` until the metadata shows it)."""
        proposals: list[bytes] = []
        for (keyspace, partition), replica in self.by_partition.items():
            replica_set = replica.replica_set
            if replica_set is None or not replica.learner_caught_up():
                continue
            proposed_ms = self._move_proposed_ms.get((keyspace, partition))
            if proposed_ms is not None and now_ms - proposed_ms < MOVE_REPORT_MS:
                continue
            self._move_proposed_ms[(keyspace, partition)] = now_ms
            proposals.append(
                command(
                    "complete_move",
                    keyspace=keyspace,
                    partition=partition,
                    expected_epoch=replica_set.epoch,
                    remove=replica_set.removing,
                    add=replica_set.learner,
                )
            )
        return proposals

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
            reported_ms = self._stepped_down_reported_ms.get(index)
            if reported_ms is not None and now_ms - reported_ms < STEPPED_DOWN_REPORT_MS:
                continue
            self._stepped_down_reported_ms[index] = now_ms
            keyspace, partition = index
            reports.append(PositionReply(keyspace, partition, replica.promised_epoch, replica.last))
        return reports

    def status(self, now_ms: int) -> list[dict[str, object]]:
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
                lag_ms = replica.follower_lag_ms(now_ms)
                row["followers"] = {
                    node_id: {
                        "match": match,
                        "lag": last.sequence - match,
                        "lag_ms": lag_ms[node_id],
                    }
                    for node_id, match in replica.follower_matches().items()
                }
            else:
                row["staleness_ms"] = replica.staleness_ms(now_ms)
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
