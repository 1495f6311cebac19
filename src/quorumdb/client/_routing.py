"""The partition map as a client sees it: which node owns a key."""

from __future__ import annotations

import json
from dataclasses import dataclass

from quorumdb.core.partitioning import partition_of


@dataclass(frozen=True, slots=True)
class NodeAddress:
    node_id: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class ClientMap:
    version: int
    nodes: dict[str, NodeAddress]
    partition_counts: dict[str, int]
    owners: dict[str, tuple[str, ...]]

    @classmethod
    def parse(cls, document: bytes | str) -> ClientMap:
        data = json.loads(document)
        nodes = {
            member["node_id"]: NodeAddress(member["node_id"], member["host"], member["resp_port"])
            for member in data["members"]
        }
        counts = {name: ks["partition_count"] for name, ks in data["keyspaces"].items()}
        owners = {name: tuple(ks["owners"]) for name, ks in data["keyspaces"].items()}
        return cls(int(data["version"]), nodes, counts, owners)

    def owner(self, keyspace: str, key: bytes) -> NodeAddress | None:
        count = self.partition_counts.get(keyspace)
        if count is None:
            return None
        return self.nodes.get(self.owners[keyspace][partition_of(key, count)])


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value
