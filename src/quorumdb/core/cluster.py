"""Cluster membership and the partition map derived from it.

Issue 3 moves the member list and the layouts into the Raft-replicated metadata; the
map's `version` is what requests carry so an owner can tell when routing was stale.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableSequence
from dataclasses import dataclass, field
from typing import Any

from quorumdb.core.cluster_metadata import ClusterMetadata, KeyspaceRecord, MemberRecord
from quorumdb.core.keyspace import DEFAULT_KEYSPACE, KeyspaceConfig
from quorumdb.core.partitioning import Layout, layout_from_dict
from quorumdb.core.partitioning.leaders import LeaderLayout
from quorumdb.core.partitioning.transition import TransitionLayout


@dataclass(frozen=True, slots=True)
class Member:
    node_id: str
    host: str
    peer_port: int
    resp_port: int
    http_port: int

    def to_dict(self) -> dict[str, object]:
        return {
            "node_id": self.node_id,
            "host": self.host,
            "peer_port": self.peer_port,
            "resp_port": self.resp_port,
            "http_port": self.http_port,
        }


def local_members(count: int, base_port: int, host: str = "127.0.0.1") -> tuple[Member, ...]:
    """The layout of `quorumdb up`: node i serves RESP on base+i, HTTP on base+100+i."""
    if count < 1:
        raise ValueError("a cluster needs at least one node")
    return tuple(
        Member(
            node_id=f"node{index}",
            host=host,
            resp_port=base_port + index,
            http_port=base_port + 100 + index,
            peer_port=base_port + 200 + index,
        )
        for index in range(count)
    )


class _NoRandomness:
    """Initial layouts are deterministic, so every node computes the same one alone."""

    def random(self) -> float:
        raise AssertionError("an initial layout must not draw random numbers")

    def shuffle(self, x: MutableSequence[Any]) -> None:
        raise AssertionError("an initial layout must not draw random numbers")


@dataclass(frozen=True, slots=True)
class KeyspacePlacement:
    config: KeyspaceConfig
    layout: Layout
    # Single-leader keyspaces: partition -> (epoch, replicas with the leader first).
    replica_sets: Mapping[int, tuple[int, tuple[str, ...]]] = field(default_factory=dict)
    # Moves under way: partition -> (the follower being replaced, the learner).
    pending_moves: Mapping[int, tuple[str, str]] = field(default_factory=dict)
    partition_ids: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "partition_ids", tuple(sorted(self.layout.partition_ids)))

    def owner_of_key(self, key: bytes) -> tuple[int, str]:
        partition = self.layout.locate(key)
        return partition, self.layout.owner(partition)

    def owner(self, partition: int) -> str:
        return self.layout.owner(partition)

    def local_partitions(self, node_id: str) -> frozenset[int]:
        return frozenset(p for p in self.partition_ids if self.layout.owner(p) == node_id)

    def to_dict(self) -> dict[str, object]:
        document: dict[str, object] = {
            **self.config.to_dict(),
            "partition_count": len(self.partition_ids),
            "layout": self.layout.to_dict(),
        }
        if self.replica_sets:
            document["replica_sets"] = {
                str(partition): {"epoch": epoch, "replicas": list(nodes)}
                for partition, (epoch, nodes) in sorted(self.replica_sets.items())
            }
        return document


@dataclass(frozen=True, slots=True)
class PartitionMap:
    version: int
    members: tuple[Member, ...]
    keyspaces: dict[str, KeyspacePlacement]

    @classmethod
    def build(
        cls, version: int, members: tuple[Member, ...], configs: tuple[KeyspaceConfig, ...]
    ) -> PartitionMap:
        """Every keyspace in its strategy's initial layout over the members (weight 1)."""
        weights = {member.node_id: 1 for member in members}
        placements: dict[str, KeyspacePlacement] = {}
        for config in configs:
            layout = config.strategy().initial_layout(weights, _NoRandomness())
            placements[config.name] = KeyspacePlacement(config, layout)
        return cls(version, members, placements)

    @classmethod
    def from_metadata(cls, metadata: ClusterMetadata) -> PartitionMap:
        """The routing view of the controller's metadata (members that have not left)."""
        members = tuple(
            Member(
                record.node_id, record.host, record.peer_port, record.resp_port, record.http_port
            )
            for _, record in sorted(metadata.members.items())
            if record.state != "left"
        )
        plan = metadata.plan_in_force()
        placements: dict[str, KeyspacePlacement] = {}
        for name, record in metadata.keyspaces.items():
            layout = layout_from_dict(record.layout)
            if plan is not None and name in plan.target_layouts:
                done = frozenset(
                    (transfer.source_partition, transfer.target_partition)
                    for transfer in plan.transfers
                    if transfer.keyspace == name and transfer.state == "done"
                )
                layout = TransitionLayout(layout, layout_from_dict(plan.target_layouts[name]), done)
            replica_sets = {
                int(partition): (record.epochs.get(partition, 1), tuple(nodes))
                for partition, nodes in record.replica_sets.items()
            }
            if replica_sets:
                leaders = {partition: nodes[0] for partition, (_, nodes) in replica_sets.items()}
                layout = LeaderLayout(layout, leaders)
            config = KeyspaceConfig.from_dict(record.config)
            moves = {
                int(partition): (move["remove"], move["add"])
                for partition, move in record.pending_moves.items()
            }
            placements[name] = KeyspacePlacement(config, layout, replica_sets, moves)
        return cls(metadata.version, members, placements)

    def member(self, node_id: str) -> Member:
        for member in self.members:
            if member.node_id == node_id:
                return member
        raise KeyError(node_id)

    def to_dict(self) -> dict[str, object]:
        return {
            "version": self.version,
            "members": [member.to_dict() for member in self.members],
            "keyspaces": {
                name: placement.to_dict() for name, placement in sorted(self.keyspaces.items())
            },
        }


def placement_from_dict(data: dict[str, Any]) -> tuple[KeyspaceConfig, Layout]:
    """What a client needs of one keyspace in `PartitionMap.to_dict()`."""
    return KeyspaceConfig.from_dict(data), layout_from_dict(data["layout"])


def founding_metadata(members: tuple[Member, ...]) -> ClusterMetadata:
    """What every founding node holds before the controller's first log entry: the
    members and the `default` keyspace. Deterministic, so all founders agree on it."""
    records = [
        MemberRecord(
            member.node_id, member.host, member.peer_port, member.resp_port, member.http_port
        )
        for member in members
    ]
    config = KeyspaceConfig(DEFAULT_KEYSPACE).canonical()
    weights = {member.node_id: 1 for member in members}
    layout = config.strategy().initial_layout(weights, _NoRandomness())
    default = KeyspaceRecord(
        config.to_dict(),
        layout.to_dict(),
        1,
        {str(partition): 1 for partition in layout.partition_ids},
        {},
        weights,
    )
    metadata = ClusterMetadata(version=1)
    metadata.members = {record.node_id: record for record in records}
    metadata.keyspaces = {DEFAULT_KEYSPACE: default}
    return metadata
