"""This node's part in rebalancing: planning (on the controller leader), copying keys out
(as a source), copying keys in (as a target), and the seal that hands ownership over.

The controller's metadata says which plan is in force and which of its transfers are
done; every decision here is taken from it, so a node that restarts or misses messages
picks up where the metadata says. See docs/rebalancing.md for the protocol.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from quorumdb.core.cluster_metadata import (
    ClusterMetadata,
    KeyspaceRecord,
    PlanRecord,
    TransferRecord,
    command,
)
from quorumdb.core.effects import Effect, Persist, Send
from quorumdb.core.keyspace import KeyspaceConfig
from quorumdb.core.partitioning import Layout, layout_from_dict, plan_rebalance
from quorumdb.core.partitioning.interface import RandomSource
from quorumdb.core.partitioning.key_range_policy import PartitionLoad
from quorumdb.core.range_splits import split_merge_command
from quorumdb.core.transfer import (
    IncomingTransfer,
    OutgoingTransfer,
    TransferAbort,
    TransferAck,
    TransferData,
    TransferKey,
    TransferLimits,
    TransferMessage,
    TransferOpen,
)
from quorumdb.storage.interface import StorageReader, Write

PLAN_CHECK_INTERVAL_MS = 1_000
OPEN_RETRY_MS = 1_000
PROGRESS_REPORT_INTERVAL_MS = 1_000
CLEAR_BATCH_KEYS = 512
GARBAGE_BATCH_KEYS = 512
SIZE_SAMPLE_KEYS = 32
MARKER_KEYSPACE = "_rebalance"  # like the controller's "_raft": never a user keyspace

Propose = Callable[[bytes], list[Effect]]


PartitionSizes = dict[str, dict[int, int]]  # keyspace -> partition -> estimated bytes


def plan_command(
    metadata: ClusterMetadata, rng: RandomSource, sizes: PartitionSizes | None = None
) -> bytes | None:
    """A plan that places every keyspace for the active members, or None if they are."""
    weights = metadata.active_members()
    if not weights:
        return None
    target_layouts: dict[str, dict[str, object]] = {}
    based_on: dict[str, int] = {}
    transfers: list[dict[str, object]] = []
    for name, record in sorted(metadata.keyspaces.items()):
        if record.placed_for == weights or record.replica_sets:
            continue  # replica sets are not moved by partition copies (yet)
        layout = layout_from_dict(record.layout)
        strategy = KeyspaceConfig.from_dict(record.config).strategy()
        new_layout = strategy.rebalance(layout, weights, rng)
        target_layouts[name] = new_layout.to_dict()
        based_on[name] = record.layout_version
        known = (sizes or {}).get(name, {})
        for transfer in plan_rebalance(layout, new_layout, known).transfers:
            transfers.append({"keyspace": name, **transfer.to_dict()})
    if not target_layouts:
        return None
    reason = "members: " + ", ".join(f"{node}={weight}" for node, weight in weights.items())
    return command(
        "propose_plan",
        reason=reason,
        target_layouts=target_layouts,
        based_on=based_on,
        transfers=transfers,
        placed_for=weights,
    )


@dataclass(slots=True)
class _Incoming:
    transfer: TransferRecord
    session: IncomingTransfer
    moves: Callable[[bytes], bool]
    clear_from: bytes | None = b""  # leftovers of an earlier attempt are deleted first
    opened_at_ms: int = -OPEN_RETRY_MS
    last_data_ms: int = 0
    reported_at_ms: int = -PROGRESS_REPORT_INTERVAL_MS
    reported_done: bool = False


@dataclass(slots=True)
class _Outgoing:
    transfer: TransferRecord
    target_node: str
    session: OutgoingTransfer


@dataclass(frozen=True, slots=True)
class _RecalledSeal:
    """A seal an earlier life of this node made durable (see `_seal_marker`)."""

    keyspace: str
    source_partition: int
    target_partition: int
    new: Layout

    def covers(self, keyspace: str, partition: int, key: bytes) -> bool:
        return (
            keyspace == self.keyspace
            and partition == self.source_partition
            and self.new.locate(key) == self.target_partition
        )


@dataclass(slots=True)
class Rebalancer:
    node_id: str
    attempt: int  # this life of the node: a restarted end starts its transfers afresh
    storage: StorageReader
    limits: TransferLimits = field(default_factory=TransferLimits)
    incoming: dict[tuple[int, int], _Incoming] = field(default_factory=dict)
    outgoing: dict[tuple[int, int], _Outgoing] = field(default_factory=dict)
    # (keyspace, partition) -> a cursor of the sweep that deletes keys moved away
    garbage: dict[tuple[str, int], bytes] = field(default_factory=dict)
    _next_plan_check_ms: int = 0
    _layouts: dict[tuple[int, str], tuple[Layout, Layout]] = field(default_factory=dict)
    # (plan, transfer) -> a seal made by an earlier life, still in force: its target may
    # hold every moving key as of the seal and the switch may come, so this life must
    # not serve those keys either.
    recalled: dict[tuple[int, int], _RecalledSeal] = field(default_factory=dict)

    def recall_seals(self) -> None:
        """At start: the seals an earlier life made durable hold until released."""
        rows = self.storage.scan(MARKER_KEYSPACE, 0, b"sealed:", b"sealed;", 1 << 20)
        for _, value in rows:
            document = json.loads(value)
            self.recalled[(document["plan_id"], document["index"])] = _RecalledSeal(
                document["keyspace"],
                document["source_partition"],
                document["target_partition"],
                layout_from_dict(document["layout"]),
            )

    # --- what the node asks -------------------------------------------------------------

    def moving_out(self) -> set[tuple[str, int]]:
        """Partitions with keys being copied away: the fast paths must leave them alone,
        so every write to them passes `on_write`."""
        moving = {
            (item.transfer.keyspace, item.transfer.source_partition)
            for item in self.outgoing.values()
        }
        moving.update((seal.keyspace, seal.source_partition) for seal in self.recalled.values())
        return moving

    def sealed_for(self, keyspace: str, partition: int, key: bytes) -> bool:
        """Is this key handed over and not yet switched? Its requests must wait."""
        for item in self.outgoing.values():
            transfer = item.transfer
            if (
                item.session.seal_requested
                and transfer.keyspace == keyspace
                and transfer.source_partition == partition
                and item.session.moves(key)
            ):
                return True
        return any(seal.covers(keyspace, partition, key) for seal in self.recalled.values())

    def on_write(self, write: Write) -> None:
        for item in self.outgoing.values():
            transfer = item.transfer
            if transfer.keyspace == write.keyspace and transfer.source_partition == write.partition:
                item.session.on_write(write.key, write.value)

    # --- ticks --------------------------------------------------------------------------

    def on_tick(
        self,
        now_ms: int,
        metadata: ClusterMetadata,
        is_leader: bool,
        rng: RandomSource,
        propose: Propose,
        owns: Callable[[str, int, bytes], bool],
        sizes: Callable[[], PartitionSizes] | None = None,
        range_loads: Callable[[], dict[str, dict[int, PartitionLoad]]] | None = None,
    ) -> list[Effect]:
        effects: list[Effect] = []
        if is_leader and now_ms >= self._next_plan_check_ms:
            self._next_plan_check_ms = now_ms + PLAN_CHECK_INTERVAL_MS
            if metadata.plan is None or metadata.plan.state in ("done", "cancelled"):
                known = sizes() if sizes is not None else None
                proposal = plan_command(metadata, rng, known)
                if proposal is None and range_loads is not None:
                    proposal = split_merge_command(metadata, range_loads(), rng, known or {})
                proposal = proposal or _departure(metadata)
                if proposal is not None:
                    effects += propose(proposal)
        effects += self._forget_finished(metadata.plan)
        plan = metadata.plan_in_force()
        if plan is not None:
            effects += self._drive_targets(now_ms, plan, propose, metadata)
            effects += self._drive_sources(now_ms, plan, metadata)
        effects += self._collect_garbage(owns)
        return effects

    def _layouts_of(
        self, plan: PlanRecord, metadata: ClusterMetadata, keyspace: str
    ) -> tuple[Layout, Layout]:
        cached = self._layouts.get((plan.plan_id, keyspace))
        if cached is None:
            old = layout_from_dict(metadata.keyspaces[keyspace].layout)
            new = layout_from_dict(plan.target_layouts[keyspace])
            cached = self._layouts[(plan.plan_id, keyspace)] = (old, new)
        return cached

    def _forget_finished(self, plan: PlanRecord | None) -> list[Effect]:
        """Sessions end when their transfer is done or their plan is over; a source then
        deletes what it handed over (only for transfers that completed). A recalled seal
        ends the same way, or when the target opens a new attempt (so it did not
        complete: a target that did never reopens); its marker is deleted."""
        for index_key, item in list(self.outgoing.items()):
            state = _transfer_state(plan, index_key)
            if state == "done":
                transfer = item.transfer
                self.garbage[(transfer.keyspace, transfer.source_partition)] = b""
            if state in ("done", "over"):
                del self.outgoing[index_key]
        for index_key in list(self.incoming):
            if _transfer_state(plan, index_key) in ("done", "over"):
                del self.incoming[index_key]
        released = [
            index_key
            for index_key in self.recalled
            if index_key in self.outgoing or _transfer_state(plan, index_key) != "active"
        ]
        for index_key in released:
            del self.recalled[index_key]
        markers = tuple(Write(*_seal_marker(*index_key), None) for index_key in released)
        return [Persist(markers)] if markers else []

    def _drive_targets(
        self, now_ms: int, plan: PlanRecord, propose: Propose, metadata: ClusterMetadata
    ) -> list[Effect]:
        effects: list[Effect] = []
        for index, transfer in enumerate(plan.transfers):
            if transfer.target_node != self.node_id or transfer.state == "done":
                continue
            item = self.incoming.get((plan.plan_id, index))
            if item is None:
                key = TransferKey(plan.plan_id, index, self.attempt)
                session = IncomingTransfer(key, transfer.keyspace, transfer.target_partition)
                old, new = self._layouts_of(plan, metadata, transfer.keyspace)
                moves = _belongs_to(old, new, transfer.source_partition, transfer.target_partition)
                item = _Incoming(transfer, session, moves)
                if self.storage.get(*_completed_marker(plan.plan_id, index)) is not None:
                    # An earlier life applied the sealed message, and the switch may have
                    # committed since (this node's metadata can lag): the data is whole
                    # and may be the only copy, so never clear it; report done again.
                    session.complete = True
                    item.clear_from = None
                self.incoming[(plan.plan_id, index)] = item
            effects += self._drive_target(now_ms, plan, index, item, propose)
        return effects

    def _drive_target(
        self, now_ms: int, plan: PlanRecord, index: int, item: _Incoming, propose: Propose
    ) -> list[Effect]:
        transfer = item.transfer
        session = item.session
        if item.clear_from is not None:
            return self._clear_leftovers(item)
        if session.complete:
            # The source holds requests for the sealed keys until this report commits:
            # the first one goes at once, repeats (a lost proposal) once per interval.
            repeat = now_ms - item.reported_at_ms >= PROGRESS_REPORT_INTERVAL_MS
            if item.reported_done and not repeat:
                return []
            item.reported_done = True
            item.reported_at_ms = now_ms
            return propose(_progress(plan, index, "done", session.received_bytes))
        if plan.state == "paused":
            return []
        effects: list[Effect] = []
        silent = now_ms - max(item.last_data_ms, item.opened_at_ms) >= OPEN_RETRY_MS
        if session.applied_sequence == 0 and silent:
            item.opened_at_ms = now_ms
            message = TransferOpen(
                session.key, transfer.keyspace, transfer.source_partition, transfer.target_partition
            )
            effects.append(Send(transfer.source_node, message))
        elif now_ms - item.reported_at_ms >= PROGRESS_REPORT_INTERVAL_MS:
            item.reported_at_ms = now_ms
            effects += propose(_progress(plan, index, "copying", session.received_bytes))
        return effects

    def _clear_leftovers(self, item: _Incoming) -> list[Effect]:
        """Delete what an abandoned earlier attempt left in the target partition: keys of
        this transfer that the source may have deleted since would otherwise come back."""
        transfer = item.transfer
        assert item.clear_from is not None
        rows = self.storage.scan(
            transfer.keyspace,
            transfer.target_partition,
            item.clear_from,
            None,
            CLEAR_BATCH_KEYS + 1,
        )
        item.clear_from = rows[CLEAR_BATCH_KEYS][0] if len(rows) > CLEAR_BATCH_KEYS else None
        deletes = tuple(
            Write(transfer.keyspace, transfer.target_partition, key, None)
            for key, _ in rows[:CLEAR_BATCH_KEYS]
            if item.moves(key)
        )
        return [Persist(deletes)] if deletes else []

    def _drive_sources(
        self, now_ms: int, plan: PlanRecord, metadata: ClusterMetadata
    ) -> list[Effect]:
        effects: list[Effect] = []
        for (plan_id, index), item in self.outgoing.items():
            session = item.session
            session.paused = plan.state == "paused"
            session.throttle_bytes_per_second = metadata.throttle_bytes_per_second
            if session.caught_up and not session.seal_requested and not session.paused:
                session.seal()  # from now on the node holds requests for moving keys
                # Durable before the sealed message leaves (persist before send): a
                # later life of this node must keep holding them (`recall_seals`).
                transfer = item.transfer
                document = {
                    "plan_id": plan_id,
                    "index": index,
                    "keyspace": transfer.keyspace,
                    "source_partition": transfer.source_partition,
                    "target_partition": transfer.target_partition,
                    "layout": plan.target_layouts[transfer.keyspace],
                }
                value = json.dumps(document, sort_keys=True).encode()
                effects.append(Persist((Write(*_seal_marker(plan_id, index), value),)))
            for message in session.on_tick(now_ms, self.storage):
                effects.append(Send(item.target_node, message))
        return effects

    def _collect_garbage(self, owns: Callable[[str, int, bytes], bool]) -> list[Effect]:
        """Delete, a batch per tick, keys of a partition that this node no longer owns."""
        if not self.garbage:
            return []
        (keyspace, partition), start = next(iter(self.garbage.items()))
        rows = self.storage.scan(keyspace, partition, start, None, GARBAGE_BATCH_KEYS + 1)
        if len(rows) > GARBAGE_BATCH_KEYS:
            self.garbage[(keyspace, partition)] = rows[GARBAGE_BATCH_KEYS][0]
        else:
            del self.garbage[(keyspace, partition)]
        deletes = tuple(
            Write(keyspace, partition, key, None)
            for key, _ in rows[:GARBAGE_BATCH_KEYS]
            if not owns(keyspace, partition, key)
        )
        return [Persist(deletes)] if deletes else []

    # --- messages -----------------------------------------------------------------------

    def on_message(
        self, now_ms: int, source: str, message: TransferMessage, metadata: ClusterMetadata
    ) -> list[Effect]:
        plan = metadata.plan_in_force()
        key = message.key
        if plan is None or plan.plan_id != key.plan_id or key.transfer_index >= len(plan.transfers):
            return [Send(source, TransferAbort(key, "no such plan in force"))]
        transfer = plan.transfers[key.transfer_index]
        old, new = self._layouts_of(plan, metadata, transfer.keyspace)
        if isinstance(message, TransferOpen):
            return self._on_open(now_ms, source, message, plan, transfer, new, metadata)
        if isinstance(message, TransferAck):
            item = self.outgoing.get((key.plan_id, key.transfer_index))
            if item is not None and item.session.key == key:
                item.session.on_ack(message.sequence)
            return []
        if isinstance(message, TransferData):
            incoming = self.incoming.get((key.plan_id, key.transfer_index))
            if incoming is None or incoming.session.key != key or incoming.clear_from is not None:
                return []  # an old attempt's data, or not ready: the source retransmits
            incoming.last_data_ms = now_ms
            was_complete = incoming.session.complete
            writes, ack = incoming.session.on_data(message)
            if incoming.session.complete and not was_complete:
                marker = _completed_marker(key.plan_id, key.transfer_index)
                writes += (Write(*marker, b"1"),)  # durable with the last keys
            effects: list[Effect] = [Persist(writes)] if writes else []
            effects.append(Send(source, ack))  # after the writes: acknowledged = durable
            return effects
        return []  # an abort: the target opens a new attempt after its retry interval

    def _on_open(
        self,
        now_ms: int,
        source: str,
        message: TransferOpen,
        plan: PlanRecord,
        transfer: TransferRecord,
        new: Layout,
        metadata: ClusterMetadata,
    ) -> list[Effect]:
        key = message.key
        if transfer.source_node != self.node_id or transfer.target_node != source:
            return [Send(source, TransferAbort(key, "this node is not the transfer's source"))]
        existing = self.outgoing.get((key.plan_id, key.transfer_index))
        if existing is not None and existing.session.key == key:
            return []  # a repeated open of the attempt in progress
        target_partition = transfer.target_partition

        def moves(stored_key: bytes) -> bool:
            return new.locate(stored_key) == target_partition

        session = OutgoingTransfer(
            key,
            transfer.keyspace,
            transfer.source_partition,
            moves,
            metadata.throttle_bytes_per_second,
            self.limits,
            now_ms,
        )
        self.outgoing[(key.plan_id, key.transfer_index)] = _Outgoing(transfer, source, session)
        return []

    def status(self) -> dict[str, object]:
        return {
            "outgoing": [
                {
                    "keyspace": item.transfer.keyspace,
                    "partition": item.transfer.source_partition,
                    "to": item.target_node,
                    "copied_bytes": item.session.copied_bytes,
                    "sealed": item.session.seal_requested,
                }
                for item in self.outgoing.values()
            ],
            "incoming": [
                {
                    "keyspace": item.transfer.keyspace,
                    "partition": item.transfer.target_partition,
                    "from": item.transfer.source_node,
                    "received_bytes": item.session.received_bytes,
                    "complete": item.session.complete,
                }
                for item in self.incoming.values()
            ],
        }


def estimate_partition_bytes(storage: StorageReader, keyspace: str, partition: int) -> int:
    """Keys (from the engine's statistics) times the mean size of a sample of records:
    enough to size a transfer, without reading the partition."""
    count = storage.count(keyspace, partition)
    if count == 0:
        return 0
    sample = storage.scan(keyspace, partition, b"", None, SIZE_SAMPLE_KEYS)
    if not sample:
        return 0
    mean = sum(len(key) + len(record) for key, record in sample) / len(sample)
    return round(count * mean)


def _departure(metadata: ClusterMetadata) -> bytes | None:
    """A leaving member that no layout places anything on any more, and that holds no
    replica of a replicated keyspace, has left."""
    for node_id, member in sorted(metadata.members.items()):
        if member.state != "leaving":
            continue
        if all(_placed_elsewhere(node_id, record) for record in metadata.keyspaces.values()):
            return command("set_member_state", node_id=node_id, state="left")
    return None


def _placed_elsewhere(node_id: str, record: KeyspaceRecord) -> bool:
    if record.replica_sets:  # its layout is not rebalanced; its replica sets move
        return all(node_id not in nodes for nodes in record.replica_sets.values())
    return node_id not in record.placed_for


def _transfer_state(plan: PlanRecord | None, index_key: tuple[int, int]) -> str:
    """ "done" (the transfer switched), "over" (its plan ended otherwise), or "active"."""
    plan_id, index = index_key
    if plan is None or plan.plan_id != plan_id or index >= len(plan.transfers):
        return "over"
    if plan.transfers[index].state == "done":
        return "done"
    return "over" if plan.state in ("done", "cancelled") else "active"


def _completed_marker(plan_id: int, index: int) -> tuple[str, int, bytes]:
    """Where a target records, durably and with the sealed message's keys, that it holds
    every moving key of a transfer: (keyspace, partition, key) outside user keyspaces."""
    return MARKER_KEYSPACE, 0, b"complete:%d:%d" % (plan_id, index)


def _seal_marker(plan_id: int, index: int) -> tuple[str, int, bytes]:
    """Where a source records, before its sealed message leaves, that it sealed."""
    return MARKER_KEYSPACE, 0, b"sealed:%d:%d" % (plan_id, index)


def _belongs_to(
    old: Layout, new: Layout, source_partition: int, target_partition: int
) -> Callable[[bytes], bool]:
    def moves(stored_key: bytes) -> bool:
        return (
            old.locate(stored_key) == source_partition
            and new.locate(stored_key) == target_partition
        )

    return moves


def _progress(plan: PlanRecord, index: int, state: str, copied_bytes: int) -> bytes:
    return command(
        "transfer_progress",
        plan_id=plan.plan_id,
        transfer=index,
        state=state,
        copied_bytes=copied_bytes,
    )
