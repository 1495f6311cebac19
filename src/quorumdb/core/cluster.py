"""Static cluster membership and the partition map derived from it.

Issue 3 replaces the static member list with a Raft-replicated one; the map's
`version` is what requests carry so an owner can tell when routing was stale.
"""

from __future__ import annotations

from dataclasses import dataclass

from quorumdb.core.keyspace import KeyspaceConfig
from quorumdb.core.partitioning import FixedPartitions


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


@dataclass(frozen=True, slots=True)
class KeyspacePlacement:
    config: KeyspaceConfig
    strategy: FixedPartitions
    owners: tuple[str, ...]

    def owner_of_key(self, key: bytes) -> tuple[int, str]:
        partition = self.strategy.locate(key)
        return partition, self.owners[partition]


@dataclass(frozen=True, slots=True)
class PartitionMap:
    version: int
    members: tuple[Member, ...]
    keyspaces: dict[str, KeyspacePlacement]

    @classmethod
    def build(
        cls, version: int, members: tuple[Member, ...], configs: tuple[KeyspaceConfig, ...]
    ) -> PartitionMap:
        member_ids = tuple(member.node_id for member in members)
        placements: dict[str, KeyspacePlacement] = {}
        for config in configs:
            strategy = FixedPartitions(config.partition_count)
            placements[config.name] = KeyspacePlacement(
                config, strategy, strategy.assign(member_ids)
            )
        return cls(version, members, placements)

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
                name: {**placement.config.to_dict(), "owners": list(placement.owners)}
                for name, placement in sorted(self.keyspaces.items())
            },
        }
