"""The partition map as a client sees it: which node owns a key."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from quorumdb.core.partitioning import Layout, layout_from_dict


@dataclass(frozen=True, slots=True)
class NodeAddress:
    node_id: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class ClientMap:
    version: int
    nodes: dict[str, NodeAddress]
    layouts: dict[str, Layout]
    # Replicated keyspaces: keyspace -> partition -> its replicas, the leader first.
    replica_sets: dict[str, dict[int, tuple[str, ...]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, document: bytes | str) -> ClientMap:
        data = json.loads(document)
        nodes = {
            member["node_id"]: NodeAddress(member["node_id"], member["host"], member["resp_port"])
            for member in data["members"]
        }
        layouts = {
            name: layout_from_dict(keyspace["layout"])
            for name, keyspace in data["keyspaces"].items()
        }
        replica_sets = {
            name: {
                int(partition): tuple(entry["replicas"])
                for partition, entry in keyspace["replica_sets"].items()
            }
            for name, keyspace in data["keyspaces"].items()
            if "replica_sets" in keyspace
        }
        return cls(int(data["version"]), nodes, layouts, replica_sets)

    def replicas(self, keyspace: str, key: bytes) -> tuple[int, tuple[str, ...]]:
        """The key's partition and the nodes holding it, the leader first (the owner
        alone for unreplicated keyspaces)."""
        layout = self.layouts[keyspace]
        partition = layout.locate(key)
        nodes = self.replica_sets.get(keyspace, {}).get(partition)
        return partition, nodes or (layout.owner(partition),)

    def owner(self, keyspace: str, key: bytes) -> NodeAddress | None:
        """By the same layout code the nodes run, so client and server always agree."""
        layout = self.layouts.get(keyspace)
        if layout is None:
            return None
        return self.nodes.get(layout.owner(layout.locate(key)))


RANGE_PAGE_SIZE = 1_000


def range_command(
    start: bytes, end: bytes | None, page_size: int, token: bytes, keys_only: bool
) -> list[bytes | str | int]:
    """The QUORUMDB.RANGE arguments of one page (an empty end means no end)."""
    arguments: list[bytes | str | int] = ["QUORUMDB.RANGE", start, end or b"", "LIMIT", page_size]
    if token:
        arguments += ["AFTER", token]
    if keys_only:
        arguments.append("KEYSONLY")
    return arguments


def range_items(reply: list[object], keys_only: bool) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The next token (empty: finished) and the (key, value) pairs of one page."""
    token, flat = reply
    assert isinstance(token, bytes) and isinstance(flat, list)
    if keys_only:
        return token, [(key, b"") for key in flat]
    return token, list(zip(flat[::2], flat[1::2], strict=True))


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


Address = tuple[str, int]


class Router:
    """What both clients share: the seeds, the cached map, and the order to try nodes in.

    The key's owner first, then every other known node (any node forwards), then seeds
    the map does not list."""

    def __init__(self, seeds: list[str] | str, keyspace: str) -> None:
        listed = [seeds] if isinstance(seeds, str) else seeds
        self.seeds: list[Address] = [parse_address(seed) for seed in listed]
        self.keyspace = keyspace
        self.map: ClientMap | None = None

    def attempts(self, key: bytes | None) -> Attempts:
        return Attempts(self, key)

    def addresses(self) -> list[Address]:
        known = [(node.host, node.port) for node in self.map.nodes.values()] if self.map else []
        return known + [seed for seed in self.seeds if seed not in known]

    def candidates(self, key: bytes | None) -> list[Address]:
        owner = self.map.owner(self.keyspace, key) if key is not None and self.map else None
        first = [(owner.host, owner.port)] if owner else []
        return first + [address for address in self.addresses() if address not in first]

    def range_key(self, start: bytes, end: bytes | None) -> bytes | None:
        """A key to route a range page by: `start` when one partition holds the whole
        range (its owner then answers without forwarding), else None (any node)."""
        layout = self.map.layouts.get(self.keyspace) if self.map else None
        if layout is None or len(layout.partitions_for_range(start, end).partition_ids) != 1:
            return None
        return start

    def owner_of(self, key: bytes | str) -> str | None:
        owner = self.map.owner(self.keyspace, as_bytes(key)) if self.map else None
        return owner.node_id if owner else None

    def adopt(self, document: bytes | str) -> ClientMap:
        self.map = ClientMap.parse(document)
        return self.map


REDIRECTS_MAX = 3  # REDIRECT answers followed for one request before giving up


class Attempts:
    """The nodes to try for one request, in order, as answers change the plan.

    Both clients drive it the same way (one with blocking calls, one with awaits):
    `next()` gives the address to try and whether to ask it for redirects: yes for the
    owner by the map (a wrong map must be corrected, not papered over by forwarding),
    no for the fallbacks tried after it (those should forward, since the owner may
    be down). After a connection error or an error reply the
    client calls `failed`, which says whether to raise, go on, or refresh the map
    (from `refresh_from`, the node that answered REDIRECT and so has the newer map) and
    restart with the new owner first."""

    def __init__(self, router: Router, key: bytes | None) -> None:
        self.router = router
        self.key = key
        self.redirects = 0
        self.last_error: Exception | None = None
        self.refresh_from: Address | None = None
        self._queue = router.candidates(key)
        self._owner_known = router.owner_of(key) is not None if key is not None else False
        self._tried = 0

    def next(self) -> tuple[Address, bool] | None:
        if not self._queue:
            return None
        redirects = self._owner_known and self._tried == 0
        self._tried += 1
        return self._queue.pop(0), redirects

    def failed(self, address: Address, error: Exception, error_message: str | None) -> str:
        self.last_error = error
        if error_message is None:
            return "next"
        step = next_step(error_message)
        if step == "refresh":
            self.redirects += 1
            if self.redirects > REDIRECTS_MAX:
                return "give-up"
            self.refresh_from = address
        return step

    def restart(self) -> None:
        """After a refresh: the (new) owner first, then everyone else."""
        self._queue = self.router.candidates(self.key)
        self._tried = 0

    def refresh_order(self) -> list[Address]:
        first = [self.refresh_from] if self.refresh_from else []
        return first + [address for address in self.router.addresses() if address not in first]


def next_step(error_message: str) -> str:
    """What a client does with an error reply: `next` node, `refresh` the map and go on,
    or `raise` it (the request was answered, just not with success).

    UNAVAILABLE: that node could not reach the owner; another may (and if none can, the
    client reports a connection error). REDIRECT: the map is stale."""
    if error_message.startswith("UNAVAILABLE"):
        return "next"
    if error_message.startswith("REDIRECT"):
        return "refresh"
    return "raise"
